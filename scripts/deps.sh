#!/usr/bin/env bash
# Installs what building and testing dot needs on Debian/Ubuntu: clang for
# rocksdb's bindings, PostgreSQL for the database test, attr and util-linux
# for xattr and terminal tests, rclone (the WebDAV server of the remote
# tests, and a peer in the push benchmark), moto from PyPI (the S3 server of
# the remote tests), fuse3 (fusermount3, which mounts views when the daemon
# is not root; the mount tests need /dev/fuse), and the peer tools the
# benchmarks compare (restic, borg, casync, rclone; bindfs and
# fuse-overlayfs for benches/mount.sh); sqlite3 and fio, which the mount
# tests run on a mount; docker.io and busybox-static for the Docker plugin
# tests (tests/docker.rs starts dockerd and builds its image from the
# host's PostgreSQL and busybox, scripts/docker-image.sh).
set -euo pipefail
need=(clang libclang-dev postgresql attr util-linux time restic borgbackup casync rclone python3-pip fuse3 bindfs fuse-overlayfs sqlite3 fio docker.io busybox-static)
missing=()
for p in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! python3 -c "import moto.server" 2>/dev/null; then
  # Debian marks its Python as externally managed; moto goes to the user's
  # site-packages where pip allows, else past the marker.
  python3 -m pip install --quiet --user 'moto[server]' 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages 'moto[server]'
fi
if [ ! -e /dev/fuse ]; then
  echo "dot: /dev/fuse is missing; the mount tests need FUSE (modprobe fuse, or run the container with --device /dev/fuse)" >&2
  exit 1
fi
if ! command -v cargo >/dev/null; then
  echo "dot: cargo is missing; install Rust from https://rustup.rs and run this again" >&2
  exit 1
fi
