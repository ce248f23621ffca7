#!/usr/bin/env bash
# Builds the Debian package: binary, /etc/sluice/sluice.yaml from conf/packaged.yaml (a conffile: upgrades keep the
# operator's edits), the systemd unit, the man page and the README.
#   bash packaging/build-deb.sh        -> target/debian/sluice_<version>_<arch>.deb
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-deb >/dev/null || cargo install cargo-deb --locked
cargo build --release --locked
mkdir -p target/man
rm -f target/man/*.8
target/release/sluice man --dir target/man   # sluice.8 and sluice-COMMAND.8
cargo deb --no-build --no-strip
