#!/usr/bin/env bash
# Builds the Debian package of the node with dpkg-deb:
#   /usr/bin/ecointegra                       the binary
#   /lib/systemd/system/ecointegra.service    the sandboxed unit (runs as user ecointegra)
#   /etc/ecointegra/node.toml                 the example config, paths set for the package
#                                             (a conffile: upgrades keep local changes)
#   /usr/share/doc/ecointegra/                README, the example config as shipped
# postinst adds the system user ecointegra and /var/lib/ecointegra (mode 700);
# purge removes the user and /etc/ecointegra, and leaves the node's state.
#
#   deploy/debian/build.sh [--binary PATH] [--out DIR]
# Without --binary it builds the release binary (cargo build --release). Prints
# the package's path on stdout.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
here="$root/deploy/debian"
binary=""
out="$root/target/debian"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --binary) binary="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    *) echo "usage: deploy/debian/build.sh [--binary PATH] [--out DIR]" >&2; exit 2 ;;
  esac
done
if [[ -z "$binary" ]]; then
  (cd "$root" && cargo build --release --locked --bin ecointegra >&2)
  target_dir="$(cd "$root" && cargo metadata --format-version 1 --no-deps \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
  binary="$target_dir/release/ecointegra"
fi
[[ -x "$binary" ]] || { echo "build.sh: $binary is not an executable" >&2; exit 1; }
version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -1)"
arch="$(dpkg --print-architecture)"
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT

install -D -m 0755 "$binary" "$stage/usr/bin/ecointegra"
install -D -m 0644 "$here/ecointegra.service" "$stage/lib/systemd/system/ecointegra.service"
install -d -m 0750 "$stage/etc/ecointegra"
# The example config with the package's paths: state under /var/lib, the
# institution's key and the signed directory beside the config.
sed -e 's|^data_dir = .*|data_dir = "/var/lib/ecointegra"|' \
    -e 's|^signing_key_file = .*|signing_key_file = "/etc/ecointegra/node.key"|' \
    -e 's|^directory_file = .*|directory_file = "/etc/ecointegra/directory.toml"|' \
    "$root/deploy/config/node.example.toml" > "$stage/etc/ecointegra/node.toml"
chmod 0640 "$stage/etc/ecointegra/node.toml"
install -D -m 0644 "$root/README.md" "$stage/usr/share/doc/ecointegra/README.md"
install -D -m 0644 "$root/deploy/config/node.example.toml" \
  "$stage/usr/share/doc/ecointegra/node.example.toml"

install -d "$stage/DEBIAN"
for script in postinst prerm postrm; do
  install -m 0755 "$here/$script" "$stage/DEBIAN/$script"
done
echo "/etc/ecointegra/node.toml" > "$stage/DEBIAN/conffiles"
size="$(du -sk --exclude=DEBIAN "$stage" | cut -f1)"
cat > "$stage/DEBIAN/control" <<CONTROL
Package: ecointegra
Version: $version
Architecture: $arch
Maintainer: ecointegra <ecointegra@minam.gob.pe>
Installed-Size: $size
Depends: libc6, adduser
Section: net
Priority: optional
Homepage: https://github.com/ecointegra/ecointegra
Description: official documents between government institutions over Apache Kafka
 The node of one institution of the ecointegra federation: it accepts filings
 from the institution's document system and clerks (gRPC, web console), moves
 them signed and encrypted end to end over Apache Kafka, returns signed
 delivery receipts, and answers citizens' tracking from any institution.
CONTROL
mkdir -p "$out"
deb="$out/ecointegra_${version}_${arch}.deb"
dpkg-deb --root-owner-group --build "$stage" "$deb" >&2
echo "$deb"
