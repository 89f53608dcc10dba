#!/usr/bin/env bash
# Push, second push and clone of a PostgreSQL data directory through a local
# S3 server (moto), side by side with rclone moving the raw directory to and
# from the same server (`rclone sync` up, `rclone copy` down).
#
# Flow, repeated RUNS times on a fresh cluster and a fresh S3 server:
#   initdb; pgbench -i -s SCALE; stop PostgreSQL            -> state A
#   dot commit; dot push (timed)  |  rclone sync DIR s3:rclone/data (timed)
#   start; pgbench -c 1 -t TRANSACTIONS; stop                -> state B
#   dot commit (bytes it adds to the local packs measured)
#   dot push (timed, bytes uploaded measured on the server)
#                                 |  rclone sync again (timed: changed files, deletions)
#   dot clone into a new DOT_HOME (timed) | rclone copy s3:rclone/data DIR (timed)
#   the clone is compared with the data directory (diff -r); a mismatch fails.
# The order of dot and rclone alternates from run to run. Before each timed
# step, data and stores are synced and read once (same warm cache for both).
#
# Environment: SCALE=50 TRANSACTIONS=500 RUNS=3 DOT=target/release/dot
#   PGBIN=/usr/lib/postgresql/15/bin PGPORT=54331 S3PORT=59000 WORKDIR
# Must run as root (PostgreSQL runs as postgres through runuser).
# Raw results: benches/results/push-<date>.txt.

set -euo pipefail
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SCALE=${SCALE:-50}
TRANSACTIONS=${TRANSACTIONS:-500}
RUNS=${RUNS:-3}
DOT=${DOT:-$REPO_ROOT/target/release/dot}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PGPORT=${PGPORT:-54331}
S3PORT=${S3PORT:-59000}
die() { echo "push.sh: $*" >&2; exit 1; }
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

