#!/usr/bin/env bash
# checksum.sh DISK.raw: prints  sha256=<hex> boots=<n>  for a test-VM disk
# made by build.sh (or a bare ext4 image of its root fs), read without mounting:
#   <hex>  what the guest's heartbeat prints: sha256 of the sha256sum listing
#          ('<hex>  <name>' lines) of the regular files in /data except
#          boot-count, by name in byte order
#   <n>    the current /data/boot-count (0 in a fresh image)
# After a boot the guest prints  IVMR-HEARTBEAT sha256=<hex> boots=<n+1>  and
# leaves boots=<n+1> on the disk. Needs debugfs (e2fsprogs) and coreutils.
set -euo pipefail
export PATH=$PATH:/usr/sbin:/sbin LC_ALL=C

[ $# -eq 1 ] || { echo "usage: $0 DISK.raw" >&2; exit 2; }
img=$1
[ -r "$img" ] || { echo "checksum.sh: cannot read $img" >&2; exit 1; }
command -v debugfs >/dev/null || { echo "checksum.sh: needs debugfs (apt-get install e2fsprogs)" >&2; exit 1; }

# byte offset of the root fs: the first Linux (0x83) MBR partition, else 0
le32() { od -An -t u4 -j "$2" -N 4 "$1" | tr -d ' '; }
offset=0
if [ "$(od -An -t x1 -j 510 -N 2 "$img" | tr -d ' ')" = 55aa ]; then
  for p in 0 1 2 3; do
    e=$((446 + 16 * p))
    if [ "$(od -An -t x1 -j $((e + 4)) -N 1 "$img" | tr -d ' ')" = 83 ]; then
      offset=$(($(le32 "$img" $((e + 8))) * 512))
      break
    fi
  done
fi

# debugfs opens FILE?offset=BYTES (an e2fsprogs io option) read-only
fs="$img?offset=$offset"
tmp=
cleanup() { [ -z "$tmp" ] || rm -rf "$tmp"; }
trap cleanup EXIT

# A disk copied while the guest ran (crash-consistent) may hold an unreplayed
# journal that debugfs would not see: replay it on a scratch copy.
if dumpe2fs -h "$fs" 2>/dev/null | grep -q '^Filesystem features:.*needs_recovery'; then
  tmp=$(mktemp -d)
  blocks=$(dumpe2fs -h "$fs" 2>/dev/null | awk -F: '/^Block count/ { gsub(/ /, "", $2); print $2 }')
  bsize=$(dumpe2fs -h "$fs" 2>/dev/null | awk -F: '/^Block size/ { gsub(/ /, "", $2); print $2 }')
  dd if="$img" of="$tmp/root.img" bs=512 skip=$((offset / 512)) count=$((blocks * bsize / 512)) \
    conv=sparse status=none
  e2fsck -y -E journal_only "$tmp/root.img" >/dev/null 2>&1 || true
  fs="$tmp/root.img"
fi

dbg() { debugfs -R "$1" "$fs" 2>/dev/null; }

# ls -p: /inode/mode/uid/gid/name/size/ per entry; keep regular files
listing=$(dbg "ls -p /data")
[ -n "$listing" ] || { echo "checksum.sh: no /data in the root fs of $img (offset $offset)" >&2; exit 1; }
names=$(awk -F/ '$3 ~ /^100/ { print $6 }' <<<"$listing" | sort)

boots=0
sum=$(for f in $names; do
        [ "$f" = boot-count ] && continue
        printf '%s  %s\n' "$(dbg "cat /data/$f" | sha256sum | cut -d' ' -f1)" "$f"
      done | sha256sum | cut -d' ' -f1)
if grep -qx boot-count <<<"$names"; then
  boots=$(dbg "cat /data/boot-count" | tr -d ' \n')
  case $boots in ''|*[!0-9]*) boots=0 ;; esac
fi
echo "sha256=$sum boots=$boots"
