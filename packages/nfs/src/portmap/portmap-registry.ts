import { isIP } from 'node:net';
import { formatUniversalAddress, parseUniversalAddress } from './universal-address.js';

/** `prot` values of a PMAP v2 mapping (RFC 1833 §3). The server itself only serves TCP. */
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;

/** A PMAP v2 mapping (RFC 1833 §3, `struct mapping`). */
export interface PortMapping {
  readonly prog: number;
  readonly vers: number;
  /** {@link IPPROTO_TCP} or {@link IPPROTO_UDP}. */
  readonly prot: number;
  readonly port: number;
}

/** An RPCBIND registration (RFC 1833 §2.1, `struct rpcb`). */
export interface RpcbEntry {
  readonly prog: number;
  readonly vers: number;
  /** `tcp`, `tcp6`, `udp` or `udp6`. */
  readonly netid: string;
  /** Universal address; a wildcard host (`0.0.0.0`, `::`) means "every address of this host". */
  readonly addr: string;
  readonly owner: string;
}

const IPV4_NETIDS = new Set(['tcp', 'udp']);

/** The IPv4 netid of a protocol, or undefined for protocols PMAP v2 cannot name. */
export function netidOf(prot: number, ipv6 = false): string | undefined {
  if (prot === IPPROTO_TCP) return ipv6 ? 'tcp6' : 'tcp';
  if (prot === IPPROTO_UDP) return ipv6 ? 'udp6' : 'udp';
  return undefined;
}

/**
 * The table of an embedded portmapper: which program and version listens where. One table
 * serves both views of RFC 1833: PMAP v2 sees the IPv4 entries as (prot, port) mappings, and
 * RPCBIND v3/v4 sees every entry with its netid and universal address.
 */
export class PortmapRegistry {
  readonly #entries: RpcbEntry[] = [];

  /**
   * Registers `prog`/`vers` at `port` (protocol TCP unless `prot` says otherwise) on `host`
   * (default: every address). An IPv4 host gives a `tcp` entry, an IPv6 host a `tcp6` entry, the
   * dual-stack wildcard `::` (or a host name) both. Returns false, changing nothing, when
   * `prog`/`vers` is already mapped for that protocol: like PMAPPROC_SET, it never replaces.
   */
  set(
    mapping: { prog: number; vers: number; prot?: number; port: number },
    host = '0.0.0.0',
    owner = 'superuser',
  ): boolean {
    const prot = mapping.prot ?? IPPROTO_TCP;
    const family = isIP(host);
    const entries: RpcbEntry[] = [];
    if (family !== 6 || host === '::') {
      entries.push(
        this.#entry(mapping, netidOf(prot, false), family === 4 ? host : '0.0.0.0', owner),
      );
    }
    if (family !== 4)
      entries.push(this.#entry(mapping, netidOf(prot, true), family === 6 ? host : '::', owner));
    if (entries.some((e) => this.find(e.prog, e.vers, e.netid, false))) return false;
    this.#entries.push(...entries);
    return true;
  }

  /** Adds an RPCBIND registration; false when one exists for its prog, vers and netid. */
  setEntry(entry: RpcbEntry): boolean {
    if (this.find(entry.prog, entry.vers, entry.netid, false)) return false;
    this.#entries.push({ ...entry });
    return true;
  }

  /**
   * Removes the registrations of `prog`/`vers` for `netid`, or for every netid when it is
   * omitted (PMAPPROC_UNSET ignores prot and port). True when something was removed.
   */
  unset(prog: number, vers: number, netid?: string): boolean {
    let removed = false;
    for (let i = this.#entries.length - 1; i >= 0; i--) {
      const e = this.#entries[i]!;
      if (e.prog === prog && e.vers === vers && (netid === undefined || e.netid === netid)) {
        this.#entries.splice(i, 1);
        removed = true;
      }
    }
    return removed;
  }

  /** The IPv4 port of `prog`/`vers` for a protocol (default TCP), or undefined. */
  get(prog: number, vers: number, prot = IPPROTO_TCP): number | undefined {
    const netid = netidOf(prot);
    const e = netid === undefined ? undefined : this.find(prog, vers, netid, false);
    return e && parseUniversalAddress(e.addr)?.port;
  }

  /**
   * The entry of `prog`/`vers` on `netid`. With `anyVersion`, when that version is not
   * registered, an entry of another version of the program: rpcbind answers so, and the client
   * then learns the served range from the server's PROG_MISMATCH.
   */
  find(prog: number, vers: number, netid: string, anyVersion: boolean): RpcbEntry | undefined {
    let other: RpcbEntry | undefined;
    for (const e of this.#entries) {
      if (e.prog !== prog || e.netid !== netid) continue;
      if (e.vers === vers) return e;
      other ??= anyVersion ? e : undefined;
    }
    return other;
  }

  /** The PMAP v2 view: IPv4 entries as mappings, in registration order. */
  list(): PortMapping[] {
    const out: PortMapping[] = [];
    for (const e of this.#entries) {
      if (!IPV4_NETIDS.has(e.netid)) continue;
      const a = parseUniversalAddress(e.addr);
      if (a)
        out.push({
          prog: e.prog,
          vers: e.vers,
          prot: e.netid === 'tcp' ? IPPROTO_TCP : IPPROTO_UDP,
          port: a.port,
        });
    }
    return out;
  }

  /** The RPCBIND view: every entry, in registration order. */
  entries(): RpcbEntry[] {
    return this.#entries.map((e) => ({ ...e }));
  }

  #entry(
    m: { prog: number; vers: number; port: number },
    netid: string | undefined,
    host: string,
    owner: string,
  ): RpcbEntry {
    if (netid === undefined)
      throw new RangeError('prot must be IPPROTO_TCP (6) or IPPROTO_UDP (17)');
    if (!Number.isInteger(m.port) || m.port < 0 || m.port > 65535)
      throw new RangeError(`bad port ${m.port}`);
    return { prog: m.prog, vers: m.vers, netid, addr: formatUniversalAddress(host, m.port), owner };
  }
}
