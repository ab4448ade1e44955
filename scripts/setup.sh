#!/usr/bin/env bash
# One-time set-up on a fresh Debian machine with Node 20, npm and root: Debian packages the tests
# and the demo need (installed only when missing), the pinned pnpm, the workspace's dependencies
# and a build. Safe to run again; it does only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PNPM_VERSION=10.34.8
export PNPM="npx -y pnpm@${PNPM_VERSION}"
# Daemons and mkfs live in sbin, which a non-root PATH may lack.
export PATH="$PATH:/usr/sbin:/sbin"

# command -> Debian package that provides it
declare -A NEEDED=(
  [qemu-img]=qemu-utils
  [qemu-io]=qemu-utils
  [qemu-system-x86_64]=qemu-system-x86
  [nfs-ls]=libnfs-utils
  [rpcbind]=rpcbind
  [rpcinfo]=rpcbind
  [mkfs.ext4]=e2fsprogs
  [debugfs]=e2fsprogs
)
# The tests of @ivmr/store-s3 run a single-node Ceph cluster with its S3 gateway
# (scripts/ceph/cluster.sh); the demo does not need it.
if [ "${1:-}" = "--tests" ]; then
  NEEDED+=(
    [ceph-mon]=ceph-mon
    [ceph-osd]=ceph-osd
    [ceph-mgr]=ceph-mgr
    [radosgw]=radosgw
    [monmaptool]=ceph-base
    [ceph]=ceph-common
    [radosgw-admin]=ceph-common
  )
fi
# file -> Debian package that provides it (qemu's nfs:// driver is a module, not a command)
declare -A NEEDED_FILES=(
  [/usr/lib/x86_64-linux-gnu/qemu/block-nfs.so]=qemu-block-extra
)
missing=()
for cmd in "${!NEEDED[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${NEEDED[$cmd]}")
done
for file in "${!NEEDED_FILES[@]}"; do
  [ -e "$file" ] || missing+=("${NEEDED_FILES[$file]}")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -d node_modules/.pnpm ] || [ pnpm-lock.yaml -nt node_modules/.modules.yaml ]; then
  $PNPM install --frozen-lockfile --reporter=append-only
fi
$PNPM run build >/dev/null
