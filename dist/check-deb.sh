#!/usr/bin/env bash
# Builds the Debian package (dist/build-deb.sh) and checks it: the file
# list, the control fields, the conffile, the extracted binary's `check`
# and `rules` on the extracted config, the unit with `systemd-analyze
# verify` (and its sandbox under `systemd-run` where systemd runs), and
# what the maintainer scripts do: the package is installed, upgraded,
# removed and purged with dpkg in a scratch root, with a `systemctl` and a
# `tproxyd` on PATH that only record how they were called.
#
# Usage: dist/check-deb.sh [PACKAGE.deb]   (default: build it)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v dpkg >/dev/null || { echo "check-deb: dpkg is missing" >&2; exit 1; }

deb=${1:-$(dist/build-deb.sh)}
echo "check-deb: $deb"
fail() { echo "check-deb: $*" >&2; exit 1; }

list=$(dpkg-deb -c "$deb")
for f in '/usr/bin/tproxyd' '/etc/tproxyd/tproxyd.yaml' '/usr/share/man/man8/tproxyd\.8(\.gz)?' \
         '/usr/share/bash-completion/completions/tproxyd' \
         '/usr/share/zsh/vendor-completions/_tproxyd' \
         '/usr/share/fish/vendor_completions.d/tproxyd\.fish' \
         '/usr/share/doc/tproxyd/doc/configuration\.md' \
         '/usr/lib/systemd/system/tproxyd\.service'; do
  grep -Eq " \.?$f\$" <<<"$list" || fail "$f missing from the package:"$'\n'"$list"
done

work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
dpkg-deb -e "$deb" "$work/DEBIAN"
control=$work/DEBIAN/control
grep -qx /etc/tproxyd/tproxyd.yaml "$work/DEBIAN/conffiles" || fail "the config is not a conffile"
grep -q '^Depends:.*nftables' "$control" || fail "no nftables dependency: $(cat "$control")"
summary=$(sed -n 's/^Description: //p' "$control")
[ ${#summary} -le 80 ] || fail "the description's summary has ${#summary} characters (Debian: at most 80): $summary"
for s in postinst prerm postrm; do
  [ -x "$work/DEBIAN/$s" ] || fail "no $s in the package"
  cmp -s "$work/DEBIAN/$s" "dist/debian/$s" || fail "$s differs from dist/debian/$s (something added to it)"
done

dpkg-deb -x "$deb" "$work/root"
"$work/root/usr/bin/tproxyd" check -c "$work/root/etc/tproxyd/tproxyd.yaml"
"$work/root/usr/bin/tproxyd" rules -c "$work/root/etc/tproxyd/tproxyd.yaml" | grep -q "table inet tproxyd {"

# The unit: it applies the rules, and systemd finds nothing to object to.
unit=$work/root/usr/lib/systemd/system/tproxyd.service
grep -q '^ExecStartPre=+/usr/bin/tproxyd rules --apply' "$unit" || fail "the unit does not apply the rules"
grep -qx 'LogsDirectory=tproxyd' "$unit" || fail "the unit has no LogsDirectory=tproxyd"
if command -v systemd-analyze >/dev/null; then
  # With the extracted binary, since /usr/bin/tproxyd need not exist here.
  sed "s#/usr/bin/tproxyd#$work/root/usr/bin/tproxyd#g" "$unit" >"$work/tproxyd.service"
  said=$(systemd-analyze verify "$work/tproxyd.service" 2>&1) || fail "systemd-analyze verify: $said"
  [ -z "$said" ] || fail "systemd-analyze verify objects:"$'\n'"$said"
  echo "check-deb: systemd-analyze verify: the unit is clean"
else
  fail "systemd-analyze is missing (apt-get install -y systemd)"
fi
# The unit's sandbox, where systemd runs: a transient service with the
# unit's user and sandbox settings (its directories renamed for the check)
# writes to its logs directory, and cannot write elsewhere.
if [ -d /run/systemd/system ] && command -v systemd-run >/dev/null; then
  props=()
  while IFS= read -r line; do
    case $line in
      DynamicUser=* | NoNewPrivileges=* | ProtectSystem=* | ProtectHome=* | PrivateTmp=* | \
        CapabilityBoundingSet=* | AmbientCapabilities=*) props+=(-p "$line") ;;
      LogsDirectory=* | RuntimeDirectory=*) props+=(-p "$line-pkgcheck") ;;
    esac
  done <"$unit"
  trap 'rm -rf "$work" /var/log/tproxyd-pkgcheck /var/log/private/tproxyd-pkgcheck' EXIT
  systemd-run --quiet --wait --pipe --collect "${props[@]}" /bin/sh -c '
      echo ok >/var/log/tproxyd-pkgcheck/access.log &&
      ! touch /var/log/tproxyd-elsewhere 2>/dev/null &&
      ! touch /etc/tproxyd-pkgcheck 2>/dev/null' ||
    fail "systemd-run: in the unit's sandbox the logs directory is not writable, or more is"
  echo "check-deb: systemd-run: in the unit's sandbox, the logs directory and only it is writable"
