#!/usr/bin/env bash
# Rebuilds the patched crates under vendor/ from the registry and the patch
# queue, or checks that vendor/ is what it would build.
#
# Layout (one folder per crate, named exactly as the crate):
#   vendor/patches/<crate>/NNNN-<slug>.patch
#       the queue of <crate>, applied in file-name order: `git format-patch`
#       output, paths relative to the crate root (so `patch -p1` or
#       `git apply` in the crate's folder applies one by hand).
#   vendor/<crate>/
#       the .crate file of the version locked in Cargo.lock, unpacked as
#       published (with its .cargo_vcs_info.json, Cargo.toml.orig and
#       Cargo.lock; no .cargo-checksum.json: `[patch]` with a path needs
#       none), plus its queue. Wired in by a `[patch.crates-io]` line in
#       Cargo.toml, which this script checks but never writes.
#   vendor/SHA256SUMS
#       the sha256 of every <crate>-<version>.crate used, checked on each
#       build. A version not listed yet is taken from Cargo.lock's checksum
#       (there while the crate is locked from the registry, i.e. before its
#       folder here exists or after a version bump) and added to the file.
#   vendor/proposed/
#       patches not carried; never read here.
#
# Usage:
#   vendor/update.sh          rebuild vendor/<crate> for every crate with a
#                             queue; a new crate's folder is created and the
#                             line to add to Cargo.toml printed; a folder
#                             without a queue is removed
#   vendor/update.sh --check  build in a temporary directory and exit 1,
#                             with a summary, when vendor/ differs from it
#   vendor/update.sh --keep   as the first, and keep each build: a git
#                             repository with the pristine crate (tag
#                             "pristine") and one commit per patch, from
#                             which `git format-patch` writes the queue back
#                             (vendor/PATCHES.md, "Changing a patch")
#
# The .crate comes from ~/.cargo/registry/cache when a copy with the right
# sha256 is there, else from static.crates.io (curl). Needs git, tar, sha256sum.
set -euo pipefail
export LC_ALL=C # the queue's order, diff's messages
root=$(cd "$(dirname "$0")/.." && pwd)
vendor=$root/vendor
dl=https://static.crates.io/crates
mode=${1:-build}
case $mode in
  build | --check | --keep) ;;
  *) echo "usage: vendor/update.sh [--check | --keep]" >&2; exit 2 ;;
