#!/bin/bash
# Small commits, side by side for two dot binaries (say, before and after
# a change): the mean time of N commits of a one-file change over a 50 MiB
# dot, in process and through a daemon, RUNS times each, interleaved.
#   benches/commit-latency.sh OLD_BIN NEW_BIN [N] [RUNS]
set -euo pipefail
OLD=$1; NEW=$2; N=${3:-40}; RUNS=${4:-3}
export DOT_DOCKER_PLUGIN=off

one() { # BIN daemon|process -> mean ms (one decimal)
    local bin=$1 how=$2 h w s e
    h=$(mktemp -d /var/tmp/commit-latency.XXXX)
    export DOT_HOME=$h/home
    "$bin" init app -q >/dev/null
    w=$("$bin" path app)
    head -c 50M /dev/urandom >"$w/big"
    "$bin" commit -m base -q >/dev/null
    [ "$how" = daemon ] && "$bin" daemon start >/dev/null 2>&1
    s=$(date +%s%N)
    for i in $(seq "$N"); do
        echo "$i" >"$w/f"
        "$bin" commit -m "c$i" -q >/dev/null
    done
    e=$(date +%s%N)
    [ "$how" = daemon ] && "$bin" daemon stop >/dev/null 2>&1
    rm -rf "$h"
    awk -v t=$((e - s)) -v n="$N" 'BEGIN { printf "%.1f", t / n / 1e6 }'
}

for how in process daemon; do
    for r in $(seq "$RUNS"); do
        echo "$how run $r: old $(one "$OLD" $how) ms, new $(one "$NEW" $how) ms"
    done
done
