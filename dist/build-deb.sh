#!/usr/bin/env bash
# Builds the Debian package: target/debian/tproxyd_<version>_<arch>.deb
# (a release build first, then `cargo deb`). Installs the pinned cargo-deb
# with cargo when it is missing or another version. Prints the package's
# path last. Needs dpkg-deb (apt-get install -y dpkg).
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO_DEB_VERSION=3.8.0

if [ "$(cargo deb --version 2>/dev/null)" != "cargo-deb $CARGO_DEB_VERSION" ]; then
  echo "build-deb: installing cargo-deb $CARGO_DEB_VERSION (cargo install)" >&2
  cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked --quiet
fi
command -v dpkg-deb >/dev/null || { echo "build-deb: dpkg-deb is missing (apt-get install -y dpkg)" >&2; exit 1; }

# Stripped: the release profile keeps line tables for profiling (94 MB).
# Quiet unless it fails, then again with its output.
cargo deb --strip --quiet >/dev/null 2>&1 || cargo deb --strip >&2
ls -t target/debian/tproxyd_*.deb | head -1
