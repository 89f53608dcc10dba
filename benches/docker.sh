#!/usr/bin/env bash
# The Docker volume plugin against Docker's local driver, side by side in
# one run on the same disk: the time `docker run` of a container that
# exits at once takes with a dot volume and with a local one (both
# volumes exist already; runs interleaved), the first use of a new volume
# (dot: the dot is created and mounted), and pgbench TPS (-c 4 -j 2)
# inside a PostgreSQL container on each. Medians are reported. A reset
# and a checkout of the dot under the running container are timed too,
# beside a plain `docker restart` of it. The start times use an image of
# busybox alone: with the vfs storage driver Docker copies the whole image
# for each container, which would drown the difference.
#
#   SCALE=50 RUNS=3 T=30 STARTS=15 PARTS="start pgbench" benches/docker.sh
#     (as root, with dockerd running and no other dot daemon serving the
#      plugin; builds the image with scripts/docker-image.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE=${SCALE:-50}; RUNS=${RUNS:-3}; T=${T:-30}; STARTS=${STARTS:-15}
PARTS=${PARTS:-start pgbench}
DOT=${DOT:-$PWD/target/release/dot}
IMAGE=dot-postgres:15
[ "$(id -u)" -eq 0 ] || { echo "benches/docker.sh: run as root" >&2; exit 1; }
docker info >/dev/null 2>&1 || { echo "benches/docker.sh: start dockerd first" >&2; exit 1; }
[ -x "$DOT" ] || cargo build --release
scripts/docker-image.sh
W=$(mktemp -d /var/tmp/dot-docker-bench-XXXXXX)
export DOT_HOME=$W/home
cleanup() {
  docker rm -f bench-pg-dot bench-pg-local >/dev/null 2>&1 || true
  for v in bench-start-dot bench-start-local bench-pg-dot bench-pg-local $(seq -f 'bench-first-%g' 1 "$STARTS"); do
    docker volume rm -f "$v" >/dev/null 2>&1 || true
  done
  "$DOT" daemon stop --force >/dev/null 2>&1 || true
  rm -rf "$W"
}
trap cleanup EXIT
"$DOT" daemon start >/dev/null
ms() { local a b; a=$(date +%s%N); "$@" >/dev/null; b=$(date +%s%N); echo $(( (b - a) / 1000000 )); }
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
quick() { docker run --rm --network none "$@" dot-busybox:1 true; }
part() { [[ " $PARTS " == *" $1 "* ]]; }

if part start; then
# Container start: both volumes exist; only the driver differs.
if ! docker image inspect dot-busybox:1 >/dev/null 2>&1; then
  mkdir -p "$W/bb/bin"; cp /bin/busybox "$W/bb/bin/"; ln -s busybox "$W/bb/bin/true"
  tar -C "$W/bb" -c . | docker import -c 'ENV PATH=/bin' - dot-busybox:1 >/dev/null
fi
docker volume create -d dot bench-start-dot >/dev/null
docker volume create bench-start-local >/dev/null
quick -v bench-start-dot:/data; quick -v bench-start-local:/data
declare -a sd sl fd fl
for i in $(seq "$STARTS"); do
  sd+=("$(ms quick -v bench-start-dot:/data)")
  sl+=("$(ms quick -v bench-start-local:/data)")
  fd+=("$(ms quick --volume-driver dot -v "bench-first-$i:/data")")
  fl+=("$(ms quick -v "bench-first-l$i:/data")")
  docker volume rm -f "bench-first-l$i" >/dev/null
done
echo "docker run --rm of a container that exits at once, medians of $STARTS (ms)"
printf '  %-34s %6s\n' "existing volume, local driver" "$(median "${sl[@]}")"
printf '  %-34s %6s  (+%s ms)\n' "existing volume, dot" "$(median "${sd[@]}")" "$(( $(median "${sd[@]}") - $(median "${sl[@]}") ))"
printf '  %-34s %6s\n' "new volume, local driver" "$(median "${fl[@]}")"
printf '  %-34s %6s  (+%s ms)\n' "new volume, dot (init + mount)" "$(median "${fd[@]}")" "$(( $(median "${fd[@]}") - $(median "${fl[@]}") ))"
fi
part pgbench || exit 0

# pgbench inside the container, on each volume.
pg() { docker run -d --network none --name "bench-pg-$1" "${@:2}" "$IMAGE" >/dev/null; }
ready() { until docker exec "$1" pg_isready -q 2>/dev/null; do sleep 0.2; done; }
pg dot --volume-driver dot -v bench-pg-dot:/var/lib/postgresql/data
pg local -v bench-pg-local:/var/lib/postgresql/data
for c in dot local; do
  ready "bench-pg-$c"
  docker exec "bench-pg-$c" pgbench -i -s "$SCALE" -q postgres >/dev/null 2>&1
done
"$DOT" commit -m "pgbench scale $SCALE" bench-pg-dot >/dev/null
declare -A tps
for i in $(seq "$RUNS"); do
  for c in dot local; do
    t=$(docker exec "bench-pg-$c" pgbench -c 4 -j 2 -T "$T" postgres 2>/dev/null | awk '/^tps/ {print $3; exit}')
    tps[$c]="${tps[$c]:-} $t"
  done
done
d=$(median ${tps[dot]}); l=$(median ${tps[local]})
echo "pgbench -c 4 -j 2 -T $T inside the container, scale $SCALE, medians of $RUNS (TPS)"
printf '  %-34s %8s\n' "local volume" "$l"
printf '  %-34s %8s  (%sx)\n' "dot volume" "$d" "$(awk -v a="$d" -v b="$l" 'BEGIN {printf "%.2f", a/b}')"
echo "  (runs: dot${tps[dot]}; local${tps[local]})"

# A switch under the running container: stop, switch, start, ready.
"$DOT" checkout -b bench bench-pg-dot >/dev/null
declare -a rs cs dr
for i in $(seq "$RUNS"); do
  docker exec bench-pg-dot pgbench -c 2 -T 3 postgres >/dev/null 2>&1
  dr+=("$(ms docker restart -t 60 bench-pg-dot)")
  ready bench-pg-dot
  docker exec bench-pg-dot pgbench -c 2 -T 3 postgres >/dev/null 2>&1
  rs+=("$(ms "$DOT" reset --hard HEAD bench-pg-dot 2>/dev/null)")
  ready bench-pg-dot
  cs+=("$(ms "$DOT" checkout master bench-pg-dot)")
  ready bench-pg-dot
  "$DOT" checkout bench bench-pg-dot >/dev/null 2>&1
  ready bench-pg-dot
done
echo "under the running container, medians of $RUNS (ms, stop + switch + start)"
printf '  %-34s %6s\n' "docker restart (no switch)" "$(median "${dr[@]}")"
printf '  %-34s %6s\n' "dot reset --hard HEAD" "$(median "${rs[@]}")"
printf '  %-34s %6s\n' "dot checkout master" "$(median "${cs[@]}")"
