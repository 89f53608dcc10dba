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
echo "== dot push to a directory remote, dot clone into a second store"
remote_dir=$(mktemp -d)
other_home=$(mktemp -d)
$dot remote add "$name" "$remote_dir"
$dot push "$name" "$name"
DOT_HOME=$other_home $dot remote add origin "$remote_dir"
DOT_HOME=$other_home $dot clone origin "$name" --branch experiment
echo "the clone's greeting says: $(cat "$(DOT_HOME=$other_home $dot path "$name")/greeting")"
$dot remote rm "$name"
rm -rf "$remote_dir" "$other_home"
$dot rm -f "$name"
echo "== done: the demo dot and remote were removed; try dot init with your own data directory"
