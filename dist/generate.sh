#!/usr/bin/env bash
# Regenerates the manual page and shell completions the package ships from
# the CLI itself (tests/cli.rs fails while they are out of date).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --bin tproxyd
bin=target/debug/tproxyd
"$bin" manpage >dist/tproxyd.8
"$bin" completions bash >dist/completions/tproxyd.bash
"$bin" completions zsh >dist/completions/_tproxyd
"$bin" completions fish >dist/completions/tproxyd.fish
echo "dist/: regenerated"
