#!/usr/bin/env bash
# Type-checks dot (library, binary, tests, benches) for macOS from Linux,
# with clippy, so that Linux-only calls do not creep into the
# plain-directory mode. C and C++ dependencies (rocksdb, zstd) are not
# compiled: a stand-in compiler writes empty objects, which a check never
# links. This proves the Rust code builds for macOS, not that it runs there.
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-apple-darwin
rustup target add "$target" >/dev/null
fake=$(mktemp -d)
trap 'rm -rf "$fake"' EXIT
cat > "$fake/cc" <<'SH'
#!/bin/sh
out=""
while [ $# -gt 0 ]; do case "$1" in -o) out="$2"; shift;; esac; shift; done
[ -n "$out" ] && : > "$out"
exit 0
SH
chmod +x "$fake/cc"
export CC_x86_64_apple_darwin="$fake/cc" CXX_x86_64_apple_darwin="$fake/cc" AR_x86_64_apple_darwin="$fake/cc"
export BINDGEN_EXTRA_CLANG_ARGS_x86_64_apple_darwin="-ffreestanding"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/check-macos"
cargo clippy --target "$target" --all-targets -- -D warnings
echo "dot type-checks for $target"
