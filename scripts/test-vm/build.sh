#!/usr/bin/env bash
# Builds a small bootable x86-64 BIOS disk image for ivmr boot verification
# (issue #9) from Debian packages only, and prints its absolute path on stdout
# as the last line. Logs go to stderr. See README.md beside this file.
#
#   build.sh                        build (or reuse the cached) image
#   build.sh --check[=IF[,IF...]]   also boot a copy under qemu (TCG) once per
#                                   IF (ide, virtio, scsi; default ide) and
#                                   verify its heartbeat line
#
# Environment:
#   IVMR_CACHE            cache root (default ~/.cache); the image goes to
#                         $IVMR_CACHE/ivmr-test-vm/<key>/disk.raw
#   IVMR_TEST_VM_KERNEL   Debian kernel flavour (default cloud-amd64; amd64 works too)
#   IVMR_TEST_VM_TIMEOUT  seconds one self-check boot may take (default 60)
set -euo pipefail

SELF=$(readlink -f "${BASH_SOURCE[0]}")
HERE=$(dirname "$SELF")

FLAVOUR=${IVMR_TEST_VM_KERNEL:-cloud-amd64}
CACHE_BASE=$(realpath -m "${IVMR_CACHE:-${HOME:?HOME or IVMR_CACHE must be set}/.cache}/ivmr-test-vm")
BOOT_TIMEOUT=${IVMR_TEST_VM_TIMEOUT:-60}
export PATH=$PATH:/usr/sbin:/sbin   # a non-login root shell may lack sbin

# Disk layout, in 512-byte sectors: 64 MiB, MBR, FAT16 boot partition
# (syslinux, kernel, initramfs) and an ext4 root partition (label ivmr-root).
DISK_SECTORS=131072                                   # 64 MiB
P1_START=2048 P1_SECTORS=49152                        # 1 MiB .. 25 MiB
P2_START=$((P1_START + P1_SECTORS))                   # 25 MiB ..
P2_SECTORS=$((DISK_SECTORS - P2_START))               # 39 MiB
ROOT_LABEL=ivmr-root
ROOT_UUID=6c1f0b1e-1a7d-4e55-9b9e-1f0c2a7d3e01        # fixed, like the FAT serial and MBR id
DATA_RANDOM_BYTES=393216                              # 384 KiB of pseudo-random data

log() { printf 'test-vm: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() { sed -n '2,17s/^# \{0,1\}//p' "$SELF" >&2; }

CHECK_IFS=
while [ $# -gt 0 ]; do
  case $1 in
    --check) CHECK_IFS=ide ;;
    --check=*) CHECK_IFS=${1#--check=} ;;
    -h|--help) usage; exit 0 ;;
    *) usage; die "unknown argument: $1" ;;
  esac
  shift
done
for i in ${CHECK_IFS//,/ }; do
  case $i in ide|virtio|scsi) ;; *) die "--check: unknown interface '$i' (ide, virtio, scsi)" ;; esac
done

# ---------------------------------------------------------------- packages

APT_UPDATED=
apt_update() {
  [ -n "$APT_UPDATED" ] && return 0
  [ "$(id -u)" = 0 ] || die "apt lists are missing or stale; run 'apt-get update' as root"
  log "apt-get update"
  apt-get update -qq >&2 || die "apt-get update failed"
  APT_UPDATED=1
}

apt_install() {
  [ $# -gt 0 ] || return 0
  [ "$(id -u)" = 0 ] || die "missing packages: $*; install them as root: apt-get install -y --no-install-recommends $*"
  log "installing: $*"
  export DEBIAN_FRONTEND=noninteractive
  if [ -z "$APT_UPDATED" ] && ! apt-cache show --no-all-versions "$@" >/dev/null 2>&1; then apt_update; fi
  if ! apt-get install -y -qq -o Dpkg::Use-Pty=0 --no-install-recommends "$@" >&2; then
    apt_update
    apt-get install -y -qq -o Dpkg::Use-Pty=0 --no-install-recommends "$@" >&2 || die "apt-get install $* failed"
  fi
}

# ensure_tools CMD:PACKAGE ... installs the packages whose command is missing
# (a CMD starting with / is a file that must exist instead).
ensure_tools() {
  local spec cmd pkg missing=()
  for spec in "$@"; do
    cmd=${spec%%:*} pkg=${spec#*:}
    if [ "${cmd#/}" != "$cmd" ]; then
      [ -e "$cmd" ] && continue
    else
      command -v "$cmd" >/dev/null 2>&1 && continue
    fi
    case " ${missing[*]-} " in *" $pkg "*) ;; *) missing+=("$pkg") ;; esac
  done
  apt_install "${missing[@]}"
}

