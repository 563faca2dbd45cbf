#!/usr/bin/env bash
# Builds the Debian package (cargo deb) and checks what it holds without
# installing it: the file list, the conffile, the unit, and the extracted
# binary's `check` on the extracted config.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-deb >/dev/null || cargo install cargo-deb --version 3.8.0 --locked --quiet
command -v dpkg-deb >/dev/null || { echo "check-deb: dpkg-deb is missing" >&2; exit 1; }

# Stripped: the release profile keeps line tables for profiling (94 MB).
cargo deb --strip --quiet >/dev/null 2>&1 || cargo deb --strip
deb=$(ls -t target/debian/tproxyd_*.deb | head -1)
echo "check-deb: $deb"

list=$(dpkg-deb -c "$deb")
for f in '/usr/bin/tproxyd' '/etc/tproxyd/tproxyd.yaml' '/usr/share/man/man8/tproxyd\.8(\.gz)?' \
         '/usr/share/bash-completion/completions/tproxyd' \
         '/usr/share/zsh/vendor-completions/_tproxyd' \
         '/usr/share/fish/vendor_completions.d/tproxyd\.fish' \
         '(/usr)?/lib/systemd/system/tproxyd\.service'; do
  grep -Eq " \.?$f\$" <<<"$list" || { echo "check-deb: $f missing from the package:"; echo "$list"; exit 1; }
done

work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
dpkg-deb -e "$deb" "$work/DEBIAN"
grep -qx /etc/tproxyd/tproxyd.yaml "$work/DEBIAN/conffiles" || { echo "check-deb: the config is not a conffile"; exit 1; }
grep -q '^Depends:.*nftables' "$work/DEBIAN/control" || { echo "check-deb: no nftables dependency"; cat "$work/DEBIAN/control"; exit 1; }

dpkg-deb -x "$deb" "$work/root"
"$work/root/usr/bin/tproxyd" check -c "$work/root/etc/tproxyd/tproxyd.yaml"
"$work/root/usr/bin/tproxyd" rules -c "$work/root/etc/tproxyd/tproxyd.yaml" | grep -q "table inet tproxyd {"
unit=$(find "$work/root" -name tproxyd.service | head -1)
grep -q '^ExecStartPre=+/usr/bin/tproxyd rules --apply' "$unit" || { echo "check-deb: the unit does not apply the rules"; exit 1; }
echo "check-deb: ok ($(du -h "$deb" | cut -f1))"
