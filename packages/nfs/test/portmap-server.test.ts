import { type AddressInfo, createServer } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NfsErrorCode, NfsServer } from '../src/index.js';
import { IPPROTO_TCP, PMAP_PROGRAM, PmapProc, RpcbProc } from '../src/portmap/portmap-program.js';
import { formatUniversalAddress } from '../src/portmap/universal-address.js';
import { AcceptStat } from '../src/rpc/message.js';
import { MemoryFileSystem } from './helpers/memory-fs.js';
import { expectNoLeakedHandles, openHandles } from './helpers/open-handles.js';
import { RpcTestClient } from './helpers/rpc-client.js';

// The embedded portmapper as an NfsServer starts it (on a free port here; clients need 111).
describe('an NfsServer with the embedded portmapper', () => {
  let server: NfsServer;
  let client: RpcTestClient;
  let baseline: string[];
  let ports: { nfsPort: number; mountPort: number; portmapPort: number };

  beforeAll(async () => {
    baseline = openHandles();
    server = new NfsServer({
      exports: [{ path: '/memfs', fs: new MemoryFileSystem() }],
      nfsPort: 0,
      mountPort: 0,
      portmap: 'embedded',
      portmapPort: 0,
    });
    const a = await server.start();
    ports = { nfsPort: a.nfsPort, mountPort: a.mountPort, portmapPort: a.portmapPort! };
    expect(new Set(Object.values(ports)).size).toBe(3);
    client = await RpcTestClient.connect(ports.portmapPort);
  });

  afterAll(async () => {
    await client.close();
    await server.stop();
    await expectNoLeakedHandles(baseline);
  });

  const getport = async (prog: number, vers: number) => {
    const reply = await client.call(PMAP_PROGRAM, 2, PmapProc.GETPORT, (w) =>
      w.u32(prog).u32(vers).u32(IPPROTO_TCP).u32(0),
    );
    expect(reply.acceptStat).toBe(AcceptStat.SUCCESS);
    return reply.body.u32();
  };

  it('maps NFS v3, MOUNT v1 and v3 and itself; nothing else', async () => {
    expect(await getport(100003, 3)).toBe(ports.nfsPort);
    expect(await getport(100005, 3)).toBe(ports.mountPort);
    expect(await getport(100005, 1)).toBe(ports.mountPort);
    for (const vers of [2, 3, 4]) expect(await getport(PMAP_PROGRAM, vers)).toBe(ports.portmapPort);
    expect(await getport(100227, 3)).toBe(0);
    expect(await getport(100021, 4)).toBe(0);
  });

  it('answers RPCBIND GETADDR with 127.0.0.1 universal addresses', async () => {
    const reply = await client.call(PMAP_PROGRAM, 4, RpcbProc.GETADDR, (w) =>
      w.u32(100005).u32(3).string('tcp').string('').string(''),
    );
    expect(reply.body.string(64)).toBe(formatUniversalAddress('127.0.0.1', ports.mountPort));
  });

  it('does not serve NFS or MOUNT on the portmapper port', async () => {
    expect((await client.call(100003, 3, 0)).acceptStat).toBe(AcceptStat.PROG_UNAVAIL);
    expect((await client.call(100005, 3, 0)).acceptStat).toBe(AcceptStat.PROG_UNAVAIL);
  });
});

describe('NfsServer portmap options', () => {
  it('fails to start with IVMR_IO, saying why, when the portmapper port is taken; leaves nothing open', async () => {
    const baseline = openHandles();
    const squatter = createServer();
    const port = await new Promise<number>((resolve) =>
      squatter.listen(0, '127.0.0.1', () => resolve((squatter.address() as AddressInfo).port)),
    );
    try {
      const server = new NfsServer({
        exports: [{ path: '/memfs', fs: new MemoryFileSystem() }],
        nfsPort: 0,
        portmap: 'embedded',
        portmapPort: port,
      });
      const err = await server.start().catch((e: unknown) => e);
      expect(err).toMatchObject({
        code: NfsErrorCode.IO,
        message: expect.stringContaining(`cannot listen on 127.0.0.1:${port}`),
      });
      expect((err as Error).message).toContain("is rpcbind running? then use portmap: 'system'");
      expect(server.address).toBeUndefined();
    } finally {
      await new Promise((resolve) => squatter.close(resolve));
    }
    await expectNoLeakedHandles(baseline);
  });

  it("starts no portmapper with portmap 'off' (the default)", async () => {
    const server = new NfsServer({
      exports: [{ path: '/memfs', fs: new MemoryFileSystem() }],
      nfsPort: 0,
    });
    try {
      expect((await server.start()).portmapPort).toBeUndefined();
    } finally {
      await server.stop();
    }
  });
});