# apt_field RECORDS FIELD: the value of FIELD in the first apt-cache record
apt_field() { awk -v f="$2:" '$1 == f { sub(/^[^:]*: */, ""); print; exit }' <<<"$1"; }

# Resolves linux-image-$FLAVOUR to the concrete kernel package and version,
# and the busybox-static version (two apt-cache calls).
resolve_packages() {
  local meta=linux-image-$FLAVOUR recs dep
  if ! recs=$(apt-cache show --no-all-versions "$meta" 2>/dev/null) || [ -z "$recs" ]; then
    apt_update
    recs=$(apt-cache show --no-all-versions "$meta" 2>/dev/null) || die "no package $meta"
  fi
  # Depends: linux-image-6.1.0-57-cloud-amd64 (= 6.1.192-3)
  dep=$(apt_field "$recs" Depends | tr ',' '\n' | grep -m1 -o 'linux-image-[^ ]*.*') ||
    die "cannot find the kernel package $meta depends on"
  KPKG=$(awk '{print $1}' <<<"$dep")
  KVER=$(sed -n 's/.*(= *\([^)]*\)).*/\1/p' <<<"$dep")
  if [ -z "$KVER" ]; then
    KVER=$(apt_field "$(apt-cache show --no-all-versions "$KPKG")" Version)
  fi
  KABI=${KPKG#linux-image-}
  BBVER=$(apt_field "$(apt-cache show --no-all-versions busybox-static 2>/dev/null)" Version)
  { [ -n "$KVER" ] && [ -n "$BBVER" ]; } || die "cannot resolve package versions (kernel '$KVER', busybox-static '$BBVER')"
}

# fetch_deb PACKAGE VERSION: path of the .deb, downloaded once into the cache
fetch_deb() {
  local pkg=$1 ver=$2 dir="$CACHE_BASE/debs" f dl
  f="$dir/${pkg}_${ver//:/%3a}_amd64.deb"
  if [ ! -s "$f" ]; then
    mkdir -p "$dir"
    dl=$(mktemp -d "$dir/.dl.XXXXXX")
    log "downloading $pkg=$ver"
    local sandbox=()
    [ "$(id -u)" = 0 ] && sandbox=(-o APT::Sandbox::User=root)
    (cd "$dl" && apt-get download -qq "${sandbox[@]}" "$pkg=$ver" >&2) ||
      { rm -rf "$dl"; log "apt-get download $pkg=$ver failed"; return 1; }
    mv "$dl"/*.deb "$f"
    rm -rf "$dl"
  fi
  printf '%s\n' "$f"
}

# ---------------------------------------------------------------- cache key

# apt-cache takes ~1 s per call where apt keeps no pkgcache.bin (Docker-style
# images), so the resolution is remembered for as long as apt's package lists
# and preferences stay the same (a cache hit must take < 1 s).
apt_fingerprint() {
  local f=()
  shopt -s nullglob
  f=(/var/lib/apt/lists/*_Packages* /etc/apt/preferences[^.]* /etc/apt/preferences.d/*)
  shopt -u nullglob
  { echo "$FLAVOUR"; [ ${#f[@]} -eq 0 ] || stat -c '%n %s %Y' "${f[@]}"; } | sha256sum | cut -c1-64
}
RESOLVED="$CACHE_BASE/resolved-$FLAVOUR"
SCRIPT_HASH=$(sha256sum "$SELF" | cut -c1-64)

# set_key [fresh]: KPKG KVER KABI BBVER, KEY, OUT_DIR and DISK
set_key() {
  local fp tmp_resolved
  fp=$(apt_fingerprint)
  KPKG='' KVER='' BBVER='' KABI=''
  if [ "${1-}" != fresh ] && [ -f "$RESOLVED" ] && [ "$(sed -n 1p "$RESOLVED")" = "$fp" ]; then
    { read -r _; read -r KPKG; read -r KVER; read -r BBVER; } <"$RESOLVED"
    KABI=${KPKG#linux-image-}
  fi
  if [ -z "$KPKG" ] || [ -z "$KVER" ] || [ -z "$BBVER" ]; then
    resolve_packages
    fp=$(apt_fingerprint)   # an apt-get update may have changed it
    mkdir -p "$CACHE_BASE"
    tmp_resolved=$(mktemp "$RESOLVED.XXXXXX")
    printf '%s\n' "$fp" "$KPKG" "$KVER" "$BBVER" >"$tmp_resolved"
    mv -f "$tmp_resolved" "$RESOLVED"
  fi
  local h
  h=$(printf 'script=%s\nkernel=%s=%s\nbusybox=%s\n' "$SCRIPT_HASH" "$KPKG" "$KVER" "$BBVER" |
    sha256sum | cut -c1-16)
  KEY="${KPKG}_${KVER//:/_}-$h"
  OUT_DIR="$CACHE_BASE/$KEY"
  DISK="$OUT_DIR/disk.raw"
}

# fetch_debs: KDEB and BBDEB; stale apt lists (a version gone from the mirror)
# get one apt-get update and a new resolution, hence maybe a new key.
fetch_debs() {
  if ! KDEB=$(fetch_deb "$KPKG" "$KVER") || ! BBDEB=$(fetch_deb busybox-static "$BBVER"); then
    [ -z "$APT_UPDATED" ] || die "cannot download the packages"
    apt_update
    set_key fresh
    [ -f "$DISK" ] && return 0
    { KDEB=$(fetch_deb "$KPKG" "$KVER") && BBDEB=$(fetch_deb busybox-static "$BBVER"); } ||
      die "cannot download the packages"
  fi
}

# ---------------------------------------------------------------- build

# Files of the root fs that the guest reads at boot. /ivmr/heartbeat.sh runs
# from the disk (not the initramfs); it is given the mount point of the root.
write_heartbeat() {
  cat >"$1" <<'EOF'
#!/bin/sh
# ivmr test VM heartbeat: runs at every boot from the root fs (mounted at $1).
# Prints one line  IVMR-HEARTBEAT sha256=<hex> boots=<n>  on the console, then
# powers the VM off. <hex> is the sha256 of the sha256sum listing of every
# regular file in /data except boot-count, by name in byte order; <n> is
# /data/boot-count after this boot (0 in a fresh image, so 1 at the first boot).
root=${1:-/}
cd "$root/data" || exit 1
sum=$(for f in $(ls | LC_ALL=C sort); do
        [ "$f" = boot-count ] && continue
        [ -f "$f" ] && sha256sum "$f"
      done | sha256sum | cut -d' ' -f1)
[ ${#sum} -eq 64 ] || exit 1
n=$(cat boot-count 2>/dev/null || echo 0)
case $n in ''|*[!0-9]*) n=0 ;; esac
n=$((n + 1))
echo "$n" >boot-count.new && mv boot-count.new boot-count || exit 1
cd /
sync
# Print only once the count is on the disk, so a seen heartbeat is a durable one.
mount -o remount,ro "$root" || umount "$root" || exit 1
echo "IVMR-HEARTBEAT sha256=$sum boots=$n"
poweroff -f
EOF
  chmod 755 "$1"
}

# /init of the initramfs (busybox sh): modules, find and mount the root, run
# the heartbeat script from it. Every failure ends with IVMR-ERROR + poweroff.
write_init() {
  cat >"$1" <<'EOF'
#!/bin/sh
export PATH=/bin
/bin/busybox --install -s /bin
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys

fail() {
  echo "IVMR-ERROR $*"
  sync
  poweroff -f
  sleep 5
  reboot -f
}

while read -r m; do
  insmod "/lib/modules/$m" || echo "ivmr-init: insmod $m failed"
done </etc/ivmr-modules

# Find the root fs by label; fall back to the usual second partitions.
dev= i=0
while [ $i -lt 200 ]; do
  dev=$(findfs LABEL=ivmr-root 2>/dev/null) && [ -b "$dev" ] && break
  dev=
  usleep 50000
  i=$((i + 1))
done
if [ -z "$dev" ]; then
  for d in /dev/sda2 /dev/vda2 /dev/hda2; do [ -b "$d" ] && { dev=$d; break; }; done
fi
[ -n "$dev" ] || fail "no root fs (LABEL=ivmr-root, /dev/sda2, /dev/vda2)"
echo "ivmr-init: root fs on $dev"
mkdir -p /mnt
mount -t ext4 -o rw "$dev" /mnt || fail "mount $dev failed"
[ -f /mnt/ivmr/heartbeat.sh ] || fail "no /ivmr/heartbeat.sh on $dev"
# keep kernel messages from splitting the heartbeat line
echo 1 >/proc/sys/kernel/printk
sh /mnt/ivmr/heartbeat.sh /mnt || fail "heartbeat.sh exited with $?"
fail "heartbeat.sh returned"
EOF
  chmod 755 "$1"
}

# 384 KiB of deterministic pseudo-random bytes (xorshift32; perl-base is
# essential in Debian, so it is always there).
write_random() {
  perl -e 'my $x = 0x2545F491; my $n = $ARGV[0] / 4; my $s = "";
           for (1 .. $n) { $x ^= ($x << 13) & 0xffffffff; $x ^= $x >> 17;
                           $x ^= ($x << 5) & 0xffffffff; $s .= pack("V", $x); }
           print $s' "$DATA_RANDOM_BYTES" >"$1"
}

# Module list: storage for ide (ata_piix), ahci, virtio-blk, virtio-scsi, and
# ext4. Dependencies come from the kernel's modules.dep; builtins are skipped.
REQUIRED_MODULES="sd_mod ata_piix virtio_pci virtio_blk virtio_scsi ext4"
OPTIONAL_MODULES="ata_generic ahci crc32c_generic"

# resolve_modules MODDIR: prints the .ko paths (relative to MODDIR) to load,
# dependencies first.
resolve_modules() {
  local moddir=$1
  awk -v req="$REQUIRED_MODULES" -v opt="$OPTIONAL_MODULES" '
    function norm(p,  b) { b = p; sub(/.*\//, "", b); sub(/\.ko(\.(xz|zst|gz))?$/, "", b); gsub(/-/, "_", b); return b }
    function visit(m,  i, n, d) {
      if (m in done) return
      done[m] = 1
      n = split(deps[m], d, " ")
      # modules.dep lists every dependency, the deepest last: load from the end
      for (i = n; i >= 1; i--) visit(norm(d[i]))
      print path[m]
    }
    FILENAME ~ /modules\.builtin$/ { builtin[norm($0)] = 1; next }
    {
      p = $1; sub(/:$/, "", p); m = norm(p); path[m] = p
      $1 = ""; deps[m] = $0
    }
    END {
      nr = split(req, r, " "); no = split(opt, o, " ")
      for (i = 1; i <= nr; i++) {
        if (r[i] in builtin) continue
        if (!(r[i] in path)) { print "missing required module " r[i] > "/dev/stderr"; bad = 1; continue }
        visit(r[i])
      }
      for (i = 1; i <= no; i++) if ((o[i] in path) && !(o[i] in builtin)) visit(o[i])
      exit bad
    }' "$moddir/modules.builtin" "$moddir/modules.dep"
}

build() {
  ensure_tools sfdisk:fdisk mkfs.fat:dosfstools mcopy:mtools syslinux:syslinux \
    /usr/lib/syslinux/mbr/mbr.bin:syslinux-common mkfs.ext4:e2fsprogs debugfs:e2fsprogs \
    cpio:cpio gzip:gzip depmod:kmod dpkg-deb:dpkg perl:perl-base

  mkdir -p "$CACHE_BASE"
  local work
  work=$(mktemp -d "$CACHE_BASE/.build.XXXXXX")
  # shellcheck disable=SC2064
  trap "rm -rf '$work'" EXIT

  local kdeb=$KDEB bbdeb=$BBDEB

  log "extracting $KPKG $KVER"
  mkdir -p "$work/kernel" "$work/busybox"
  dpkg-deb -x "$kdeb" "$work/kernel"
  dpkg-deb -x "$bbdeb" "$work/busybox"
  local vmlinuz="$work/kernel/boot/vmlinuz-$KABI" moddir
  [ -f "$vmlinuz" ] || die "no /boot/vmlinuz-$KABI in $kdeb"
  # merged-/usr kernels ship /usr/lib/modules; depmod -b looks in lib/modules
  if [ ! -d "$work/kernel/lib/modules/$KABI" ] && [ -d "$work/kernel/usr/lib/modules/$KABI" ]; then
    ln -s usr/lib "$work/kernel/lib"
  fi
  moddir="$work/kernel/lib/modules/$KABI"
  [ -d "$moddir" ] || die "no modules for $KABI in $kdeb"
  [ -s "$moddir/modules.dep" ] || depmod -b "$work/kernel" "$KABI"

  # ---- initramfs
  local initrd="$work/initrd" m ko mods
  mkdir -p "$initrd"/{bin,dev,etc,lib/modules,mnt,proc,sys}
  cp "$work/busybox/bin/busybox" "$initrd/bin/busybox"
  ln -s busybox "$initrd/bin/sh"
  [ "$(id -u)" = 0 ] && mknod -m 600 "$initrd/dev/console" c 5 1
  mods=$(resolve_modules "$moddir") || die "module resolution failed"
  : >"$initrd/etc/ivmr-modules"
  for m in $mods; do
    ko=${m##*/}
    case $ko in
      *.ko.xz) ensure_tools xz:xz-utils; xz -dc "$moddir/$m" >"$initrd/lib/modules/${ko%.xz}"; ko=${ko%.xz} ;;
      *.ko.zst) ensure_tools zstd:zstd; zstd -qdc "$moddir/$m" >"$initrd/lib/modules/${ko%.zst}"; ko=${ko%.zst} ;;
      *.ko.gz) gzip -dc "$moddir/$m" >"$initrd/lib/modules/${ko%.gz}"; ko=${ko%.gz} ;;
      *) cp "$moddir/$m" "$initrd/lib/modules/$ko" ;;
    esac
    echo "$ko" >>"$initrd/etc/ivmr-modules"
  done
  log "modules: $(tr '\n' ' ' <"$initrd/etc/ivmr-modules")"
  write_init "$initrd/init"
  find "$initrd" -exec touch -h -d @0 {} +
  (cd "$initrd" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --reproducible --quiet | gzip -9n) >"$work/initrd.img"

  # ---- root fs (ext4, built from a directory: no mount)
  local root="$work/root"
  mkdir -p "$root/ivmr" "$root/data"
  write_heartbeat "$root/ivmr/heartbeat.sh"
  cat >"$root/data/readme.txt" <<'EOF'
