import { type AddressInfo, createServer } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NfsErrorCode } from '../src/errors.js';
import {
  createPortmapProgram,
  IPPROTO_TCP,
  IPPROTO_UDP,
  PMAP_PROGRAM,
  PmapProc,
  PortmapRegistry,
  RpcbProc,
} from '../src/portmap/portmap-program.js';
import { registerWithRpcbind } from '../src/portmap/rpcbind-client.js';
import {
  formatUniversalAddress,
  isLoopback,
  parseUniversalAddress,
} from '../src/portmap/universal-address.js';
import {
  Dispatcher,
  type ProcedureHandler,
  type RpcCall,
  type RpcProgram,
} from '../src/rpc/dispatcher.js';
import { AcceptStat } from '../src/rpc/message.js';
import { RpcTcpServer } from '../src/transport/tcp-server.js';
import { XdrReader } from '../src/xdr/reader.js';
import { XdrWriter } from '../src/xdr/writer.js';
import { expectNoLeakedHandles, openHandles } from './helpers/open-handles.js';
import { type RpcReply, RpcTestClient } from './helpers/rpc-client.js';

const NFS = 100003;
const MOUNT = 100005;
const NFS_PORT = 2049;
const MOUNT_PORT = 20048;

/** Serves `programs` on 127.0.0.1, port 0. */
async function serve(
  program: RpcProgram,
  host = '127.0.0.1',
): Promise<{ port: number; close: () => Promise<void> }> {
  const d = new Dispatcher();
  d.register(program);
  const server = new RpcTcpServer(d);
  const { port } = await server.listen(0, host);
  return { port, close: () => server.close() };
}

const mapping =
  (prog: number, vers: number, prot = IPPROTO_TCP, port = 0) =>
  (w: XdrWriter) =>
    w.u32(prog).u32(vers).u32(prot).u32(port);

const rpcb =
  (prog: number, vers: number, netid = '', addr = '', owner = '') =>
  (w: XdrWriter) =>
    w.u32(prog).u32(vers).string(netid).string(addr).string(owner);

function ok(reply: RpcReply): XdrReader {
  expect(reply.replyStat).toBe(0);
  expect(reply.acceptStat).toBe(AcceptStat.SUCCESS);
  return reply.body;
}

function readPmapList(r: XdrReader) {
  const out: { prog: number; vers: number; prot: number; port: number }[] = [];
  while (r.bool()) out.push({ prog: r.u32(), vers: r.u32(), prot: r.u32(), port: r.u32() });
  return out;
}

function readRpcbList(r: XdrReader) {
  const out: { prog: number; vers: number; netid: string; addr: string; owner: string }[] = [];
  while (r.bool())
    out.push({
      prog: r.u32(),
      vers: r.u32(),
      netid: r.string(256),
      addr: r.string(256),
      owner: r.string(256),
    });
  return out;
}

describe('universal addresses', () => {
  it('formats and parses IPv4 and IPv6 universal addresses', () => {
    expect(formatUniversalAddress('127.0.0.1', 2049)).toBe('127.0.0.1.8.1');
    expect(formatUniversalAddress('::1', 111)).toBe('::1.0.111');
    expect(formatUniversalAddress('0.0.0.0', 65535)).toBe('0.0.0.0.255.255');
    expect(parseUniversalAddress('10.1.2.3.8.1')).toEqual({ host: '10.1.2.3', port: 2049 });
    expect(parseUniversalAddress('fe80::1.0.111')).toEqual({ host: 'fe80::1', port: 111 });
    for (const bad of [
      '',
      '127.0.0.1',
      '127.0.0.1.8',
      '127.0.0.1.256.1',
      'host.8.1',
      '1.2.3.4.-1.0',
    ]) {
      expect(parseUniversalAddress(bad), bad).toBeUndefined();
    }
  });

  it('knows loopback addresses, also IPv4-mapped ones', () => {
    expect(isLoopback('127.0.0.1')).toBe(true);
    expect(isLoopback('127.8.9.10')).toBe(true);
    expect(isLoopback('::1')).toBe(true);
    expect(isLoopback('::ffff:127.0.0.1')).toBe(true);
    expect(isLoopback('10.0.0.1')).toBe(false);
    expect(isLoopback('::ffff:10.0.0.1')).toBe(false);
    expect(isLoopback('fe80::1')).toBe(false);
  });
});

