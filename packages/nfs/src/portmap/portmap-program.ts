import { isIP } from 'node:net';
import type {
  ProcedureHandler,
  RemoteInfo,
  ReplyEncoder,
  RpcCall,
  RpcProgram,
} from '../rpc/dispatcher.js';
import type { XdrReader } from '../xdr/reader.js';
import type { XdrWriter } from '../xdr/writer.js';
import {
  netidOf,
  type PortMapping,
  type PortmapRegistry,
  type RpcbEntry,
} from './portmap-registry.js';
import {
  formatUniversalAddress,
  isLoopback,
  parseUniversalAddress,
  unmapIPv4,
} from './universal-address.js';

export {
  IPPROTO_TCP,
  IPPROTO_UDP,
  type PortMapping,
  PortmapRegistry,
  type RpcbEntry,
} from './portmap-registry.js';

/** `PMAP_PROG` / `RPCBPROG` (RFC 1833). */
export const PMAP_PROGRAM = 100000;
/** `PMAP_PORT`: where clients without a port option (ESXi, qemu, Linux mount) look. */
export const PMAP_PORT = 111;

/** PMAP v2 procedures (RFC 1833 §3.2). */
export const PmapProc = { NULL: 0, SET: 1, UNSET: 2, GETPORT: 3, DUMP: 4, CALLIT: 5 } as const;

/** RPCBIND v3 and v4 procedures (RFC 1833 §2.2). */
export const RpcbProc = {
  NULL: 0,
  SET: 1,
  UNSET: 2,
  GETADDR: 3,
  DUMP: 4,
  CALLIT: 5,
  GETTIME: 6,
  UADDR2TADDR: 7,
  TADDR2UADDR: 8,
  GETVERSADDR: 9,
  INDIRECT: 10,
  GETADDRLIST: 11,
  GETSTAT: 12,
} as const;

// struct mapping {
//   unsigned int prog;
//   unsigned int vers;
//   unsigned int prot;
//   unsigned int port;
// };
/** Decodes a PMAP v2 `mapping`. */
export function readMapping(r: XdrReader): PortMapping {
  return { prog: r.u32('prog'), vers: r.u32('vers'), prot: r.u32('prot'), port: r.u32('port') };
}

/** Encodes a PMAP v2 `mapping`. */
export function writeMapping(w: XdrWriter, m: PortMapping): void {
  w.u32(m.prog).u32(m.vers).u32(m.prot).u32(m.port);
}

// struct pmaplist {
//   mapping map;
//   pmaplist *next;
// };
/** Encodes a `pmaplist` (an XDR optional-data list: TRUE, item, ..., FALSE). */
export function writePmapList(w: XdrWriter, list: readonly PortMapping[]): void {
  for (const m of list) {
    w.bool(true);
    writeMapping(w, m);
  }
  w.bool(false);
}

// struct rpcb {
//   unsigned long r_prog;   /* program number */
//   unsigned long r_vers;   /* version number */
//   string r_netid<>;       /* network id */
//   string r_addr<>;        /* universal address */
//   string r_owner<>;       /* owner of this service */
// };
/** Longest netid, universal address or owner accepted in an `rpcb` (rpcbind has no limit; ours bounds the wire). */
const RPCB_STRING_MAX = 256;

/** Decodes an `rpcb`. */
export function readRpcb(r: XdrReader): RpcbEntry {
  return {
    prog: r.u32('r_prog'),
    vers: r.u32('r_vers'),
    netid: r.string(RPCB_STRING_MAX, 'r_netid'),
    addr: r.string(RPCB_STRING_MAX, 'r_addr'),
    owner: r.string(RPCB_STRING_MAX, 'r_owner'),
  };
}

/** Encodes an `rpcb`. */
export function writeRpcb(w: XdrWriter, e: RpcbEntry): void {
  w.u32(e.prog).u32(e.vers).string(e.netid).string(e.addr).string(e.owner);
}