ivmr test VM data. The heartbeat at every boot hashes the files of this
directory (all but boot-count), so a restored point can be compared with the
files the host reads from the backed-up disk.
EOF
  seq 1 20000 >"$root/data/numbers.txt"
  write_random "$root/data/random.bin"
  echo 0 >"$root/data/boot-count"
  find "$root" -exec touch -h -d @0 {} +
  truncate -s "$((P2_SECTORS * 512))" "$work/root.img"
  mkfs.ext4 -q -F -L "$ROOT_LABEL" -U "$ROOT_UUID" \
    -E root_owner=0:0,hash_seed="$ROOT_UUID" -d "$root" "$work/root.img" "$((P2_SECTORS / 2))k" >&2

  # ---- boot fs (FAT16: syslinux.cfg, kernel, initramfs)
  cat >"$work/syslinux.cfg" <<'EOF'
SERIAL 0 115200
DEFAULT ivmr
PROMPT 0
TIMEOUT 0
LABEL ivmr
  LINUX /vmlinuz
  INITRD /initrd.img
  APPEND console=ttyS0,115200 panic=-1 quiet
EOF
  export MTOOLS_SKIP_CHECK=1
  touch -d @0 "$work/syslinux.cfg" "$work/initrd.img"
  mkfs.fat -F 16 -n IVMR-BOOT -i 1f0c2a7d -h "$P1_START" -C "$work/boot.img" "$((P1_SECTORS / 2))" >/dev/null
  mcopy -m -i "$work/boot.img" "$vmlinuz" ::/vmlinuz
  mcopy -m -i "$work/boot.img" "$work/initrd.img" ::/initrd.img
  mcopy -m -i "$work/boot.img" "$work/syslinux.cfg" ::/syslinux.cfg

  # ---- disk: MBR (syslinux mbr.bin), partition 1 active
  local disk="$work/out/disk.raw"
  mkdir -p "$work/out"
  truncate -s "$((DISK_SECTORS * 512))" "$disk"
  sfdisk --quiet --no-reread --no-tell-kernel "$disk" >&2 <<EOF