esac
# Our own git settings only, and never the repository of a calling hook.
unset GIT_DIR GIT_WORK_TREE GIT_INDEX_FILE GIT_OBJECT_DIRECTORY GIT_ALTERNATE_OBJECT_DIRECTORIES
export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
git_() { git -c user.name=vendor-update -c user.email=vendor-update@localhost "$@"; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/vendor-update.XXXXXX")
keep_tmp=no
trap '[ "$keep_tmp" = yes ] || rm -rf "$tmp"' EXIT
say() { echo "update.sh: $*" >&2; }
die() { say "$*"; exit 1; }
failed=0

# "version source checksum" of every [[package]] named $1 in Cargo.lock
# ("-" for a missing field; [[patch.unused]] entries are not packages).
locked() {
  awk -v want="$1" '
    function emit() { if (name == want) print ver, (src == "" ? "-" : src), (sum == "" ? "-" : sum) }
    /^\[/ { emit(); pkg = ($0 == "[[package]]"); name = ver = src = sum = ""; next }
    !pkg { next }
    /^name = /     { name = $3; gsub(/"/, "", name) }
    /^version = /  { ver = $3; gsub(/"/, "", ver) }
    /^source = /   { src = $3; gsub(/"/, "", src) }
    /^checksum = / { sum = $3; gsub(/"/, "", sum) }
    END { emit() }' "$root/Cargo.lock"
}

# The sha256 recorded for $1 (a .crate file name) in vendor/SHA256SUMS.
recorded_sum() {
  [ -f "$vendor/SHA256SUMS" ] || return 0
  awk -v f="$1" '$2 == f || $2 == "*" f { print $1 }' "$vendor/SHA256SUMS"
}

# Puts the verified $1-$2.crate at $tmp/$1-$2.crate; $3 is its sha256.
fetch_crate() {
  local crate=$1 version=$2 want=$3 file=$1-$2.crate cached
  for cached in "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/"$file"; do
    [ -f "$cached" ] || continue
    if [ "$(sha256sum <"$cached" | cut -d' ' -f1)" = "$want" ]; then
      cp "$cached" "$tmp/$file"
      return
    fi
    say "warning: $cached does not match the recorded sha256; downloading"
  done
  curl -sSfL --retry 3 -o "$tmp/$file" "$dl/$crate/$file" || die "$crate $version: download from $dl failed"
  local got
  got=$(sha256sum <"$tmp/$file" | cut -d' ' -f1)
  [ "$got" = "$want" ] || die "$file: sha256 $got, expected $want (vendor/SHA256SUMS or Cargo.lock)"
}

# The crates that Cargo.toml's [patch.crates-io] points at vendor/<crate>.
wired() {
  awk '
    /^\[/ { sect = $0; gsub(/[ \t]/, "", sect); next }
    sect == "[patch.crates-io]" {
      l = $0; gsub(/[ \t]/, "", l)
      if (match(l, /^[A-Za-z0-9_-]+=\{path="vendor\/[A-Za-z0-9_-]+"/)) {
        split(substr(l, 1, RLENGTH), kv, "=")
        dir = kv[3]; sub(/^"vendor\//, "", dir); sub(/"$/, "", dir)
        if (kv[1] == dir) print dir
      }
    }' "$root/Cargo.toml"
}

# Version and sha256 of $1's .crate: "version sha256".
pin() {
  local crate=$1 entries version source lock_sum sum
  entries=$(locked "$crate")
  [ -n "$entries" ] || die "$crate: not in Cargo.lock (is it a dependency? run cargo build first)"
  [ "$(wc -l <<<"$entries")" = 1 ] || die "$crate: several versions in Cargo.lock: $(cut -d' ' -f1 <<<"$entries" | tr '\n' ' ')"
  read -r version source lock_sum <<<"$entries"
  case $source in
    - | registry+https://github.com/rust-lang/crates.io-index | sparse+https://index.crates.io/) ;;
    *) die "$crate $version: locked from $source, not crates.io" ;;
  esac
  sum=$(recorded_sum "$crate-$version.crate")
  if [ -n "$sum" ] && [ "$lock_sum" != - ] && [ "$sum" != "$lock_sum" ]; then
    die "$crate-$version.crate: sha256 $sum in vendor/SHA256SUMS, $lock_sum in Cargo.lock"
  fi
  if [ -z "$sum" ]; then
    [ "$lock_sum" != - ] || die "$crate-$version.crate: no sha256 in vendor/SHA256SUMS nor in Cargo.lock"
    [ "$mode" != --check ] || die "$crate-$version.crate: no sha256 in vendor/SHA256SUMS; run vendor/update.sh"
    sum=$lock_sum
    echo "$sum  $crate-$version.crate" >>"$vendor/SHA256SUMS"
    LC_ALL=C sort -k2 -o "$vendor/SHA256SUMS" "$vendor/SHA256SUMS"
    say "$crate-$version.crate: sha256 from Cargo.lock added to vendor/SHA256SUMS"
  fi
  echo "$version $sum"
}

# Unpacks $1 $2 into $tmp/$1 as a git repository (tag "pristine") and
# applies the queue with `git am`; on a patch that does not apply, says
# how to go on and fails.
build() {
  local crate=$1 version=$2 dir=$tmp/$1 patches
  mkdir "$dir"
  tar -xzf "$tmp/$crate-$version.crate" -C "$dir" --strip-components=1 --no-same-owner
  git_ -C "$dir" init -q
  git_ -C "$dir" add -A -f
  git_ -C "$dir" commit -q -m "$crate $version as published"
  git_ -C "$dir" tag pristine
  patches=("$vendor/patches/$crate"/*.patch)
  git_ -C "$dir" am -q --keep-cr --whitespace=nowarn "${patches[@]}" >"$tmp/am.log" 2>&1 && return
  local stuck
  stuck=$(git_ -C "$dir" am --show-current-patch=raw 2>/dev/null | sed -n 's/^Subject: \(\[PATCH[^]]*\] \)\{0,1\}//p' | head -1)
  cat "$tmp/am.log" >&2
  if [ "$mode" = --check ]; then
    die "$crate $version: a patch does not apply: $stuck"
  fi
  keep_tmp=yes
  die "$crate $version: a patch does not apply: $stuck
  The build is kept in $dir, a git repository: the crate as published
  (tag \"pristine\"), the patches before this one as commits, \`git am\`
  stopped at this one. Fix it there (vendor/PATCHES.md, \"Changing a patch\"):
    cd $dir
    git am --show-current-patch=diff | git apply --reject   # then fix the *.rej, delete them
    git add -A && git am --continue                         # runs the later patches too
  then write the queue back and rebuild:
    rm $vendor/patches/$crate/*.patch
    git -C $dir format-patch --zero-commit --no-signature -o $vendor/patches/$crate pristine
    vendor/update.sh"
}

# Prints what differs between vendor/$1 and its build, at most 20 files.
summary() {
  ln -sfn "$vendor" "$tmp/vendor"
  (cd "$tmp" && { diff -rq "vendor/$1" "built/$1" || true; }) |
    sed -e "s|^Files vendor/$1/\(.*\) and .* differ$|  changed: \1|" \
      -e "s|^Only in vendor/$1/*\(.*\): \(.*\)|  only in vendor/$1: \1/\2|" \
      -e "s|^Only in built/$1/*\(.*\): \(.*\)|  missing from vendor/$1: \1/\2|" \
      -e 's|: /|: |' |
    awk 'NR <= 20 { print; next } END { if (NR > 20) print "  ... and " NR - 20 " more" }' >&2
}

# Builds $1 and compares it with vendor/$1 (--check) or puts it there.
update_crate() {
  local crate=$1 pinned version sum n what
  pinned=$(pin "$crate")
  read -r version sum <<<"$pinned"
  fetch_crate "$crate" "$version" "$sum"
  build "$crate" "$version"
  n=$(git -C "$tmp/$crate" rev-list --count pristine..HEAD)
  what="$crate $version + $n patch$([ "$n" = 1 ] || echo es)"
  local built=$tmp/built/$crate
  mkdir -p "$tmp/built"
  cp -R "$tmp/$crate" "$built"
  rm -rf "$built/.git"
  if [ ! -d "$vendor/$crate" ] && [ "$mode" != --check ]; then
    cp -R "$built" "$vendor/$crate"
    say "vendor/$crate: created ($what)"
  elif [ ! -d "$vendor/$crate" ]; then
    say "vendor/$crate is missing ($what)"
    failed=1
  elif diff -rq "$vendor/$crate" "$built" >/dev/null; then
    say "vendor/$crate: up to date ($what)"
  elif [ "$mode" = --check ]; then
    say "vendor/$crate differs from $what:"
    summary "$crate"
    failed=1
  else
    rm -rf "${vendor:?}/$crate"
    cp -R "$built" "$vendor/$crate"
    say "vendor/$crate: rebuilt ($what)"
  fi
  [ "$mode" != --keep ] || say "$crate: build kept in $tmp/$crate (tag \"pristine\", one commit per patch)"
  if ! wired | grep -qxF "$crate"; then
    say "Cargo.toml has no [patch.crates-io] line for $crate; add (not done by this script):"
    say "  $crate = { path = \"vendor/$crate\" }"
    failed=1
  fi
}

[ "$mode" != --keep ] || keep_tmp=yes
crates=()
for d in "$vendor"/patches/*/; do
  [ -d "$d" ] || continue
  crate=$(basename "$d")
  [ -n "$(ls -A "$d")" ] || die "vendor/patches/$crate is empty: remove it, or add a patch"
  for p in "$d"*; do
    [[ $(basename "$p") =~ ^[0-9]{4}-.+\.patch$ ]] || die "vendor/patches/$crate/$(basename "$p"): not NNNN-<slug>.patch"
  done
  crates+=("$crate")
done
for crate in ${crates[@]+"${crates[@]}"}; do
  update_crate "$crate"
done

# A crate folder without a queue is left over from a dropped patch.
for d in "$vendor"/*/; do
  crate=$(basename "$d")
  case " patches proposed ${crates[*]-} " in *" $crate "*) continue ;; esac
  if [ "$mode" = --check ]; then
    say "vendor/$crate has no patches in vendor/patches/$crate"
    failed=1
  else
    rm -rf "${vendor:?}/$crate"
    say "vendor/$crate removed (no patches)"
  fi
done
for crate in $(wired); do
  case " ${crates[*]-} " in *" $crate "*) continue ;; esac
  say "Cargo.toml: remove the [patch.crates-io] line of $crate (no patches; not done by this script)"
  failed=1
done

if [ "$failed" != 0 ]; then
  [ "$mode" != --check ] || say "check failed: run vendor/update.sh, or turn the change into a patch (vendor/PATCHES.md)"
  exit 1
fi
