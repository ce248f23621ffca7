#!/usr/bin/env bash
# Builds the Debian package: the stripped binary, /etc/sluice/sluice.yaml from
# conf/packaged.yaml (a conffile: upgrades keep the operator's edits), the reference config
# and docs under /usr/share/doc/sluice, the man pages, the systemd unit, /etc/logrotate.d/sluice
# and the Debian changelog.
#   bash packaging/build-deb.sh        -> target/debian/sluice_<version>_<arch>.deb
# The binary is stripped (101 MB -> 22 MB; release builds keep line tables for backtraces);
# its debug information goes to a separate package, sluice-dbgsym_<version>_<arch>.ddeb
# (/usr/lib/debug/.build-id/..., found by gdb when installed).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-deb >/dev/null || cargo install cargo-deb --locked
target_dir=${CARGO_TARGET_DIR:-target}
cargo build --release --locked
binary="$target_dir/release/sluice"
mkdir -p target/man
rm -f target/man/*.8
"$binary" man --dir target/man   # sluice.8 and sluice-COMMAND.8
# --dbgsym: strip, and move the debug information into the -dbgsym package. (Without a
# strip option, cargo-deb 3.8 packaged the 101 MB binary as built.)
cargo deb --no-build --dbgsym