label: dos
label-id: 0x1f0c2a7d
unit: sectors
start=$P1_START, size=$P1_SECTORS, type=e, bootable
start=$P2_START, size=$P2_SECTORS, type=83
EOF
  dd if=/usr/lib/syslinux/mbr/mbr.bin of="$disk" bs=440 count=1 conv=notrunc status=none
  dd if="$work/boot.img" of="$disk" bs=512 seek="$P1_START" conv=notrunc,sparse status=none
  dd if="$work/root.img" of="$disk" bs=512 seek="$P2_START" conv=notrunc,sparse status=none
  syslinux --install --offset "$((P1_START * 512))" "$disk"
  MTOOLS_SKIP_CHECK=1 mdir -a -i "$disk@@$((P1_START * 512))" ::/ldlinux.sys >/dev/null ||
    die "syslinux did not install ldlinux.sys"

  # ---- sanity: the host-side checksum works on the new image
  local sum
  sum=$(bash "$HERE/checksum.sh" "$disk") || die "checksum.sh failed on the new image"
  case $sum in "sha256="*" boots=0") ;; *) die "unexpected checksum.sh output: $sum" ;; esac

  cat >"$work/out/info.txt" <<EOF
kernel=$KPKG=$KVER
busybox-static=$BBVER
script-sha256=$SCRIPT_HASH
modules=$(tr '\n' ' ' <"$initrd/etc/ivmr-modules" | sed 's/ $//')
vmlinuz-bytes=$(stat -c %s "$vmlinuz")
initrd-bytes=$(stat -c %s "$work/initrd.img")
disk-bytes=$(stat -c %s "$disk")
initial=$sum
EOF
  chmod 444 "$disk"

  # atomic publish: rename the finished directory into place
  if ! mv -T "$work/out" "$OUT_DIR" 2>/dev/null; then
    [ -f "$DISK" ] || die "cannot move the image to $OUT_DIR"
    log "another build published $KEY first; using it"
  fi
  log "built $DISK ($(du -k "$DISK" | cut -f1) KiB allocated, $sum)"
}