describe('PortmapRegistry', () => {
  it('keeps one table for the PMAP v2 and RPCBIND views', () => {
    const r = new PortmapRegistry();
    expect(r.set({ prog: NFS, vers: 3, port: NFS_PORT }, '::')).toBe(true);
    expect(r.entries().map((e) => [e.netid, e.addr])).toEqual([
      ['tcp', '0.0.0.0.8.1'],
      ['tcp6', '::.8.1'],
    ]);
    expect(r.list()).toEqual([{ prog: NFS, vers: 3, prot: IPPROTO_TCP, port: NFS_PORT }]);
    expect(r.get(NFS, 3)).toBe(NFS_PORT);
    expect(r.get(NFS, 3, IPPROTO_UDP)).toBeUndefined();
    expect(r.set({ prog: NFS, vers: 3, port: 1 })).toBe(false);
    expect(r.set({ prog: MOUNT, vers: 3, port: MOUNT_PORT }, '127.0.0.1')).toBe(true);
    expect(r.find(MOUNT, 3, 'tcp', false)?.addr).toBe('127.0.0.1.78.80');
    expect(r.find(MOUNT, 1, 'tcp', false)).toBeUndefined();
    expect(r.find(MOUNT, 1, 'tcp', true)?.vers).toBe(3);
    expect(r.unset(NFS, 3, 'tcp6')).toBe(true);
    expect(r.entries()).toHaveLength(2);
    expect(r.unset(NFS, 3)).toBe(true);
    expect(r.unset(NFS, 3)).toBe(false);
    expect(() => r.set({ prog: 1, vers: 1, prot: 99, port: 1 })).toThrow(RangeError);
  });
});

