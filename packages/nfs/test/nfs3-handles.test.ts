import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { NfsStatus } from '../src/filesystem.js';
import { exportIdOf, HANDLE_SIZE, HandleCodec, MAX_HANDLE_SIZE } from '../src/handles.js';
import { Nfs3Proc } from '../src/nfs3/constants.js';
import { NFS_PROGRAM } from '../src/nfs3/nfs3-program.js';
import { AcceptStat, AuthStat } from '../src/rpc/message.js';
import { MemoryFileSystem } from './helpers/memory-fs.js';
import {
  expectNoOpenSockets,
  Nfs3Client,
  RpcReplyError,
  startTestServer,
  TEST_HANDLE_KEY,
  type TestServer,
  useNfs3Fixture,
} from './helpers/nfs3-client.js';

describe('file handles', () => {
  const f = useNfs3Fixture();

  it('are 32 bytes, within the 56 bytes ESXi accepts', () => {
    expect(f.root.length).toBe(HANDLE_SIZE);
    expect(HANDLE_SIZE).toBeLessThanOrEqual(MAX_HANDLE_SIZE);
  });

  it('match what MOUNT hands out for the export', async () => {
    const reply = await f.client.rpc.call(100005, 3, 1, (w) => w.string('/memfs'));
    expect(reply.acceptStat).toBe(AcceptStat.SUCCESS);
    expect(reply.body.u32()).toBe(0);
    expect(Buffer.from(reply.body.opaque(64))).toEqual(f.root);
  });

  it('answers BADHANDLE for a handle of the wrong length or version', async () => {
    for (const bad of [
      Buffer.alloc(0),
      f.root.subarray(0, 20),
      Buffer.concat([f.root, Buffer.alloc(4)]),
    ]) {
      expect((await f.client.getattr(bad)).status).toBe(NfsStatus.BADHANDLE);
    }
    const version = Buffer.from(f.root);
    version[0] = 2;
    expect((await f.client.getattr(version)).status).toBe(NfsStatus.BADHANDLE);
    const lookup = await f.client.lookup(f.root.subarray(0, 8), 'x');
    expect(lookup).toEqual({ status: NfsStatus.BADHANDLE, dirAttrs: undefined });
  });

  it('answers STALE for a tampered handle, whichever byte is flipped', async () => {
    for (let i = 4; i < HANDLE_SIZE; i++) {
      const h = Buffer.from(f.root);
      h[i]! ^= 0x01;
      expect((await f.client.getattr(h)).status, `byte ${i}`).toBe(NfsStatus.STALE);
    }
  });

  it('answers STALE for a handle signed with another key', async () => {
    const foreign = new HandleCodec(randomBytes(32)).encode(exportIdOf('/memfs'), f.fs.rootId);
    expect((await f.client.getattr(foreign)).status).toBe(NfsStatus.STALE);
  });

  it('answers STALE for a well-signed handle of an export that is not served', async () => {
    const other = f.server.handles.encode(exportIdOf('/elsewhere'), 1n);
    expect((await f.client.getattr(other)).status).toBe(NfsStatus.STALE);
  });

  it('rejects a handle longer than NFS3_FHSIZE as garbage', async () => {
    const err = await f.client.getattr(Buffer.alloc(65)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RpcReplyError);
    expect((err as RpcReplyError).reply.acceptStat).toBe(AcceptStat.GARBAGE_ARGS);
  });
});

