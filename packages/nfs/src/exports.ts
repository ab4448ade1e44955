import { BlockList, isIP } from 'node:net';
import { NfsError, NfsErrorCode } from './errors.js';
import type { NfsFileSystem } from './filesystem.js';
import { exportIdOf } from './handles.js';

/** One export of an {@link NfsServer}. */
export interface ExportOptions {
  /** Path clients mount, e.g. `/ivmr`. Must start with `/`. */
  readonly path: string;
  readonly fs: NfsFileSystem;
  /** Refuse every change with NFS3ERR_ROFS even when the adapter can write (default false). */
  readonly readOnly?: boolean;
  /**
   * Clients allowed to mount and call: addresses (`10.0.0.5`, `::1`) or CIDR blocks
   * (`10.0.0.0/24`). Default: loopback only (`127.0.0.0/8`, `::1`). `['0.0.0.0/0', '::/0']`
   * allows everyone.
   */
  readonly clients?: readonly string[];
  /** Map uid 0 to the anonymous user (default false: VMware ESXi needs root access). */
  readonly rootSquash?: boolean;
  /** Map every user to the anonymous user (default false). */
  readonly allSquash?: boolean;
  /** Anonymous uid and gid (default 65534). */
  readonly anonUid?: number;
  readonly anonGid?: number;
  /** Auth flavors accepted (default both `sys` and `none`). */
  readonly authFlavors?: readonly ('sys' | 'none')[];
}

/** An export as the server keeps it. */
export interface ExportEntry {
  readonly id: number;
  readonly path: string;
  readonly fs: NfsFileSystem;
  readonly readOnly: boolean;
  /** The client addresses and CIDR blocks as configured (MOUNT EXPORT lists them). */
  readonly clients: readonly string[];
  readonly allow: (address: string) => boolean;
  readonly rootSquash: boolean;
  readonly allSquash: boolean;
  readonly anonUid: number;
  readonly anonGid: number;
  readonly allowSys: boolean;
  readonly allowNone: boolean;
}

/** Validates export options and builds the server's entries. `IVMR_INVALID_ARGUMENT` on bad input. */
export function buildExports(list: readonly ExportOptions[]): ExportEntry[] {
  if (list.length === 0) throw invalid('an NFS server needs at least one export');
  const seen = new Map<number, string>();
  return list.map((e) => {
    if (!/^\/[^\0]*$/.test(e.path) || e.path.length > 1024)
      throw invalid(`export path ${JSON.stringify(e.path)} must start with /`);
    const path = e.path.length > 1 ? e.path.replace(/\/+$/, '') : e.path;
    const id = exportIdOf(path);
    if (seen.has(id)) throw invalid(`export ${path} is listed twice`);
    seen.set(id, path);
    const flavors = e.authFlavors ?? ['sys', 'none'];
    const clients = [...(e.clients ?? ['127.0.0.0/8', '::1'])];
    return {
      id,
      path,
      fs: e.fs,
      readOnly: e.readOnly === true,
      clients,
      allow: clientMatcher(clients),
      rootSquash: e.rootSquash === true,
      allSquash: e.allSquash === true,
      anonUid: e.anonUid ?? 65534,
      anonGid: e.anonGid ?? 65534,
      allowSys: flavors.includes('sys'),
      allowNone: flavors.includes('none'),
    };
  });
}

/** A predicate for client addresses from a list of addresses and CIDR blocks. */
export function clientMatcher(clients: readonly string[]): (address: string) => boolean {
  const list = new BlockList();
  for (const c of clients) {
    const [addr, bits] = c.split('/');
    const family = isIP(addr ?? '');
    if (family === 0) throw invalid(`client ${JSON.stringify(c)} is not an address or CIDR block`);
    const type = family === 4 ? 'ipv4' : 'ipv6';
    if (bits === undefined) list.addAddress(addr!, type);
    else {
      const prefix = Number(bits);
      if (!Number.isInteger(prefix) || prefix < 0 || prefix > (family === 4 ? 32 : 128)) {
        throw invalid(`client ${JSON.stringify(c)} has a bad prefix length`);
      }
      list.addSubnet(addr!, prefix, type);
    }
  }
  // Every call is checked, and BlockList.check builds a SocketAddress each time: remember the
  // answer per address (a server has few clients; the map is cleared if it ever grows large).
  const answers = new Map<string, boolean>();
  return (address) => {
    let ok = answers.get(address);
    if (ok === undefined) {
      const mapped =
        address.startsWith('::ffff:') && isIP(address.slice(7)) === 4 ? address.slice(7) : address;
      const family = isIP(mapped);
      ok = family !== 0 && list.check(mapped, family === 4 ? 'ipv4' : 'ipv6');
      if (answers.size >= 1024) answers.clear();
      answers.set(address, ok);
    }
    return ok;
  };
}

function invalid(message: string): NfsError {
  return new NfsError(NfsErrorCode.INVALID_ARGUMENT, message);
}