describe('portmapper over TCP (PMAP v2, RPCBIND v3 and v4)', () => {
  const registry = new PortmapRegistry();
  let server: { port: number; close: () => Promise<void> };
  let client: RpcTestClient;
  let baseline: string[];

  beforeAll(async () => {
    baseline = openHandles();
    server = await serve(createPortmapProgram(registry));
    for (const vers of [2, 3, 4]) registry.set({ prog: PMAP_PROGRAM, vers, port: server.port });
    registry.set({ prog: NFS, vers: 3, port: NFS_PORT });
    registry.set({ prog: MOUNT, vers: 1, port: MOUNT_PORT });
    registry.set({ prog: MOUNT, vers: 3, port: MOUNT_PORT });
    client = await RpcTestClient.connect(server.port);
  });

  afterAll(async () => {
    await client.close();
    await server.close();
    await expectNoLeakedHandles(baseline);
  });

  it('answers NULL in versions 2, 3 and 4', async () => {
    for (const vers of [2, 3, 4]) {
      expect(ok(await client.call(PMAP_PROGRAM, vers, 0)).remaining).toBe(0);
    }
  });

  it('GETPORT finds registered programs and answers 0 for the others', async () => {
    const getport = async (prog: number, vers: number, prot = IPPROTO_TCP) =>
      ok(await client.call(PMAP_PROGRAM, 2, PmapProc.GETPORT, mapping(prog, vers, prot))).u32();
    expect(await getport(NFS, 3)).toBe(NFS_PORT);
    expect(await getport(MOUNT, 3)).toBe(MOUNT_PORT);
    expect(await getport(MOUNT, 1)).toBe(MOUNT_PORT);
    expect(await getport(PMAP_PROGRAM, 2)).toBe(server.port);
    expect(await getport(100021, 4)).toBe(0);
    expect(await getport(NFS, 3, IPPROTO_UDP)).toBe(0);
    expect(await getport(NFS, 3, 99)).toBe(0);
    // An unregistered version of a registered program: the port of another version, as rpcbind
    // answers, so the client hears the served range from the server's PROG_MISMATCH.
    expect(await getport(MOUNT, 2)).toBe(MOUNT_PORT);
  });

  it('DUMP lists the IPv4 mappings', async () => {
    const list = readPmapList(ok(await client.call(PMAP_PROGRAM, 2, PmapProc.DUMP)));
    expect(list).toEqual(registry.list());
    expect(list).toContainEqual({ prog: NFS, vers: 3, prot: IPPROTO_TCP, port: NFS_PORT });
  });

  it('SET and UNSET from loopback change the table; SET never replaces', async () => {
    const set = async (port: number) =>
      ok(
        await client.call(PMAP_PROGRAM, 2, PmapProc.SET, mapping(400_000, 1, IPPROTO_TCP, port)),
      ).bool();
    const unset = async () =>
      ok(
        await client.call(PMAP_PROGRAM, 2, PmapProc.UNSET, mapping(400_000, 1, IPPROTO_UDP, 9)),
      ).bool();
    expect(await set(4000)).toBe(true);
    expect(registry.get(400_000, 1)).toBe(4000);
    expect(await set(4001)).toBe(false);
    expect(registry.get(400_000, 1)).toBe(4000);
    expect(registry.find(400_000, 1, 'tcp', false)?.owner).toBe('superuser');
    expect(await unset()).toBe(true);
    expect(registry.get(400_000, 1)).toBeUndefined();
    expect(await unset()).toBe(false);
    // A protocol PMAP v2 cannot name is refused.
    expect(
      ok(await client.call(PMAP_PROGRAM, 2, PmapProc.SET, mapping(400_001, 1, 99, 1))).bool(),
    ).toBe(false);
  });

  it('refuses SET and UNSET from other hosts', async () => {
    const program = createPortmapProgram(registry);
    const callFrom = async (
      address: string,
      vers: number,
      proc: number,
      args: (w: XdrWriter) => void,
    ) => {
      const w = new XdrWriter();
      args(w);
      const call: RpcCall = {
        xid: 1,
        prog: PMAP_PROGRAM,
        vers,
        proc,
        authFlavor: 1,
        authSys: { stamp: 0, machineName: 'evil', uid: 0, gid: 0, gids: [] },
        remote: { address, port: 1000, family: 'IPv4' },
      };
      const handler = program.versions.get(vers)![proc] as ProcedureHandler;
      const encode = await handler(call, new XdrReader(Buffer.from(w.view())));
      const out = new XdrWriter();
      encode(out);
      return new XdrReader(Buffer.from(out.view())).bool();
    };
    expect(await callFrom('10.1.1.1', 2, PmapProc.SET, mapping(400_002, 1, IPPROTO_TCP, 5))).toBe(
      false,
    );
    expect(
      await callFrom(
        '::ffff:192.168.1.1',
        4,
        RpcbProc.SET,
        rpcb(400_002, 1, 'tcp', '10.1.1.1.0.5'),
      ),
    ).toBe(false);
    expect(registry.find(400_002, 1, 'tcp', true)).toBeUndefined();
    expect(await callFrom('10.1.1.1', 2, PmapProc.UNSET, mapping(NFS, 3))).toBe(false);
    expect(await callFrom('10.1.1.1', 3, RpcbProc.UNSET, rpcb(NFS, 3))).toBe(false);
    expect(registry.get(NFS, 3)).toBe(NFS_PORT);
    expect(await callFrom('127.0.0.1', 2, PmapProc.SET, mapping(400_002, 1, IPPROTO_TCP, 5))).toBe(
      true,
    );
    expect(await callFrom('::1', 2, PmapProc.UNSET, mapping(400_002, 1))).toBe(true);
  });

  it('GETADDR answers the universal address, merged with the address the client reached', async () => {
    for (const vers of [3, 4]) {
      const getaddr = async (prog: number, v: number) =>
        ok(
          await client.call(
            PMAP_PROGRAM,
            vers,
            RpcbProc.GETADDR,
            rpcb(prog, v, 'tcp', '127.0.0.1.0.111', 'test'),
          ),
        ).string(256);
      expect(await getaddr(NFS, 3)).toBe(formatUniversalAddress('127.0.0.1', NFS_PORT));
      expect(await getaddr(MOUNT, 3)).toBe('127.0.0.1.78.80');
      expect(await getaddr(MOUNT, 2)).toBe('127.0.0.1.78.80');
      expect(await getaddr(100227, 3)).toBe('');
    }
    // RFC 1833 §2.2.1: the netid comes from the transport, not from r_netid.
    const viaUdpNetid = ok(
      await client.call(PMAP_PROGRAM, 4, RpcbProc.GETADDR, rpcb(NFS, 3, 'udp')),
    ).string(256);
    expect(viaUdpNetid).toBe('127.0.0.1.8.1');
  });

  it('GETVERSADDR (v4) answers only the exact version', async () => {
    const getversaddr = async (prog: number, v: number) =>
      ok(await client.call(PMAP_PROGRAM, 4, RpcbProc.GETVERSADDR, rpcb(prog, v, 'tcp'))).string(
        256,
      );
    expect(await getversaddr(MOUNT, 3)).toBe('127.0.0.1.78.80');
    expect(await getversaddr(MOUNT, 2)).toBe('');
    expect(
      (await client.call(PMAP_PROGRAM, 3, RpcbProc.GETVERSADDR, rpcb(MOUNT, 3))).acceptStat,
    ).toBe(AcceptStat.PROC_UNAVAIL);
  });

  it('GETADDRLIST (v4) lists every netid of a version', async () => {
    const r = ok(await client.call(PMAP_PROGRAM, 4, RpcbProc.GETADDRLIST, rpcb(NFS, 3)));
    const list: unknown[] = [];
    while (r.bool())
      list.push([r.string(256), r.string(256), r.u32(), r.string(256), r.string(256)]);
    expect(list).toEqual([['127.0.0.1.8.1', 'tcp', 3, 'inet', 'tcp']]);
    expect(ok(await client.call(PMAP_PROGRAM, 4, RpcbProc.GETADDRLIST, rpcb(NFS, 2))).bool()).toBe(
      false,
    );
  });

  it('RPCBIND SET, DUMP and UNSET work on netids and universal addresses', async () => {
    for (const vers of [3, 4]) {
      const set = (netid: string, addr: string) =>
        client.call(PMAP_PROGRAM, vers, RpcbProc.SET, rpcb(400_010, 1, netid, addr, 'ignored'));
      expect(ok(await set('tcp', '127.0.0.1.15.160')).bool()).toBe(true);
      expect(ok(await set('tcp', '127.0.0.1.15.161')).bool()).toBe(false);
      expect(ok(await set('tcp6', '::1.15.160')).bool()).toBe(true);
      expect(ok(await set('tcp6', '127.0.0.1.1.1')).bool()).toBe(false);
      expect(ok(await set('sctp', '127.0.0.1.1.1')).bool()).toBe(false);
      expect(ok(await set('tcp', 'nonsense')).bool()).toBe(false);
      expect(registry.get(400_010, 1)).toBe(4000);
      const dump = readRpcbList(ok(await client.call(PMAP_PROGRAM, vers, RpcbProc.DUMP)));
      expect(dump).toEqual(registry.entries());
      expect(dump).toContainEqual({
        prog: 400_010,
        vers: 1,
        netid: 'tcp6',
        addr: '::1.15.160',
        owner: 'superuser',
      });
      expect(dump).toContainEqual({
        prog: NFS,
        vers: 3,
        netid: 'tcp',
        addr: '0.0.0.0.8.1',
        owner: 'superuser',
      });
      const unset = (netid: string) =>
        client.call(PMAP_PROGRAM, vers, RpcbProc.UNSET, rpcb(400_010, 1, netid));
      expect(ok(await unset('tcp6')).bool()).toBe(true);
      expect(registry.find(400_010, 1, 'tcp', false)).toBeDefined();
      expect(ok(await unset('')).bool()).toBe(true);
      expect(registry.find(400_010, 1, 'tcp', true)).toBeUndefined();
    }
  });

  it('GETTIME answers the time in seconds', async () => {
    for (const vers of [3, 4]) {
      const t = ok(await client.call(PMAP_PROGRAM, vers, RpcbProc.GETTIME)).u32();
      expect(Math.abs(t - Date.now() / 1000)).toBeLessThan(5);
    }
  });

  it('answers PROC_UNAVAIL for indirect calls and address conversions, PROG_MISMATCH for other versions', async () => {
    const callit = (w: XdrWriter) => w.u32(NFS).u32(3).u32(0).opaque(Buffer.alloc(0));
    expect((await client.call(PMAP_PROGRAM, 2, PmapProc.CALLIT, callit)).acceptStat).toBe(
      AcceptStat.PROC_UNAVAIL,
    );
    expect((await client.call(PMAP_PROGRAM, 3, RpcbProc.CALLIT, callit)).acceptStat).toBe(
      AcceptStat.PROC_UNAVAIL,
    );
    for (const proc of [
      RpcbProc.UADDR2TADDR,
      RpcbProc.TADDR2UADDR,
      RpcbProc.INDIRECT,
      RpcbProc.GETSTAT,
      13,
    ]) {
      expect((await client.call(PMAP_PROGRAM, 4, proc)).acceptStat).toBe(AcceptStat.PROC_UNAVAIL);
    }
    for (const vers of [1, 5]) {
      const reply = await client.call(PMAP_PROGRAM, vers, 0);
      expect(reply.acceptStat).toBe(AcceptStat.PROG_MISMATCH);
      expect([reply.body.u32(), reply.body.u32()]).toEqual([2, 4]);
    }
  });

  it('answers GARBAGE_ARGS for truncated arguments', async () => {
    expect(
      (await client.call(PMAP_PROGRAM, 2, PmapProc.GETPORT, (w) => w.u32(NFS).u32(3))).acceptStat,
    ).toBe(AcceptStat.GARBAGE_ARGS);
    expect(
      (await client.call(PMAP_PROGRAM, 3, RpcbProc.GETADDR, (w) => w.u32(NFS).u32(3).u32(1000)))
        .acceptStat,
    ).toBe(AcceptStat.GARBAGE_ARGS);
  });
});