[[ $(id -u) -eq 0 ]] || die "run as root"
case $DOT in /*) ;; *) DOT=$PWD/$DOT ;; esac
[[ -x $DOT ]] || die "no dot binary at $DOT (cargo build --release)"
for b in rclone python3 runuser; do command -v $b >/dev/null || die "$b is not installed (scripts/deps.sh)"; done
python3 -c "import moto.server, boto3" 2>/dev/null || die "moto is not installed (scripts/deps.sh)"

WORKDIR=${WORKDIR:-$(mktemp -d /var/tmp/dot-push.XXXXXX)}
chmod 755 "$WORKDIR"
RESULTS=$WORKDIR/results.tsv
: >"$RESULTS"
MOTO_PID= PG_RUNNING=0 PGDATA=
cleanup() {
    set +e
    [[ $PG_RUNNING == 1 ]] && as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m immediate -w stop >/dev/null 2>&1
    [[ -n $MOTO_PID ]] && kill "$MOTO_PID" 2>/dev/null
    rm -rf "$WORKDIR"
}
trap cleanup EXIT

export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1
export RCLONE_CONFIG_S3_TYPE=s3 RCLONE_CONFIG_S3_PROVIDER=Other \
    RCLONE_CONFIG_S3_ENDPOINT=http://127.0.0.1:$S3PORT \
    RCLONE_CONFIG_S3_ACCESS_KEY_ID=bench RCLONE_CONFIG_S3_SECRET_ACCESS_KEY=bench \
    RCLONE_CONFIG_S3_REGION=us-east-1
ENDPOINT=http://127.0.0.1:$S3PORT
# rclone 1.60's S3 client fails on a custom CA bundle; the server is plain HTTP.
unset AWS_CA_BUNDLE

as_pg() { (cd "$WORKDIR" && runuser -u postgres -- "$@"); }
record() { printf '%s\t%s\t%s\n' "$RUN" "$1" "$2" >>"$RESULTS"; }
timed() { # timed NAME CMD...
    local name=$1 t0 t1; shift
    sync
    t0=$(date +%s%N)
    "$@" >"$WORKDIR/$name.log" 2>&1 || { tail -n 30 "$WORKDIR/$name.log" >&2; die "$name failed in run $RUN"; }
    t1=$(date +%s%N)
    record "$name" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')"
}
warm() { sync; find "$@" -type f -exec cat {} + >/dev/null 2>&1 || true; }
bucket_bytes() { # bucket_bytes BUCKET: total size of its objects
    python3 -c "
import sys, boto3
s3 = boto3.client('s3', endpoint_url='$ENDPOINT')
total = 0
for page in s3.get_paginator('list_objects_v2').paginate(Bucket='$1'):
    total += sum(o['Size'] for o in page.get('Contents', []))
print(total)"
}
packs_bytes() { du -sb "$1/packs" | cut -f1; }

for RUN in $(seq 1 "$RUNS"); do
    R=$WORKDIR/run$RUN
    mkdir -p "$R" && chmod 755 "$R" && chown postgres "$R"
    log "run $RUN: S3 server, cluster, pgbench -i -s $SCALE"
    python3 -m moto.server -H 127.0.0.1 -p "$S3PORT" >"$R/moto.log" 2>&1 &
    MOTO_PID=$!
    for _ in $(seq 100); do python3 -c "import socket; socket.create_connection(('127.0.0.1', $S3PORT))" 2>/dev/null && break; sleep 0.2; done
    python3 -c "
import boto3
s3 = boto3.client('s3', endpoint_url='$ENDPOINT')
s3.create_bucket(Bucket='dot'); s3.create_bucket(Bucket='rclone')"
    PGDATA=$R/pgdata
    mkdir -p "$PGDATA" && chown postgres "$PGDATA" && chmod 700 "$PGDATA"
    as_pg "$PGBIN/initdb" -D "$PGDATA" >"$R/initdb.log" 2>&1
    pg_start() { as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$R/pg.log" -w -o "-p $PGPORT -k $R -c listen_addresses=''" start >/dev/null; PG_RUNNING=1; }
    pg_stop() { as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null; PG_RUNNING=0; }
    pg_start
    as_pg "$PGBIN/pgbench" -h "$R" -p "$PGPORT" -i -s "$SCALE" postgres >"$R/pgbench-i.log" 2>&1
    pg_stop
    record data_bytes "$(du -sb "$PGDATA" | cut -f1)"

    export DOT_HOME=$R/dothome
    "$DOT" --quiet init pg --path "$PGDATA" >/dev/null
    "$DOT" --quiet commit -m A >/dev/null
    "$DOT" remote add hub s3://dot/team --endpoint "$ENDPOINT"

    if (( RUN % 2 )); then order="dot rclone"; else order="rclone dot"; fi
    for tool in $order; do
        warm "$PGDATA" "$DOT_HOME"
        case $tool in
            dot) timed dot_push1 "$DOT" --quiet push hub pg
                 record dot_push1_uploaded_bytes "$(bucket_bytes dot)" ;;
            rclone) timed rclone_push1 rclone sync "$PGDATA" s3:rclone/data --links
                 record rclone_push1_uploaded_bytes "$(bucket_bytes rclone)" ;;
        esac
    done

    pg_start
    as_pg "$PGBIN/pgbench" -h "$R" -p "$PGPORT" -c 1 -t "$TRANSACTIONS" postgres >"$R/pgbench-t.log" 2>&1
    pg_stop
    before=$(packs_bytes "$DOT_HOME")
    "$DOT" --quiet commit -m B >/dev/null
    record dot_commit2_added_bytes $(( $(packs_bytes "$DOT_HOME") - before ))
    for tool in $order; do
        warm "$PGDATA" "$DOT_HOME"
        case $tool in
            dot)
                up=$(bucket_bytes dot)
                timed dot_push2 "$DOT" --quiet push
                record dot_push2_uploaded_bytes $(( $(bucket_bytes dot) - up ))
                ;;
            rclone) timed rclone_push2 rclone sync "$PGDATA" s3:rclone/data --links ;;
        esac
    done

    for tool in $order; do
        sync
        case $tool in
            dot) DOT_HOME=$R/clonehome timed dot_clone bash -c "'$DOT' remote add hub s3://dot/team --endpoint '$ENDPOINT' && '$DOT' --quiet clone hub pg" ;;
            rclone) timed rclone_clone rclone copy s3:rclone/data "$R/rclone-restore" --links ;;
        esac
    done
    clone_dir=$(DOT_HOME=$R/clonehome "$DOT" path pg)
    diff -r --no-dereference "$PGDATA" "$clone_dir" >/dev/null || die "run $RUN: the clone differs from the data directory"
    # rclone keeps no empty directories on S3: compare its copy file by file.
    files() { (cd "$1" && find . -type f -print0 | sort -z | xargs -0 sha1sum); }
    if [[ $(files "$PGDATA") != "$(files "$R/rclone-restore")" ]]; then
        diff <(files "$PGDATA") <(files "$R/rclone-restore") | head >&2
        die "run $RUN: rclone's copy differs from the data directory"
    fi
    kill "$MOTO_PID"; wait "$MOTO_PID" 2>/dev/null || true; MOTO_PID=
    rm -rf "$R"
done

mkdir -p "$REPO_ROOT/benches/results"
OUT=$REPO_ROOT/benches/results/push-$(date +%Y-%m-%d-%H%M%S).txt
{
    echo "# benches/push.sh $(date -u +%FT%TZ) on $(uname -n), $(nproc) cores; SCALE=$SCALE TRANSACTIONS=$TRANSACTIONS RUNS=$RUNS"
    echo "# dot $("$DOT" --version) ($(git -C "$REPO_ROOT" rev-parse --short HEAD)); $(rclone --version | head -1); moto $(python3 -c 'import moto; print(moto.__version__)')"
    cat "$RESULTS"
} >"$OUT"
python3 - "$RESULTS" <<'EOF' | tee -a "$OUT"
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
runs = sorted({r[0] for r in rows})
v = {(r[0], r[1]): float(r[2]) for r in rows}
med = lambda k: statistics.median(v[(run, k)] for run in runs)
def ratio(a, b): return statistics.median(v[(run, a)] / v[(run, b)] for run in runs)
print(f"\nmedians of {len(runs)} runs")
print(f"data directory            {med('data_bytes') / 2**20:10.1f} MiB")
for step in ["push1", "push2", "clone"]:
    print(f"{step:8} dot {med('dot_' + step):8.2f} s   rclone {med('rclone_' + step):8.2f} s   ratio {ratio('dot_' + step, 'rclone_' + step):.3f}")
print(f"first push uploaded: dot {med('dot_push1_uploaded_bytes') / 2**20:.1f} MiB (zstd), rclone {med('rclone_push1_uploaded_bytes') / 2**20:.1f} MiB")
added, up = med("dot_commit2_added_bytes"), med("dot_push2_uploaded_bytes")
print(f"second commit added {added / 2**20:.2f} MiB locally; second push uploaded {up / 2**20:.2f} MiB; "
      f"ratio {ratio('dot_push2_uploaded_bytes', 'dot_commit2_added_bytes'):.3f}")
print("targets: push1 <= 1x, push2 <= 0.1x, clone <= 1x rclone; uploaded <= 1.1x added + small fixed")
EOF