else
  echo "check-deb: SKIPPED systemd-run: systemd is not running here (PID 1 is $(ps -o comm= -p 1)); the sandbox is checked by systemd-analyze only"
fi

# The maintainer scripts, run by dpkg itself on a scratch root. `systemctl`
# and `tproxyd` record their calls; `systemctl is-active` answers from a
# flag file; run/systemd/system in the root says "systemd runs here".
root=$work/scratch
mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates" "$root/run/systemd/system" "$work/bin"
touch "$root/var/lib/dpkg/status" "$root/var/lib/dpkg/available"
calls=$work/calls
cat >"$work/bin/systemctl" <<EOF
#!/bin/sh
echo "systemctl \$*" >>"$calls"
case " \$* " in *" is-active "*) [ -e "$work/active" ] ;; esac
EOF
cat >"$work/bin/tproxyd" <<EOF
#!/bin/sh
echo "tproxyd \$*" >>"$calls"
EOF
chmod +x "$work/bin/systemctl" "$work/bin/tproxyd"
pkg() {
  : >"$calls"
  PATH="$work/bin:$PATH" dpkg --root="$root" --force-script-chrootless --force-depends "$@" \
    >"$work/dpkg.log" 2>&1 || fail "dpkg $*: $(cat "$work/dpkg.log")"
}
expect() {
  local what=$1; shift
  local want; want=$(printf '%s\n' "$@")
  [ "$(cat "$calls")" = "$want" ] ||
    fail "$what: the scripts called"$'\n'"$(cat "$calls")"$'\n'"instead of"$'\n'"$want"
  local said="no calls"
  [ $# = 0 ] || said=$(paste -sd';' "$calls" | sed 's/;/; /g')
  echo "check-deb: $what: $said"
}
conf=$root/etc/tproxyd/tproxyd.yaml

pkg -i "$deb"
expect "install" "systemctl daemon-reload"
{ [ -x "$root/usr/bin/tproxyd" ] && [ -f "$conf" ]; } || fail "install: files missing"

touch "$work/active"
pkg -i "$deb"
expect "upgrade, running" "systemctl daemon-reload" "systemctl --quiet is-active tproxyd.service" \
  "systemctl reload tproxyd.service"

rm "$work/active"
pkg -i "$deb"
expect "upgrade, stopped" "systemctl daemon-reload" "systemctl --quiet is-active tproxyd.service"

pkg -r tproxyd
expect "remove" "systemctl stop tproxyd.service" "tproxyd rules --remove -c $conf" \
  "systemctl daemon-reload"
[ ! -e "$root/usr/bin/tproxyd" ] || fail "remove: the binary is still there"
[ -f "$conf" ] || fail "remove: the config went too (only purge removes it)"

mkdir -p "$root/var/log/private/tproxyd"
ln -s private/tproxyd "$root/var/log/tproxyd"
touch "$root/var/log/tproxyd/access.log" "$root/etc/tproxyd/local.yaml"
pkg -P tproxyd
expect "purge"
for gone in etc/tproxyd var/log/tproxyd var/log/private/tproxyd; do
  if [ -e "$root/$gone" ] || [ -L "$root/$gone" ]; then fail "purge: /$gone is still there"; fi
done

echo "check-deb: ok ($(du -h "$deb" | cut -f1))"