describe('portmapper on a dual-stack listener', () => {
  it('answers each client with an address of its own family', async () => {
    const baseline = openHandles();
    const registry = new PortmapRegistry();
    const pm = await serve(createPortmapProgram(registry), '::');
    registry.set({ prog: NFS, vers: 3, port: NFS_PORT }, '::');
    const getaddr = async (host: string, vers: number, proc: number) => {
      const c = await RpcTestClient.connect(pm.port, host);
      try {
        return ok(await c.call(PMAP_PROGRAM, vers, proc, rpcb(NFS, 3, 'tcp'))).string(256);
      } finally {
        await c.close();
      }
    };
    try {
      expect(await getaddr('::1', 3, RpcbProc.GETADDR)).toBe('::1.8.1');
      expect(await getaddr('::1', 4, RpcbProc.GETVERSADDR)).toBe('::1.8.1');
      // An IPv4 client reaches a `::` listener as ::ffff:127.0.0.1 and gets an IPv4 address.
      expect(await getaddr('127.0.0.1', 3, RpcbProc.GETADDR)).toBe('127.0.0.1.8.1');
      const c = await RpcTestClient.connect(pm.port, '::1');
      try {
        const r = ok(await c.call(PMAP_PROGRAM, 4, RpcbProc.GETADDRLIST, rpcb(NFS, 3)));
        const list: string[] = [];
        while (r.bool())
          list.push(
            [r.string(256), r.string(256), r.u32(), r.string(256), r.string(256)].join(' '),
          );
        expect(list).toEqual(['::1.8.1 tcp6 3 inet6 tcp']);
        const port = ok(await c.call(PMAP_PROGRAM, 2, PmapProc.GETPORT, mapping(NFS, 3))).u32();
        expect(port).toBe(NFS_PORT);
      } finally {
        await c.close();
      }
    } finally {
      await pm.close();
    }
    await expectNoLeakedHandles(baseline);
  });
});

