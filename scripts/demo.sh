#!/usr/bin/env bash
# Quick start: installs what dot needs, builds it, and versions a small
# volume in the default store (~/.dot, or $DOT_HOME): commit, change, diff,
# roll back, branch.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cargo build --release --quiet
dot=target/release/dot
name="demo-$$"
echo "== dot init $name"
$dot init "$name"
dir=$($dot path "$name")
echo "== writing to $dir"
echo "hello" > "$dir/greeting"
head -c 5000000 /dev/urandom > "$dir/table.dat"
echo "== dot commit"
$dot commit -m "first state" "$name"
echo "world" > "$dir/greeting"
rm "$dir/table.dat"
echo "== dot diff -v"
$dot diff -v "$name"
echo "== dot reset --hard HEAD"
$dot reset --hard HEAD "$name"
echo "greeting says: $(cat "$dir/greeting")"
echo "== dot checkout -b experiment; dot branch; dot log"
$dot checkout -b experiment "$name"
$dot branch "$name"
$dot log "$name"
echo "== dot list"
$dot list
$dot rm -f "$name"
echo "== done: the demo dot was removed; try dot init with your own data directory"
