#!/usr/bin/env bash
# Installs nfs-ganesha with its VFS backend (Debian's nfs-ganesha + nfs-ganesha-vfs) and rpcbind,
# which ganesha needs running to register with, if they are missing. Idempotent. The benchmark
# runs ganesha.nfsd itself, in the foreground, with its own config and free ports: this script
# only installs (a system nfs-ganesha service, if one runs, is left alone).
#
# Usage: bash setup/ganesha.sh
#   Progress goes to stderr; the last line on stdout is the path of ganesha.nfsd.
set -euo pipefail

say() { printf 'ganesha: %s\n' "$*" >&2; }
die() {
  printf 'ganesha: error: %s\n' "$*" >&2
  exit 1
}

pkgs=(nfs-ganesha nfs-ganesha-vfs rpcbind)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]} > 0)); then
  [[ "$(id -u)" == 0 ]] || die "missing ${missing[*]}; installing needs root: sudo bash $0"
  command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
  say "installing ${missing[*]}"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2; then
    say 'apt-get install failed; trying again after apt-get update'
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
  fi
else
  say "installed: ${pkgs[*]}"
fi

nfsd="$(command -v ganesha.nfsd || true)"
[[ -n "$nfsd" ]] || nfsd=/usr/bin/ganesha.nfsd
[[ -x "$nfsd" ]] || die "ganesha.nfsd not found after installing nfs-ganesha"
fsal="$(dpkg-query -L nfs-ganesha-vfs 2>/dev/null | grep -m 1 '/libfsalvfs\.so$' || true)"
[[ -n "$fsal" ]] || die 'the VFS FSAL (libfsalvfs.so) is missing: apt-get install nfs-ganesha-vfs'
command -v rpcbind >/dev/null || [[ -x /usr/sbin/rpcbind ]] || die 'rpcbind is missing'
say "ganesha.nfsd: $nfsd; VFS FSAL: $fsal"
echo "$nfsd"