describe('export access rules', () => {
  const f = useNfs3Fixture((fs) => ({
    exports: [
      { path: '/memfs', fs },
      { path: '/remote-only', fs, clients: ['10.9.9.9'] },
      { path: '/sys-only', fs, authFlavors: ['sys'] },
      { path: '/none-only', fs, authFlavors: ['none'] },
      { path: '/squash-root', fs, rootSquash: true },
      { path: '/squash-all', fs, allSquash: true, anonUid: 500, anonGid: 501 },
    ],
  }));

  it('answers ACCES to a client the export does not list', async () => {
    const res = await f.client.getattr(f.server.handle('/remote-only'));
    expect(res.status).toBe(NfsStatus.ACCES);
    const read = await f.client.read(
      f.server.handle('/remote-only', f.fs.writeFile('/f', 'x')),
      0,
      1,
    );
    expect(read).toEqual({ status: NfsStatus.ACCES, attrs: undefined });
  });

  it('denies a credential flavor the export does not accept with AUTH_TOOWEAK', async () => {
    const denied = async (path: string, flavor: 'none' | 'sys') => {
      const err = await f.client
        .getattr(f.server.handle(path), { cred: { flavor } })
        .catch((e: unknown) => e);
      expect(err).toBeInstanceOf(RpcReplyError);
      const { reply } = err as RpcReplyError;
      expect(reply.replyStat).toBe(1);
      expect(reply.rejectStat).toBe(1);
      expect(reply.body.u32()).toBe(AuthStat.AUTH_TOOWEAK);
    };
    await denied('/sys-only', 'none');
    await denied('/none-only', 'sys');
    expect((await f.client.getattr(f.server.handle('/sys-only'))).status).toBe(NfsStatus.OK);
    const none = await f.client.getattr(f.server.handle('/none-only'), {
      cred: { flavor: 'none' },
    });
    expect(none.status).toBe(NfsStatus.OK);
  });

  it('squashes root to the anonymous user with rootSquash, and everyone with allSquash', async () => {
    const make = async (path: string, name: string, uid: number) => {
      const res = await f.client.create(
        f.server.handle(path),
        name,
        { mode: 'guarded' },
        { cred: { flavor: 'sys', uid, gid: uid } },
      );
      expect(res.status).toBe(NfsStatus.OK);
      return res.objAttrs!;
    };
    expect(await make('/memfs', 'a', 0)).toMatchObject({ uid: 0, gid: 0 });
    expect(await make('/squash-root', 'b', 0)).toMatchObject({ uid: 65534, gid: 65534 });
    expect(await make('/squash-root', 'c', 1000)).toMatchObject({ uid: 1000, gid: 1000 });
    expect(await make('/squash-all', 'd', 1000)).toMatchObject({ uid: 500, gid: 501 });
  });
});

describe('handles across restarts', () => {
  let server: TestServer | undefined;
  let client: Nfs3Client | undefined;
  afterEach(async () => {
    await client?.close();
    await server?.stop();
    client = undefined;
    server = undefined;
    await expectNoOpenSockets();
  });

  const restart = async (fs: MemoryFileSystem, handleKey: Buffer) => {
    await client?.close();
    await server?.stop();
    server = await startTestServer({ exports: [{ path: '/memfs', fs }], handleKey });
    client = await Nfs3Client.connect(server.port);
    return client;
  };

  it('stay valid when the server restarts with the same key', async () => {
    const fs = new MemoryFileSystem();
    fs.writeFile('/vm/disk-flat.vmdk', 'disk');
    let c = await restart(fs, TEST_HANDLE_KEY);
    const dir = await c.lookup(server!.handle('/memfs'), 'vm');
    const file = await c.lookup(dir.object!, 'disk-flat.vmdk');
    c = await restart(fs, TEST_HANDLE_KEY);
    const read = await c.read(file.object!, 0, 100);
    expect(read.data?.toString()).toBe('disk');
    c = await restart(fs, randomBytes(32));
    expect((await c.getattr(file.object!)).status).toBe(NfsStatus.STALE);
  });
});

describe('procedure numbers', () => {
  const f = useNfs3Fixture();

  it('answers PROC_UNAVAIL past COMMIT and PROG_MISMATCH for NFSv2 and v4', async () => {
    const past = await f.client.rpc.call(NFS_PROGRAM, 3, Nfs3Proc.COMMIT + 1);
    expect(past.acceptStat).toBe(AcceptStat.PROC_UNAVAIL);
    for (const vers of [2, 4]) {
      const reply = await f.client.rpc.call(NFS_PROGRAM, vers, 0);
      expect(reply.acceptStat).toBe(AcceptStat.PROG_MISMATCH);
      expect([reply.body.u32(), reply.body.u32()]).toEqual([3, 3]);
    }
  });

  it('answers PROG_UNAVAIL to NFS_ACL, which Linux clients probe', async () => {
    const reply = await f.client.rpc.call(100227, 3, 0);
    expect(reply.acceptStat).toBe(AcceptStat.PROG_UNAVAIL);
  });
});