describe('registerWithRpcbind', () => {
  let baseline: string[];
  beforeAll(() => {
    baseline = openHandles();
  });
  afterAll(async () => {
    await expectNoLeakedHandles(baseline);
  });

  const mappings = [
    { prog: NFS, vers: 3, port: NFS_PORT },
    { prog: MOUNT, vers: 3, port: MOUNT_PORT },
  ];

  it('registers TCP mappings, replacing stale ones, and unregisters them', async () => {
    const registry = new PortmapRegistry();
    registry.set({ prog: NFS, vers: 3, port: 1234 });
    registry.set({ prog: NFS, vers: 3, prot: IPPROTO_UDP, port: 1234 });
    const pm = await serve(createPortmapProgram(registry));
    try {
      const reg = await registerWithRpcbind(mappings, { port: pm.port });
      expect(registry.list()).toEqual([
        { prog: NFS, vers: 3, prot: IPPROTO_TCP, port: NFS_PORT },
        { prog: MOUNT, vers: 3, prot: IPPROTO_TCP, port: MOUNT_PORT },
      ]);
      await reg.unregister();
      expect(registry.entries()).toEqual([]);
      await reg.unregister();
    } finally {
      await pm.close();
    }
  });

  it('fails with IVMR_IO when no rpcbind answers', async () => {
    const probe = createServer();
    const port = await new Promise<number>((resolve) =>
      probe.listen(0, '127.0.0.1', () => resolve((probe.address() as AddressInfo).port)),
    );
    await new Promise((resolve) => probe.close(resolve));
    const err = await registerWithRpcbind(mappings, { port }).catch((e: unknown) => e);
    expect(err).toMatchObject({
      code: NfsErrorCode.IO,
      message: expect.stringMatching(/no rpcbind answers at 127\.0\.0\.1:\d+ \(ECONNREFUSED\)/),
    });
  });

  it('fails with IVMR_IO when rpcbind refuses, and removes what it registered', async () => {
    const registry = new PortmapRegistry();
    const real = createPortmapProgram(registry);
    const v2 = [...real.versions.get(2)!];
    // Refuses the second SET, like an rpcbind holding another owner's registration.
    let sets = 0;
    const set = v2[PmapProc.SET]!;
    v2[PmapProc.SET] = (call, args) => {
      if (++sets !== 2) return set(call, args);
      args.pos = args.end;
      return (w) => {
        w.bool(false);
        return undefined;
      };
    };
    const refusing: RpcProgram = { prog: PMAP_PROGRAM, versions: new Map([[2, v2]]) };
    const pm = await serve(refusing);
    try {
      const err = await registerWithRpcbind(mappings, { port: pm.port }).catch((e: unknown) => e);
      expect(err).toMatchObject({
        code: NfsErrorCode.IO,
        message: expect.stringContaining(`refused to register program ${MOUNT} version 3`),
      });
      expect(registry.entries()).toEqual([]);
    } finally {
      await pm.close();
    }
  });

  it('fails with IVMR_IO when rpcbind denies the call', async () => {
    const denying: RpcProgram = {
      ...createPortmapProgram(new PortmapRegistry()),
      authorize: () => 5 /* AUTH_TOOWEAK */,
    };
    const pm = await serve(denying);
    try {
      const err = await registerWithRpcbind(mappings, { port: pm.port }).catch((e: unknown) => e);
      expect(err).toMatchObject({
        code: NfsErrorCode.IO,
        message: expect.stringContaining('denied the call (auth error 5)'),
      });
    } finally {
      await pm.close();
    }
  });

  it('fails with IVMR_IO when rpcbind does not answer in time', async () => {
    const silent = createServer((s) => s.on('error', () => {}).resume());
    const port = await new Promise<number>((resolve) =>
      silent.listen(0, '127.0.0.1', () => resolve((silent.address() as AddressInfo).port)),
    );
    try {
      const err = await registerWithRpcbind(mappings, { port, timeoutMs: 200 }).catch(
        (e: unknown) => e,
      );
      expect(err).toMatchObject({
        code: NfsErrorCode.IO,
        message: expect.stringContaining('did not answer within 200 ms'),
      });
    } finally {
      await new Promise((resolve) => silent.close(resolve));
    }
  });
});
