#!/usr/bin/env bash
# Builds the image dot-postgres:15 for the Docker tests and benchmarks, with
# `docker import` (no registry is reachable): the host's PostgreSQL 15, the
# libraries its programs need, busybox for a shell, and an entrypoint that
# does what the official postgres image's does: an empty $PGDATA is
# initialized, then PostgreSQL runs as user postgres. Does nothing when the
# image exists (pass --force to build it again).
set -euo pipefail
image=dot-postgres:15
if [ "${1:-}" != "--force" ] && docker image inspect "$image" >/dev/null 2>&1; then
  exit 0
fi
pg=/usr/lib/postgresql/15
root=$(mktemp -d)
chmod 755 "$root"
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,etc,tmp,root,var/lib/postgresql,var/run/postgresql,usr/share}
chmod 1777 "$root/tmp"
cp /bin/busybox "$root/bin/busybox"
for tool in $("$root/bin/busybox" --list); do
  [ -e "$root/bin/$tool" ] || ln -s busybox "$root/bin/$tool"
done
mkdir -p "$root$pg" "$root/usr/share/postgresql"
cp -a "$pg/." "$root$pg/"
cp -a /usr/share/postgresql/15 "$root/usr/share/postgresql/"
cp -a /usr/share/zoneinfo "$root/usr/share/"
# Every library a PostgreSQL program or module links, at its host path.
for f in "$pg"/bin/* "$pg"/lib/*.so; do
  ldd "$f" 2>/dev/null | awk '/=> \//{print $3} /^\s*\/lib/{print $1}'
done | sort -u | while read -r lib; do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
mkdir -p "$root/lib64"
cp -L /lib64/ld-linux-x86-64.so.2 "$root/lib64/"
cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
postgres:x:999:999:PostgreSQL:/var/lib/postgresql:/bin/sh
EOF
cat >"$root/etc/group" <<'EOF'
root:x:0:
postgres:x:999:
EOF
chown 999:999 "$root/var/lib/postgresql" "$root/var/run/postgresql"
cat >"$root/entrypoint.sh" <<'EOF'
#!/bin/sh
# As the official postgres image: initialize an empty $PGDATA, then run
# PostgreSQL as postgres. Extra arguments go to postgres.
set -e
export PATH=/usr/lib/postgresql/15/bin:/bin
: "${PGDATA:=/var/lib/postgresql/data}"
mkdir -p "$PGDATA"
chown postgres:postgres "$PGDATA"
chmod 700 "$PGDATA"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  su -p -s /bin/sh postgres -c 'initdb -D "$PGDATA" --locale=C -E UTF8 -A trust >/dev/null'
fi
exec su -p -s /bin/sh postgres -c 'exec postgres -D "$PGDATA" -c listen_addresses= "$@"' sh "$@"
EOF
chmod 755 "$root/entrypoint.sh"
tar -C "$root" -c . | docker import \
  -c 'ENV PATH=/usr/lib/postgresql/15/bin:/bin' \
  -c 'ENV PGDATA=/var/lib/postgresql/data' \
  -c 'ENV PGHOST=/var/run/postgresql' \
  -c 'ENV PGUSER=postgres' \
  -c 'ENTRYPOINT ["/entrypoint.sh"]' \
  - "$image" >/dev/null
echo "built $image"
