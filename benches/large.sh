#!/usr/bin/env bash
# A large mounted dot: SIZE_GB of incompressible files committed, then
# mounted. Measures the daemon's memory (peak resident set) while every
# byte is read cold through the mount, and reset and checkout times after
# pages scattered over the volume were written, as a database writes.
#
#   SIZE_GB=10 RUNS=3 benches/large.sh    (as root; needs about 2 x SIZE_GB
#                                          of free disk under /var/tmp)
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_GB=${SIZE_GB:-10}; RUNS=${RUNS:-3}
DOT=${DOT:-$PWD/target/release/dot}
[ "$(id -u)" -eq 0 ] || { echo "benches/large.sh: run as root" >&2; exit 1; }
[ -x "$DOT" ] || cargo build --release
W=$(mktemp -d /var/tmp/dot-large-bench-XXXXXX)
export DOT_HOME=$W/home DOT_DOCKER_PLUGIN=off
cleanup() {
  "$DOT" daemon stop --force >/dev/null 2>&1 || true
  umount -l "$DOT_HOME/work/big/__default__" 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ms() { python3 -c 'import sys,time,subprocess; t=time.perf_counter(); subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); print(round((time.perf_counter()-t)*1000))' "$@"; }

"$DOT" init big >/dev/null
D=$("$DOT" path big)
# 256 MiB files of random bytes (a database's relation files are 1 GiB
# segments; smaller ones make more inodes for a switch to weigh).
files=$((SIZE_GB * 4))
for i in $(seq "$files"); do
  head -c 268435456 /dev/urandom > "$D/f$i"
done
t=$(ms "$DOT" commit -q -m "$SIZE_GB GiB" big)
echo "commit of $SIZE_GB GiB into a plain dot: $t ms"
"$DOT" mount big >/dev/null
D=$("$DOT" path big)
pid=$("$DOT" daemon status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])')

# Every byte read cold through the mount; the daemon's peak memory.
sync; echo 3 > /proc/sys/vm/drop_caches
start=$(date +%s.%N)
cat "$D"/f* > /dev/null
end=$(date +%s.%N)
hwm=$(awk '/VmHWM/ {print $2}' /proc/$pid/status)
echo "cold read of $SIZE_GB GiB through the mount: $(python3 -c "print(round($end-$start, 1))") s; daemon peak RSS $((hwm / 1024)) MiB"

# Pages written across the volume, committed; then reset and checkout.
write_pages() {
  python3 - "$D" "$files" "$1" <<'PY'
import os, random, sys
d, files, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
r = random.Random(seed)
for _ in range(2000):
    f = os.path.join(d, "f%d" % r.randint(1, files))
    with open(f, "r+b") as h:
        h.seek(r.randrange(0, 268435456 // 8192) * 8192)
        h.write(os.urandom(8192))
PY
}
first=$("$DOT" log --json big | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["commit"])')
resets=(); checkouts=(); commits=()
for i in $(seq "$RUNS"); do
  # The pages read first, so the kernel has them cached to drop.
  cat "$D"/f* > /dev/null
  write_pages "$i"
  commits+=("$(ms "$DOT" commit -q -m "pages $i" big)")
  "$DOT" checkout -b "w$i" big >/dev/null
  "$DOT" checkout master big >/dev/null
  resets+=("$(ms "$DOT" reset --hard "$first" big)")
  checkouts+=("$(ms "$DOT" checkout "w$i" big)" "$(ms "$DOT" checkout master big)")
done
hwm=$(awk '/VmHWM/ {print $2}' /proc/$pid/status)
echo "commit of 2000 scattered 8 KiB pages on the mount: median $(median "${commits[@]}") ms (runs: ${commits[*]})"
echo "after 2000 scattered 8 KiB pages: reset --hard median $(median "${resets[@]}") ms (runs: ${resets[*]}); checkout median $(median "${checkouts[@]}") ms (runs: ${checkouts[*]}); daemon peak RSS $((hwm / 1024)) MiB"
