#!/usr/bin/env bash
# Latency of commands through the daemon against in-process, on the same
# store in one run: `dot list` and `dot log` (each run N times, medians), and
# 100 small commits in a row. In-process, every command opens the store
# (RocksDB) itself; through the daemon it is already open.
#
# The store holds a PostgreSQL data directory (pgbench -i -s SCALE) as one
# dot, committed, plus a small dot that the commits change.
#
# Environment: SCALE=10 N=30 COMMITS=100 DOT=target/release/dot
#   PGBIN=/usr/lib/postgresql/15/bin PGPORT=54332 WORKDIR
# Must run as root (PostgreSQL runs as postgres through runuser).
# Raw results: benches/results/daemon-<date>.txt.

set -euo pipefail
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SCALE=${SCALE:-10}
N=${N:-30}
COMMITS=${COMMITS:-100}
DOT=${DOT:-$REPO_ROOT/target/release/dot}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PGPORT=${PGPORT:-54332}
die() { echo "daemon.sh: $*" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || die "run as root"
case $DOT in /*) ;; *) DOT=$PWD/$DOT ;; esac
[[ -x $DOT ]] || die "no dot binary at $DOT (cargo build --release)"

WORKDIR=${WORKDIR:-$(mktemp -d /var/tmp/dot-daemon.XXXXXX)}
chmod 755 "$WORKDIR"
export DOT_HOME=$WORKDIR/home
cleanup() {
    set +e
    "$DOT" daemon stop --force >/dev/null 2>&1
    rm -rf "$WORKDIR"
}
trap cleanup EXIT

# A data directory to keep under dot.
PGDATA=$WORKDIR/pg SOCK=$WORKDIR/sock
mkdir -p "$PGDATA" "$SOCK" && chown postgres "$PGDATA" "$SOCK"
as_pg() { (cd "$WORKDIR" && runuser -u postgres -- "$@"); }
as_pg "$PGBIN/initdb" -D "$PGDATA" >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -o "-p $PGPORT -k $SOCK" -w start >/dev/null
as_pg "$PGBIN/pgbench" -h "$SOCK" -p "$PGPORT" -i -s "$SCALE" postgres >/dev/null 2>&1
as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -w stop >/dev/null

"$DOT" init pg --path "$PGDATA" >/dev/null
"$DOT" commit -m "pgbench -s $SCALE" pg >/dev/null
"$DOT" init small >/dev/null
echo 0 >"$("$DOT" path small)/counter"
"$DOT" commit -m first small >/dev/null

now() { date +%s%N; }
# median_ms CMD...: the median wall time of N runs, in milliseconds.
median_ms() {
    local i s e times=()
    for i in $(seq 1 "$N"); do
        s=$(now); "$@" >/dev/null; e=$(now)
        times+=($(( (e - s) / 1000 )))
    done
    printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {printf "%.2f", a[int((NR+1)/2)]/1000}'
}
# commits_s: seconds for COMMITS commits of the small dot, each after a change.
commits_s() {
    local i s e dir
    dir=$("$DOT" path small)
    s=$(now)
    for i in $(seq 1 "$COMMITS"); do
        echo "$i" >"$dir/counter"
        "$DOT" commit -m "c$i" small >/dev/null
    done
    e=$(now)
    awk -v a="$s" -v b="$e" 'BEGIN { printf "%.2f", (b - a) / 1e9 }'
}

list_in=$(median_ms "$DOT" list)
log_in=$(median_ms "$DOT" log pg)
commits_in=$(commits_s)
"$DOT" daemon start >/dev/null
list_d=$(median_ms "$DOT" list)
log_d=$(median_ms "$DOT" log pg)
commits_d=$(commits_s)
"$DOT" daemon stop >/dev/null

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
mkdir -p "$REPO_ROOT/benches/results"
OUT=$REPO_ROOT/benches/results/daemon-$(date +%Y-%m-%d-%H%M%S).txt
{
    echo "# dot daemon latency, $(date -Is), $(nproc) cores, $(uname -r)"
    echo "# SCALE=$SCALE N=$N COMMITS=$COMMITS; medians of N runs (ms), totals (s)"
    printf 'figure\tin-process\tdaemon\tratio\n'
    printf 'dot list (ms)\t%s\t%s\t%s\n' "$list_in" "$list_d" "$(ratio "$list_d" "$list_in")"
    printf 'dot log (ms)\t%s\t%s\t%s\n' "$log_in" "$log_d" "$(ratio "$log_d" "$log_in")"
    printf '%s commits (s)\t%s\t%s\t%s\n' "$COMMITS" "$commits_in" "$commits_d" "$(ratio "$commits_d" "$commits_in")"
} | tee "$OUT"
