#!/usr/bin/env bash
# Builds the Debian package: the stripped binary, /etc/sluice/sluice.yaml from
# conf/packaged.yaml (a conffile: upgrades keep the operator's edits), the reference config
# and docs under /usr/share/doc/sluice, the man pages, the systemd unit, /etc/logrotate.d/sluice
# and the Debian changelog.
#   bash packaging/build-deb.sh        -> target/debian/sluice_<version>_<arch>.deb
# The debug information stripped from the packaged binary is kept beside the package as
# target/debian/sluice_<version>.debug (gdb: `symbol-file`, or `eu-unstrip`), not shipped.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-deb >/dev/null || cargo install cargo-deb --locked
target_dir=${CARGO_TARGET_DIR:-target}
cargo build --release --locked
binary="$target_dir/release/sluice"
version=$(cargo metadata --no-deps --format-version 1 | sed -n 's/.*"name":"sluice","version":"\([^"]*\)".*/\1/p')
mkdir -p target/man "$target_dir/debian"
rm -f target/man/*.8
"$binary" man --dir target/man   # sluice.8 and sluice-COMMAND.8
if command -v objcopy >/dev/null; then
  objcopy --only-keep-debug "$binary" "$target_dir/debian/sluice_${version}.debug"
fi
# cargo-deb strips the binary it packages (release builds keep line tables for backtraces:
# 87 MB unstripped).
cargo deb --no-build
