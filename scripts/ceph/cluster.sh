#!/usr/bin/env bash
# A single-node Ceph cluster with its RADOS Gateway (S3) on loopback, for tests and benchmarks of
# S3 repositories (issue #8). Only its own processes, started and stopped by pid; everything
# lives in one folder. The object store is memstore (memory): the cluster's data dies with it.
#
#   bash scripts/ceph/cluster.sh start DIR    # prints KEY=VALUE lines: S3 endpoint and keys
#   bash scripts/ceph/cluster.sh stop DIR
#   bash scripts/ceph/cluster.sh status DIR
#   bash scripts/ceph/cluster.sh stop-rgw DIR     # only the gateway (fault tests), then
#   bash scripts/ceph/cluster.sh start-rgw DIR    # again on its port, with its data intact
#
# Ports: CEPH_MON_PORT (default 6789) and CEPH_RGW_PORT (default 7480), on 127.0.0.1.
# Installs ceph-mon, ceph-osd, ceph-mgr, radosgw and ceph-common (Debian) when missing (root);
# scripts/setup.sh --tests (the test command's set-up) installs them first.
set -euo pipefail

cmd=${1:-}
dir=${2:-}
if [[ -z $cmd || -z $dir ]]; then
  echo "usage: $0 start|stop|status|stop-rgw|start-rgw DIR" >&2
  exit 2
fi
mon_port=${CEPH_MON_PORT:-6789}
rgw_port=${CEPH_RGW_PORT:-7480}
log() { echo "ceph-cluster: $*" >&2; }
DAEMONS=(rgw osd mgr mon)

stop_daemon() { # pidname
  local pidfile=$dir/pids/$1.pid
  [[ -f $pidfile ]] || return 0
  local pid
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}
stop_all() {
  for d in "${DAEMONS[@]}"; do stop_daemon "$d"; done
}
start_daemon() { # name pidname args...
  local name=$1 pidname=$2
  shift 2
  setsid "$@" -f -c "$conf" >>"$dir/log/$name.out" 2>&1 </dev/null &
  echo $! >"$dir/pids/$pidname.pid"
}
# Any HTTP answer will do (node is there: the project needs it; curl may not be).
rgw_up() { node -e "fetch('http://127.0.0.1:$rgw_port/').then(() => process.exit(0), () => process.exit(1))"; }
wait_rgw() {
  for _ in $(seq 1 300); do
    rgw_up && return 0
    sleep 0.2
  done
  return 1
}

case $cmd in
stop)
  stop_all
  log "stopped (folder $dir kept)"
  exit 0
  ;;
stop-rgw)
  stop_daemon rgw
  log "radosgw stopped"
  exit 0
  ;;
start-rgw)
  dir=$(realpath -m "$dir")
  conf=$dir/ceph.conf
  # shellcheck disable=SC1091
  source "$dir/ports.env"
  [[ -f $dir/pids/mon.pid ]] || { log "no cluster in $dir"; exit 1; }
  [[ -f $dir/pids/rgw.pid ]] && kill -0 "$(cat "$dir/pids/rgw.pid")" 2>/dev/null && { log "radosgw already runs"; exit 0; }
  start_daemon rgw rgw radosgw -n client.rgw.ivmr
  wait_rgw || { log "radosgw did not answer on 127.0.0.1:$rgw_port"; exit 1; }
  log "radosgw up on 127.0.0.1:$rgw_port"
  exit 0
  ;;
status)
  for d in "${DAEMONS[@]}"; do
    pidfile=$dir/pids/$d.pid
    if [[ -f $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then echo "$d running"; else echo "$d stopped"; fi
  done
  exit 0
  ;;
start) ;;
*)
  echo "unknown command $cmd" >&2
  exit 2
  ;;
esac

# From here on the start either completes or stops what it started: a command that fails under
# `set -e` (and not in a condition) stops the daemons before the script exits.
trap 'log "start failed (line $LINENO)"; stop_all' ERR

need=()
for pkg_bin in ceph-mon:ceph-mon ceph-osd:ceph-osd ceph-mgr:ceph-mgr radosgw:radosgw ceph-common:ceph; do
  command -v "${pkg_bin#*:}" >/dev/null 2>&1 || need+=("${pkg_bin%%:*}")
