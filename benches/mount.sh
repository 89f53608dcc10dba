#!/usr/bin/env bash
# pgbench TPS (-c 4 -j 2) on a mounted dot against the same on a native
# directory of the same disk and on the FUSE peers (bindfs, a passthrough;
# fuse-overlayfs, an overlay), side by side in one run, plus the pauses
# of live commits taken while pgbench runs on the mount and the reset and
# checkout times. Runs are interleaved; medians are reported.
#
#   SCALE=50 RUNS=3 T=30 benches/mount.sh    (as root; Debian's postgresql,
#                                             bindfs and fuse-overlayfs)
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE=${SCALE:-50}; RUNS=${RUNS:-3}; T=${T:-30}
DOT=${DOT:-$PWD/target/release/dot}
[ "$(id -u)" -eq 0 ] || { echo "benches/mount.sh: run as root" >&2; exit 1; }
[ -x "$DOT" ] || cargo build --release
BIN=$(ls -d /usr/lib/postgresql/*/bin | sort | tail -1)
W=$(mktemp -d /var/tmp/dot-mount-bench-XXXXXX); chmod 1777 "$W"
export DOT_HOME=$W/home DOT_DOCKER_PLUGIN=off
run() { runuser -u postgres -- "$@"; }
cleanup() {
  for c in native dot bindfs overlayfs; do run "$BIN/pg_ctl" -D "$(dir_of $c)" -m immediate stop >/dev/null 2>&1 || true; done
  for m in "$W/bindfs" "$W/ofs"; do umount -l "$m" 2>/dev/null || true; done
  "$DOT" daemon stop --force >/dev/null 2>&1 || true
  umount -l "$DOT_HOME/work/pg/__default__" 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
port_of() { case $1 in native) echo 25440;; dot) echo 25441;; bindfs) echo 25442;; overlayfs) echo 25443;; esac; }

# One PostgreSQL data directory per contender, all loaded the same way.
mkdir -p "$W/native" "$W/bindfs-src" "$W/bindfs" "$W/ofs-lower" "$W/ofs-upper" "$W/ofs-work" "$W/ofs"
"$DOT" init pg --mount >/dev/null 2>&1
chmod 755 "$DOT_HOME" "$DOT_HOME/work" "$DOT_HOME/work/pg"
bindfs "$W/bindfs-src" "$W/bindfs"
fuse-overlayfs -o "lowerdir=$W/ofs-lower,upperdir=$W/ofs-upper,workdir=$W/ofs-work" "$W/ofs"
dir_of() { case $1 in native) echo "$W/native";; dot) "$DOT" path pg;; bindfs) echo "$W/bindfs";; overlayfs) echo "$W/ofs";; esac; }
for c in native dot bindfs overlayfs; do
  d=$(dir_of $c); chown postgres:postgres "$d"; chmod 700 "$d"
  run "$BIN/initdb" -D "$d" -U postgres --auth=trust >/dev/null
done
# A failure says what failed, with the server's log (the run is gone after).
failed() { echo "benches/mount.sh: $1 failed (exit $2):" >&2; tail -5 "$W/err" >&2; echo "server log:" >&2; tail -20 "$W/log-$3" >&2; exit 1; }
start() { run "$BIN/pg_ctl" -D "$(dir_of $1)" -o "-p $(port_of $1) -k $W -c listen_addresses=''" -l "$W/log-$1" -w start >/dev/null 2>"$W/err" || failed "starting PostgreSQL on $1" $? "$1"; }
stop() { run "$BIN/pg_ctl" -D "$(dir_of $1)" -m fast -w stop >/dev/null; }
bench() { local c=$1; shift; run "$BIN/pgbench" -h "$W" -p "$(port_of "$c")" -U postgres "$@" postgres 2>"$W/err" || failed "pgbench $* on $c" $? "$c"; }
for c in native dot bindfs overlayfs; do
  start $c; bench $c -i -s "$SCALE" -q > "$W/init-$c.log" 2>&1 || { cat "$W/init-$c.log"; exit 1; }; stop $c
done
"$DOT" commit -m "pgbench scale $SCALE" pg >/dev/null

declare -A tps
for i in $(seq "$RUNS"); do
  for c in native dot bindfs overlayfs; do
    start $c
    bench $c -c 4 -j 2 -T "$T" > "$W/out"
    t=$(awk '/^tps/ {print $3; exit}' "$W/out")
    stop $c
    tps[$c]="${tps[$c]:-} $t"
  done
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "pgbench -c 4 -j 2 -T $T, scale $SCALE, medians of $RUNS (TPS; ratio to native)"
n=$(median ${tps[native]})
for c in native dot bindfs overlayfs; do
  m=$(median ${tps[$c]})
  printf '%-10s %10s  %5.2fx   runs:%s\n' "$c" "$m" "$(python3 -c "print($m/$n)")" "${tps[$c]}"
done

# Live commits while pgbench runs on the mount, one every 2 s, enough to
# meet its checkpoints (a flush of a table segment takes hundreds of ms):
# each commit's pause.
LIVE=${LIVE:-25}
start dot
run "$BIN/pgbench" -h "$W" -p "$(port_of dot)" -U postgres -c 4 -j 2 -T $((LIVE * 5)) -P 1 postgres > "$W/live.txt" 2>&1 &
load=$!
pauses=(); frozen=()
for i in $(seq "$LIVE"); do
  sleep 2
  kill -0 "$load" 2>/dev/null || { echo "benches/mount.sh: pgbench ended before live commit $i" >&2; exit 1; }
  r=$("$DOT" commit -m "live $i" --json pg)
  pauses+=("$(echo "$r" | python3 -c 'import json,sys; print(json.load(sys.stdin)["pause_ms"])')")
  frozen+=("$(echo "$r" | python3 -c 'import json,sys; print(json.load(sys.stdin)["frozen_ms"])')")
done
pkill -INT -f "pgbench -h $W -p $(port_of dot)" || true; wait "$load" || true
stop dot
echo "live commits during pgbench: pause_ms ${pauses[*]} (largest $(printf '%s\n' "${pauses[@]}" | sort -n | tail -1)); name changes held (frozen_ms) ${frozen[*]}"
grep -E "^progress" "$W/live.txt" | awk '{print $4}' | sort -n | awk '{a[NR]=$1} END {printf "pgbench tps per second during them: min %s, median %s\n", a[1], a[int((NR+1)/2)]}'

# The commit after 500 transactions (pgbench -c 1 -t 500, the server
# stopped) on the mount, against restic's second backup of the same change
# on the native directory.
export RESTIC_PASSWORD=bench RESTIC_CACHE_DIR=$W/restic-cache
restic init --repo "$W/restic" >/dev/null 2>&1
restic backup --repo "$W/restic" "$W/native" >/dev/null 2>&1
secs() { python3 -c 'import sys,time,subprocess; t=time.perf_counter(); subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); print(round(time.perf_counter()-t, 3))' "$@"; }
small=(); restic2=()
"$DOT" commit -m "before the 500" pg >/dev/null 2>&1 || true
for i in $(seq "$RUNS"); do
  start dot; bench dot -c 1 -t 500 >/dev/null; stop dot
  small+=("$(secs "$DOT" commit -m "500 more $i" pg)")
  start native; bench native -c 1 -t 500 >/dev/null; stop native
  restic2+=("$(secs restic backup --repo "$W/restic" "$W/native")")
done
sm=$(median "${small[@]}"); rm2=$(median "${restic2[@]}")
echo "commit after pgbench -c 1 -t 500: dot on the mount $sm s, restic's second backup $rm2 s: $(python3 -c "print(round($sm/$rm2, 3))")x (runs: dot ${small[*]}; restic ${restic2[*]})"

# Reset and checkout on the mount (the volume's size: $(du -sh)), after
# 10 s of pgbench each time so that there is something to switch.
size=$(du -sh --apparent-size "$DOT_HOME/overlay" "$DOT_HOME/packs" 2>/dev/null | tail -1 | cut -f1)
first=$("$DOT" log --json pg | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["commit"])')
ms() { python3 -c 'import sys,time,subprocess; t=time.perf_counter(); subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); print(round((time.perf_counter()-t)*1000))' "$@"; }
resets=(); checkouts=()
for i in $(seq "$RUNS"); do
  start dot; bench dot -c 4 -j 2 -T 10 >/dev/null; stop dot
  "$DOT" commit -m "switch $i" pg >/dev/null
  "$DOT" checkout -b "w$i" pg >/dev/null
  "$DOT" checkout master pg >/dev/null
  resets+=("$(ms "$DOT" reset --hard "$first" pg)")
  checkouts+=("$(ms "$DOT" checkout "w$i" pg)" "$(ms "$DOT" checkout master pg)")
done
echo "after 10 s of pgbench: reset --hard to the first commit: median $(median "${resets[@]}") ms (runs: ${resets[*]}); checkout between the two: median $(median "${checkouts[@]}") ms (runs: ${checkouts[*]}) (dot store $size)"
