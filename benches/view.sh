#!/usr/bin/env bash
# A cold sequential read of a committed file through a read-only view
# (dot mount DOT@REF --at DIR) against reading the same file natively from
# the same disk, side by side in one run; also how long dot mount takes.
# Caches are dropped before every read (root), and the view is mounted
# afresh, so the daemon's caches are empty too.
#
#   SIZE_MB=1024 RUNS=3 benches/view.sh      (as root; uses target/release/dot)
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MB=${SIZE_MB:-1024}
RUNS=${RUNS:-3}
DOT=${DOT:-$PWD/target/release/dot}
[ "$(id -u)" -eq 0 ] || { echo "benches/view.sh: run as root (it drops the page cache)" >&2; exit 1; }
[ -x "$DOT" ] || cargo build --release
work=$(mktemp -d /var/tmp/dot-view-XXXXXX)
export DOT_HOME=$work/home
cleanup() {
  "$DOT" unmount "$work/view" >/dev/null 2>&1 || true
  "$DOT" daemon stop --force >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
"$DOT" init bench >/dev/null
data=$("$DOT" path bench)
head -c "${SIZE_MB}M" /dev/urandom > "$data/file"
cp "$data/file" "$work/native"
"$DOT" commit -m file >/dev/null
"$DOT" daemon start >/dev/null

seconds() { python3 -c 'import sys,time; t=time.perf_counter(); import subprocess; subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); print(f"{time.perf_counter()-t:.3f}")' "$@"; }
cold() { sync; echo 3 > /proc/sys/vm/drop_caches; }

native=() view=() mounts=()
for i in $(seq "$RUNS"); do
  cold
  native+=("$(seconds dd if="$work/native" of=/dev/null bs=1M)")
  mounts+=("$(seconds "$DOT" mount bench --at "$work/view")")
  cold
  view+=("$(seconds dd if="$work/view/file" of=/dev/null bs=1M)")
  "$DOT" unmount "$work/view" >/dev/null
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
n=$(median "${native[@]}") v=$(median "${view[@]}") m=$(median "${mounts[@]}")
echo "cold sequential read of ${SIZE_MB} MiB, medians of $RUNS"
echo "native:  $n s (runs: ${native[*]})"
echo "view:    $v s (runs: ${view[*]})"
python3 -c "import sys; n,v=map(float,sys.argv[1:]); print(f'view throughput / native: {n/v:.2f}x')" "$n" "$v"
echo "dot mount: $m s (runs: ${mounts[*]})"