// struct rp__list {
//   rpcb rpcb_map;
//   struct rp__list *rpcb_next;
// };
// typedef rp__list *rpcblist_ptr;
/** Encodes an `rpcblist_ptr`. */
export function writeRpcbList(w: XdrWriter, list: readonly RpcbEntry[]): void {
  for (const e of list) {
    w.bool(true);
    writeRpcb(w, e);
  }
  w.bool(false);
}

// struct rpcb_entry {
//   string          r_maddr<>;        /* merged address of service */
//   string          r_nc_netid<>;     /* netid field */
//   unsigned long   r_nc_semantics;   /* semantics of transport */
//   string          r_nc_protofmly<>; /* protocol family */
//   string          r_nc_proto<>;     /* protocol name */
// };
// struct rpcb_entry_list {
//   rpcb_entry rpcb_entry_map;
//   struct rpcb_entry_list *rpcb_entry_next;
// };
// typedef rpcb_entry_list *rpcb_entry_list_ptr;
/** Encodes an `rpcb_entry_list_ptr` from (merged address, netid) pairs. */
export function writeRpcbEntryList(
  w: XdrWriter,
  list: readonly { addr: string; netid: string }[],
): void {
  for (const { addr, netid } of list) {
    const tcp = netid.startsWith('tcp');
    w.bool(true);
    w.string(addr).string(netid);
    // NC_TPI_COTS_ORD = 3 for TCP, NC_TPI_CLTS = 1 for UDP (RFC 1833 §2.1).
    w.u32(tcp ? 3 : 1);
    w.string(netid.endsWith('6') ? 'inet6' : 'inet').string(tcp ? 'tcp' : 'udp');
  }
  w.bool(false);
}

/** A reply encoder that appends no data after the body. */
const encoder =
  (write: (w: XdrWriter) => void): ReplyEncoder =>
  (w) => {
    write(w);
    return undefined;
  };
const replyBool = (v: boolean) => encoder((w) => w.bool(v));

/** The TCP netid of the connection a call came in on (RFC 1833 §2.2.1: GETADDR infers it). */
function transportNetid(remote: RemoteInfo): string {
  const address = unmapIPv4(remote.localAddress ?? remote.address);
  return isIP(address) === 6 ? 'tcp6' : 'tcp';
}

/**
 * A registered address as the caller can use it: a wildcard host (`0.0.0.0`, `::`) becomes the
 * address the caller reached us on (what rpcbind calls merging), provided the family fits.
 * Undefined when it cannot be made usable.
 */
function mergedAddress(entry: RpcbEntry, remote: RemoteInfo): string | undefined {
  const a = parseUniversalAddress(entry.addr);
  if (!a) return undefined;
  if (a.host !== '0.0.0.0' && a.host !== '::') return entry.addr;
  const local = unmapIPv4(remote.localAddress ?? '');
  const family = isIP(local);
  if (family === 0) return entry.addr;
  if (family !== (a.host === '::' ? 6 : 4)) return undefined;
  return formatUniversalAddress(local, a.port);
}

/**
 * The portmapper (RFC 1833): PMAP v2 and RPCBIND v3 and v4 over the registrations in
 * `registry`. SET and UNSET are honoured only from loopback addresses, like rpcbind, so a
 * remote client cannot redirect clients to its own server. CALLIT (and v4's BCAST, INDIRECT),
 * the address conversions and GETSTAT are not served: the dispatcher answers PROC_UNAVAIL, as
 * rpcbind does for indirect calls over TCP.
 */
