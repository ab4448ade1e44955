import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NfsServer } from '../src/index.js';
import { MOUNT_PROGRAM, MountProc } from '../src/mount/mount-program.js';
import { AcceptStat } from '../src/rpc/message.js';
import { MemoryFileSystem } from './helpers/memory-fs.js';
import { expectNoLeakedHandles, openHandles } from './helpers/open-handles.js';
import { RpcTestClient } from './helpers/rpc-client.js';

const NFS_PROGRAM = 100003;
const NLM_PROGRAM = 100021;
const NFS_ACL_PROGRAM = 100227;

// MOUNT and the programs a server does not have, on the port an NfsServer really listens on
// (MOUNT shares the NFS listener by default).
describe('an NfsServer on one port', () => {
  let server: NfsServer;
  let client: RpcTestClient;
  let baseline: string[];

  beforeAll(async () => {
    baseline = openHandles();
    server = new NfsServer({
      exports: [{ path: '/memfs', fs: new MemoryFileSystem() }],
      nfsPort: 0,
    });
    const { nfsPort, mountPort, portmapPort } = await server.start();
    expect(mountPort).toBe(nfsPort);
    expect(portmapPort).toBeUndefined();
    client = await RpcTestClient.connect(nfsPort);
  });

  afterAll(async () => {
    await client.close();
    await server.stop();
    await expectNoLeakedHandles(baseline);
  });

  it('answers PROG_UNAVAIL for NFS_ACL and NLM, which Linux clients probe', async () => {
    for (const [prog, vers] of [
      [NFS_ACL_PROGRAM, 3],
      [NLM_PROGRAM, 4],
      [NLM_PROGRAM, 1],
    ] as const) {
      const reply = await client.call(prog, vers, 0);
      expect(reply.replyStat).toBe(0);
      expect(reply.acceptStat, `program ${prog}`).toBe(AcceptStat.PROG_UNAVAIL);
      expect(reply.body.remaining).toBe(0);
    }
  });

  it('answers PROG_MISMATCH with the served range: MOUNT 1..3, NFS 3..3', async () => {
    for (const [prog, vers, low, high] of [
      [MOUNT_PROGRAM, 2, 1, 3],
      [MOUNT_PROGRAM, 4, 1, 3],
      [NFS_PROGRAM, 2, 3, 3],
      [NFS_PROGRAM, 4, 3, 3],
    ] as const) {
      const reply = await client.call(prog, vers, 0);
      expect(reply.acceptStat, `${prog} v${vers}`).toBe(AcceptStat.PROG_MISMATCH);
      expect([reply.body.u32(), reply.body.u32()]).toEqual([low, high]);
    }
  });

  it('serves MOUNT v1 and v3 next to NFS', async () => {
    for (const vers of [1, 3]) {
      const reply = await client.call(MOUNT_PROGRAM, vers, MountProc.MNT, (w) =>
        w.string('/memfs'),
      );
      expect(reply.acceptStat).toBe(AcceptStat.SUCCESS);
      expect(reply.body.u32()).toBe(0);
    }
    const nul = await client.call(NFS_PROGRAM, 3, 0);
    expect([nul.acceptStat, nul.body.remaining]).toEqual([AcceptStat.SUCCESS, 0]);
  });
});

describe('an NfsServer with MOUNT on its own port', () => {
  it('serves MOUNT there and NFS on the NFS port', async () => {
    const baseline = openHandles();
    const server = new NfsServer({
      exports: [{ path: '/memfs', fs: new MemoryFileSystem() }],
      nfsPort: 0,
      mountPort: 0,
    });
    const { nfsPort, mountPort } = await server.start();
    expect(mountPort).not.toBe(nfsPort);
    const mount = await RpcTestClient.connect(mountPort);
    try {
      const reply = await mount.call(MOUNT_PROGRAM, 3, MountProc.MNT, (w) => w.string('/memfs'));
      expect([reply.acceptStat, reply.body.u32()]).toEqual([AcceptStat.SUCCESS, 0]);
    } finally {
      await mount.close();
      await server.stop();
    }
    await expectNoLeakedHandles(baseline);
  });
});