done
if ((${#need[@]} > 0)); then
  if [[ $(id -u) -ne 0 ]]; then
    log "missing ${need[*]}: install them (apt-get install ${need[*]}) or run as root"
    exit 1
  fi
  log "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Other set-up scripts may hold dpkg's lock meanwhile: wait for it.
  apt=(apt-get -o DPkg::Lock::Timeout=300)
  "${apt[@]}" install -y --no-install-recommends "${need[@]}" >&2 ||
    { "${apt[@]}" update >&2 && "${apt[@]}" install -y --no-install-recommends "${need[@]}" >&2; }
fi

dir=$(realpath -m "$dir")
if [[ -e $dir/pids ]] && ls "$dir"/pids/*.pid >/dev/null 2>&1; then
  log "$dir already holds a cluster: stop it first"
  exit 1
fi
rm -rf "$dir"
mkdir -p "$dir"/{mon,osd,mgr,rgw,run,log,pids}
conf=$dir/ceph.conf
echo "mon_port=$mon_port rgw_port=$rgw_port" >"$dir/ports.env"
fsid=$(cat /proc/sys/kernel/random/uuid)
cat >"$conf" <<CONF
[global]
fsid = $fsid
mon host = [v1:127.0.0.1:$mon_port]
mon initial members = a
public addr = 127.0.0.1
ms bind msgr2 = false
auth cluster required = none
auth service required = none
auth client required = none
auth supported = none
osd objectstore = memstore
memstore device bytes = ${CEPH_MEMSTORE_BYTES:-2147483648}
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd crush chooseleaf type = 0
# The OSD's own start-up commands to the monitor (crush location, device class) sometimes leave
# before its monitor client has the monmap, carry fsid 0, are refused ('wrong fsid'), and the OSD
# never boots. The script places the OSD in the CRUSH map itself.
osd crush update on start = false
osd class update on start = false
mon allow pool size one = true
mon allow pool delete = true
mon data avail warn = 1
mon data avail crit = 0
mon warn on pool no redundancy = false
run dir = $dir/run
admin socket = $dir/run/\$name.asok
log file = $dir/log/\$name.log
mon data = $dir/mon
osd data = $dir/osd
mgr data = $dir/mgr
keyring = $dir/keyring

[client.rgw.ivmr]
rgw frontends = beast endpoint=127.0.0.1:$rgw_port tcp_nodelay=1
rgw data = $dir/rgw
rgw dns name = 127.0.0.1
CONF

fail() {
  log "$1; see $dir/log"
  tail -n 20 "$dir"/log/*.out "$dir"/log/*.log >&2 2>/dev/null || true
  stop_all
  exit 1
}
ceph_() { timeout 30 ceph -c "$conf" "$@"; }
# The ceph command's monitor client sometimes sends before it has the monmap, and the monitor
# refuses it ('wrong fsid', EPERM): commands that change the cluster are tried again (they are
# idempotent: the same uuid gives the same OSD id).
ceph_retry() {
  local out
  for attempt in 1 2 3 4 5; do
    if out=$(ceph_ "$@" 2>&1); then
      printf '%s\n' "$out"
      return 0
    fi
    log "ceph $1 $2 failed (attempt $attempt): $out"
    sleep 1
  done
  return 1
}

monmaptool --create --addv a "[v1:127.0.0.1:$mon_port]" --fsid "$fsid" "$dir/monmap" >/dev/null
ceph-mon --mkfs -i a --monmap "$dir/monmap" -c "$conf" >/dev/null 2>&1 || fail "ceph-mon --mkfs failed"
start_daemon mon mon ceph-mon -i a
for _ in $(seq 1 100); do ceph_ -s >/dev/null 2>&1 && break; sleep 0.2; done
ceph_ -s >/dev/null 2>&1 || fail "the monitor did not answer"
# Another cluster's monitor on the same port would answer too: make sure it is ours.
kill -0 "$(cat "$dir/pids/mon.pid")" 2>/dev/null || fail "the monitor exited (port $mon_port taken?)"
[[ $(ceph_ fsid 2>/dev/null) == "$fsid" ]] || fail "port $mon_port answers for another cluster"
log "monitor up on 127.0.0.1:$mon_port"

start_daemon mgr mgr ceph-mgr -i x

osd_uuid=$(cat /proc/sys/kernel/random/uuid)
osd_id=$(ceph_retry osd new "$osd_uuid" | tail -n 1) || fail "ceph osd new failed"
[[ $osd_id =~ ^[0-9]+$ ]] || fail "ceph osd new printed no id: $osd_id"
osd_up() { ceph_ osd stat 2>/dev/null | grep -q "1 up"; }
ceph_retry osd crush add "osd.$osd_id" 1.0 host=localhost root=default >/dev/null ||
  fail "ceph osd crush add failed"
# An OSD that has not booted after about 30 s is made again and restarted (twice at most).
for attempt in 1 2 3; do
  rm -rf "$dir/osd" && mkdir -p "$dir/osd"
  ceph-osd -i "$osd_id" --mkfs --osd-uuid "$osd_uuid" -c "$conf" >/dev/null 2>&1 || fail "ceph-osd --mkfs failed"
  start_daemon osd osd ceph-osd -i "$osd_id"
  for _ in $(seq 1 25); do
    osd_up && break
    sleep 0.5
  done
  osd_up && break
  log "the OSD did not come up (attempt $attempt)"
  pid=$(cat "$dir/pids/osd.pid")
  kill -KILL "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  rm -f "$dir/pids/osd.pid"
done
osd_up || fail "the OSD did not come up"
log "osd.$osd_id up (memstore)"

start_daemon rgw rgw radosgw -n client.rgw.ivmr
wait_rgw || fail "radosgw did not answer on 127.0.0.1:$rgw_port"
# A radosgw that cannot bind its port exits; another one may be answering there instead.
sleep 1
kill -0 "$(cat "$dir/pids/rgw.pid")" 2>/dev/null || fail "radosgw exited (port $rgw_port taken?)"
access=ivmr$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')
secret=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
timeout 60 radosgw-admin -c "$conf" -n client.rgw.ivmr user create --uid=ivmr --display-name=ivmr \
  --access-key="$access" --secret="$secret" >/dev/null 2>"$dir/log/user-create.err" ||
  fail "radosgw-admin user create failed"
log "radosgw up on 127.0.0.1:$rgw_port"
cat >"$dir/s3.env" <<ENV
AWS_ENDPOINT_URL=http://127.0.0.1:$rgw_port
AWS_ACCESS_KEY_ID=$access
AWS_SECRET_ACCESS_KEY=$secret
AWS_REGION=default
ENV
cat "$dir/s3.env"
