#!/usr/bin/env bash
# Builds fio with its nfs engine (libnfs) from Debian's own source package and caches the binary:
# Debian's fio package is built without the nfs engine. One patch is applied to the engine
# (fio-nfs-reap-before-umount.patch, beside this script): when it closes a file it reaps the I/Os
# still in flight before nfs_umount(), which otherwise hangs now and then with libnfs 4.0 (see
# the patch and benchmarks/README.md). Idempotent: once the binary is cached, it only prints its
# path. Installs what is missing (needs root for apt-get):
#   - a deb-src entry for each Debian `deb` source (written to
#     /etc/apt/sources.list.d/ivmr-bench-deb-src.sources) when there is none,
#   - the build tools and the -dev packages fio's nfs engine needs (libnfs-dev, zlib, libaio).
#
# Usage: bash setup/fio-nfs.sh
#   Progress goes to stderr; the last line on stdout is the path of the fio binary.
# Environment: IVMR_BENCH_CACHE (default ${XDG_CACHE_HOME:-~/.cache}/ivmr-bench).
set -euo pipefail

say() { printf 'fio-nfs: %s\n' "$*" >&2; }
die() {
  printf 'fio-nfs: error: %s\n' "$*" >&2
  exit 1
}

cache_root="${IVMR_BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ivmr-bench}"

command -v apt-cache >/dev/null || die 'apt-cache not found: this script builds Debian'\''s fio source package and needs a Debian-like system'
version="$(apt-cache policy fio 2>/dev/null | awk '/Candidate:/ { print $2 }')"
[[ -n "$version" && "$version" != '(none)' ]] ||
  die 'apt knows no fio package (run apt-get update as root?)'
# The patch's hash is part of the cache key: a changed patch means a new build.
patch_file="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/fio-nfs-reap-before-umount.patch"
[[ -f "$patch_file" ]] || die "missing $patch_file"
patch_id="$(sha256sum "$patch_file" | cut -c1-12)"
dest="$cache_root/fio/$version-$patch_id"
bin="$dest/fio"

has_nfs_engine() { "$1" --enghelp=nfs 2>/dev/null | grep -q nfs_url; }

if [[ -x "$bin" ]] && has_nfs_engine "$bin"; then
  say "cached: $bin (fio $version with the nfs engine)"
  echo "$bin"
  exit 0
fi

[[ "$(id -u)" == 0 ]] || die "fio $version with the nfs engine is not built yet ($bin) and building it needs root for apt-get; run: sudo bash $0"

# deb-src: `apt-get source` needs source indexes; add them next to the binary ones.
have_deb_src() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [[ -f "$f" ]] && grep -qE '^(deb-src[[:space:]]|Types:.*deb-src)' "$f" && return 0
  done
  return 1
}
if ! have_deb_src; then
  src_list=/etc/apt/sources.list.d/ivmr-bench-deb-src.sources
  say "no deb-src entries: writing $src_list from the deb entries of Debian's sources"
  {
    for f in /etc/apt/sources.list.d/debian.sources; do
      [[ -f "$f" ]] || continue
      # Keep each stanza's URIs/Suites/Components/Signed-By, change only its Types line.
      sed -E 's/^Types:[[:space:]]*deb[[:space:]]*$/Types: deb-src/' "$f"
      echo
    done
  } >"$src_list"
  if [[ -f /etc/apt/sources.list ]] && grep -qE '^deb[[:space:]].*debian' /etc/apt/sources.list; then
    say 'adding deb-src lines for the Debian deb lines of /etc/apt/sources.list'
    grep -E '^deb[[:space:]].*debian' /etc/apt/sources.list | sed -E 's/^deb /deb-src /' \
      >/etc/apt/sources.list.d/ivmr-bench-deb-src.list
  fi
  [[ -s "$src_list" ]] || rm -f "$src_list"
  have_deb_src || die 'could not derive deb-src entries; add one for Debian by hand'
  say 'apt-get update'
  apt-get update -qq >&2
elif ! apt-cache showsrc fio >/dev/null 2>&1 || [[ -z "$(apt-cache showsrc fio 2>/dev/null)" ]]; then
  say 'apt-get update (no source index for fio yet)'
  apt-get update -qq >&2
fi

# What fio's configure needs for the engines we use: libnfs for nfs; libaio and zlib as
# Debian's build has them. dpkg-dev unpacks the source package.
deps=(build-essential dpkg-dev pkg-config patch libnfs-dev zlib1g-dev libaio-dev)
missing=()
for p in "${deps[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]} > 0)); then
  say "installing ${missing[*]}"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2; then
    say 'apt-get install failed; trying again after apt-get update'
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
  fi
fi

work="$cache_root/fio/build-$version"
rm -rf "$work"
mkdir -p "$work"
say "fetching Debian's fio $version source into $work"
(cd "$work" && apt-get source -qq "fio=$version" >&2) || die "apt-get source fio=$version failed"
srcdir="$(find "$work" -mindepth 1 -maxdepth 1 -type d -name 'fio-*' | head -n 1)"
[[ -n "$srcdir" ]] || die "no fio-* directory after apt-get source in $work"

say "applying $(basename "$patch_file")"
(cd "$srcdir" && patch -p1 --forward --quiet <"$patch_file") >&2 || die "the patch does not apply to fio $version"

say "configuring $srcdir"
(cd "$srcdir" && ./configure) >"$work/configure.log" 2>&1 || {
  tail -n 30 "$work/configure.log" >&2
  die "configure failed (log: $work/configure.log)"
}
grep -E '^NFS engine[[:space:]]+yes' "$work/configure.log" >/dev/null ||
  die "configure did not enable the NFS engine (is libnfs-dev installed?); log: $work/configure.log"
say 'configure: NFS engine yes'

say "building with make -j$(nproc) (a few minutes)"
(cd "$srcdir" && make -j"$(nproc)") >"$work/make.log" 2>&1 || {
  tail -n 30 "$work/make.log" >&2
  die "make failed (log: $work/make.log)"
}
has_nfs_engine "$srcdir/fio" || die "the built fio has no nfs engine ($srcdir/fio --enghelp=nfs)"

mkdir -p "$dest"
cp "$srcdir/fio" "$bin.tmp"
mv "$bin.tmp" "$bin"
rm -rf "$work"
say "built and cached: $bin ($("$bin" --version))"
echo "$bin"