# ---------------------------------------------------------------- self-check

# check_boot IF: boot a copy once and verify the heartbeat against checksum.sh
check_boot() {
  local ifc=$1 tmp copy serial expect got lines t0 t1 rc=0 drive
  tmp=$(mktemp -d)
  copy="$tmp/disk.raw"
  serial="$tmp/serial.log"
  cp --sparse=always "$DISK" "$copy"
  chmod 644 "$copy"
  expect=$(bash "$HERE/checksum.sh" "$copy")
  local sha=${expect%% *} boots=${expect##*boots=}
  # shellcheck disable=SC2054  # commas are qemu's option syntax
  case $ifc in
    ide) drive=(-drive "file=$copy,format=raw,if=ide") ;;
    virtio) drive=(-drive "file=$copy,format=raw,if=virtio") ;;
    scsi) drive=(-device virtio-scsi-pci,id=scsi0 -drive "file=$copy,format=raw,if=none,id=d0"
                 -device scsi-hd,drive=d0,bus=scsi0.0) ;;
  esac
  log "check ($ifc): booting a copy under qemu TCG (timeout ${BOOT_TIMEOUT}s)"
  t0=$(date +%s.%N)
  timeout "$BOOT_TIMEOUT" qemu-system-x86_64 -accel tcg -m 256 -display none -no-reboot \
    -serial stdio -monitor none -nic none "${drive[@]}" </dev/null >"$serial" 2>&1 || rc=$?
  t1=$(date +%s.%N)
  local secs
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
  lines=$(tr -d '\r' <"$serial" | grep -a '^IVMR-HEARTBEAT ' || true)
  got=$(bash "$HERE/checksum.sh" "$copy" || true)
  local want="IVMR-HEARTBEAT $sha boots=$((boots + 1))"
  if [ "$rc" = 0 ] && [ "$lines" = "$want" ] && [ "$got" = "$sha boots=$((boots + 1))" ]; then
    log "check ($ifc): ok in ${secs}s: $lines"
    rm -rf "$tmp"
    return 0
  fi
  log "check ($ifc): FAILED after ${secs}s (qemu exit $rc)"
  log "  wanted:    $want"
  log "  heartbeat: ${lines:-<none>}"
  log "  disk now:  ${got:-<unreadable>}"
  log "  serial log tail ($serial):"
  tr -d '\r' <"$serial" | tail -n 25 | sed 's/^/    /' >&2
  return 1
}

set_key
if [ -f "$DISK" ]; then
  log "cache hit: $KEY"
else
  t_start=$(date +%s)
  fetch_debs
  if [ -f "$DISK" ]; then
    log "cache hit: $KEY"
  else
    log "building $KEY"
    build
    log "build took $(($(date +%s) - t_start))s"
  fi
fi

if [ -n "$CHECK_IFS" ]; then
  ensure_tools qemu-system-x86_64:qemu-system-x86 debugfs:e2fsprogs
  failed=0
  for i in ${CHECK_IFS//,/ }; do check_boot "$i" || failed=1; done
  [ "$failed" = 0 ] || die "self-check failed"
fi

printf '%s\n' "$DISK"