export function createPortmapProgram(registry: PortmapRegistry): RpcProgram {
  // void PMAPPROC_NULL(void) = 0;   void RPCBPROC_NULL(void) = 0;
  const nul: ProcedureHandler = () => encoder(() => {});

  // bool PMAPPROC_SET(mapping) = 1;
  const pmapSet: ProcedureHandler = (call, args) => {
    const m = readMapping(args);
    return replyBool(
      isLoopback(call.remote.address) &&
        netidOf(m.prot) !== undefined &&
        registry.set(m, '0.0.0.0', ownerOf(call)),
    );
  };

  // bool PMAPPROC_UNSET(mapping) = 2;   (prot and port are ignored)
  const pmapUnset: ProcedureHandler = (call, args) => {
    const m = readMapping(args);
    return replyBool(isLoopback(call.remote.address) && registry.unset(m.prog, m.vers));
  };

  // unsigned int PMAPPROC_GETPORT(mapping) = 3;   (0: not registered)
  const pmapGetport: ProcedureHandler = (_call, args) => {
    const m = readMapping(args);
    const netid = netidOf(m.prot);
    const e = netid === undefined ? undefined : registry.find(m.prog, m.vers, netid, true);
    const port = (e && parseUniversalAddress(e.addr)?.port) ?? 0;
    return encoder((w) => w.u32(port));
  };

  // pmaplist PMAPPROC_DUMP(void) = 4;
  const pmapDump: ProcedureHandler = () => {
    const list = registry.list();
    return encoder((w) => writePmapList(w, list));
  };

  // bool RPCBPROC_SET(rpcb) = 1;
  const rpcbSet: ProcedureHandler = (call, args) => {
    const e = readRpcb(args);
    const a = parseUniversalAddress(e.addr);
    const valid =
      a !== undefined &&
      /^(tcp|udp)6?$/.test(e.netid) &&
      (isIP(a.host) === 6) === e.netid.endsWith('6');
    return replyBool(
      isLoopback(call.remote.address) && valid && registry.setEntry({ ...e, owner: ownerOf(call) }),
    );
  };

  // bool RPCBPROC_UNSET(rpcb) = 2;   (an empty r_netid removes every netid)
  const rpcbUnset: ProcedureHandler = (call, args) => {
    const e = readRpcb(args);
    return replyBool(
      isLoopback(call.remote.address) &&
        registry.unset(e.prog, e.vers, e.netid === '' ? undefined : e.netid),
    );
  };

  // string RPCBPROC_GETADDR(rpcb) = 3;      (any version when the asked one is missing)
  // string RPCBPROC_GETVERSADDR(rpcb) = 9;  (v4: exactly that version)
  // An empty string means "not registered".
  const getaddr =
    (anyVersion: boolean): ProcedureHandler =>
    (call, args) => {
      const e = readRpcb(args);
      const found = registry.find(e.prog, e.vers, transportNetid(call.remote), anyVersion);
      const addr = (found && mergedAddress(found, call.remote)) ?? '';
      return encoder((w) => w.string(addr));
    };

  // rpcblist_ptr RPCBPROC_DUMP(void) = 4;
  const rpcbDump: ProcedureHandler = () => {
    const list = registry.entries();
    return encoder((w) => writeRpcbList(w, list));
  };

  // unsigned int RPCBPROC_GETTIME(void) = 6;
  const gettime: ProcedureHandler = () =>
    encoder((w) => w.u32(Math.floor(Date.now() / 1000) % 0x1_0000_0000));

  // rpcb_entry_list_ptr RPCBPROC_GETADDRLIST(rpcb) = 11;   (every netid of that exact version)
  const getaddrlist: ProcedureHandler = (call, args) => {
    const e = readRpcb(args);
    const list: { addr: string; netid: string }[] = [];
    for (const entry of registry.entries()) {
      if (entry.prog !== e.prog || entry.vers !== e.vers) continue;
      const addr = mergedAddress(entry, call.remote);
      if (addr !== undefined) list.push({ addr, netid: entry.netid });
    }
    return encoder((w) => writeRpcbEntryList(w, list));
  };

  const v2 = [nul, pmapSet, pmapUnset, pmapGetport, pmapDump];
  const v3 = [nul, rpcbSet, rpcbUnset, getaddr(true), rpcbDump, undefined, gettime];
  const v4 = [...v3, undefined, undefined, getaddr(false), undefined, getaddrlist];
  return {
    prog: PMAP_PROGRAM,
    versions: new Map([
      [2, v2],
      [3, v3],
      [4, v4],
    ]),
  };
}

/**
 * The owner recorded for a client's registration. rpcbind takes the uid of a local-socket peer;
 * over TCP the AUTH_SYS credential is all there is.
 */
function ownerOf(call: RpcCall): string {
  if (!call.authSys) return 'unknown';
  return call.authSys.uid === 0 ? 'superuser' : String(call.authSys.uid);
}
