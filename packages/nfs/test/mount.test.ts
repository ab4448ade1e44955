import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildExports } from '../src/exports.js';
import { type FileAttributes, type NfsFileSystem, NfsStatusError } from '../src/filesystem.js';
import { HANDLE_SIZE, HandleCodec } from '../src/handles.js';
import {
  createMountProgram,
  FHSIZE,
  MOUNT_PROGRAM,
  MountProc,
  MountStat3,
} from '../src/mount/mount-program.js';
import { type CallEvent, Dispatcher, type RpcCall } from '../src/rpc/dispatcher.js';
import { AcceptStat } from '../src/rpc/message.js';
import type { ServerState } from '../src/state.js';
import { RpcTcpServer } from '../src/transport/tcp-server.js';
import type { XdrReader } from '../src/xdr/reader.js';
import type { XdrWriter } from '../src/xdr/writer.js';
import { expectNoLeakedHandles, openHandles } from './helpers/open-handles.js';
import { type RpcReply, RpcTestClient } from './helpers/rpc-client.js';

/** A fixed tree: / (1) holding sub/ (2) and file (3); lookups of `boom` fail unexpectedly. */
function tree(): NfsFileSystem {
  const attrs = (fileId: bigint, type: FileAttributes['type']): FileAttributes => {
    const t = { seconds: 0, nanoseconds: 0 };
    return {
      type,
      mode: 0o755,
      nlink: 1,
      uid: 0,
      gid: 0,
      size: 0,
      used: 0,
      fileId,
      atime: t,
      mtime: t,
      ctime: t,
    };
  };
  const children = new Map<bigint, Map<string, bigint>>([
    [
      1n,
      new Map([
        ['sub', 2n],
        ['file', 3n],
      ]),
    ],
    [2n, new Map()],
  ]);
  return {
    rootId: 1n,
    async getattr(id) {
      if (id === 3n) return attrs(id, 'file');
      if (children.has(id)) return attrs(id, 'directory');
      throw NfsStatusError.of('STALE');
    },
    async lookup(dir, name) {
      if (name === 'boom') throw new Error('disk on fire');
      const entries = children.get(dir);
      if (!entries) throw NfsStatusError.of('NOTDIR');
      const id = entries.get(name);
      if (id === undefined) throw NfsStatusError.of('NOENT');
      return id;
    },
    async read() {
      return new Uint8Array(0);
    },
    async readdir(dir) {
      return [...(children.get(dir) ?? [])].map(([name, fileId]) => ({ name, fileId }));
    },
  };
}

const dirpath = (p: string) => (w: XdrWriter) => w.string(p);

function ok(reply: RpcReply): XdrReader {
  expect(reply.replyStat).toBe(0);
  expect(reply.acceptStat).toBe(AcceptStat.SUCCESS);
  return reply.body;
}

function readMountres3(r: XdrReader): { status: number; handle?: Buffer; flavors?: number[] } {
  const status = r.u32();
  if (status !== 0) return { status };
  const handle = Buffer.from(r.opaque(64));
  const flavors: number[] = [];
  for (let n = r.u32(); n > 0; n--) flavors.push(r.u32());
  return { status, handle, flavors };
}

function readMountlist(r: XdrReader): [string, string][] {
  const out: [string, string][] = [];
  while (r.bool()) out.push([r.string(255), r.string(1024)]);
  return out;
}

describe('MOUNT v3 and v1', () => {
  const errors: unknown[] = [];
  const fs = tree();
  const exports = buildExports([
    { path: '/memfs', fs },
    { path: '/remote-only', fs, clients: ['10.0.0.0/8'] },
    { path: '/sys-only/', fs, authFlavors: ['sys'], clients: ['0.0.0.0/0', '::/0', '127.0.0.1'] },
  ]);
  const state: ServerState = {
    exports,
    handles: new HandleCodec(randomBytes(32)),
    mounts: new Map(),
    sizes: { rtmax: 65536, wtmax: 65536, dtpref: 8192 },
    bootVerifier: randomBytes(8),
    reportError: (err: unknown, _call: RpcCall) => errors.push(err),
  };
  const memfs = exports[0]!;
  let server: RpcTcpServer;
  let client: RpcTestClient;
  let baseline: string[];
  const events: CallEvent[] = [];

  beforeAll(async () => {
    baseline = openHandles();
    const d = new Dispatcher({ onCall: (e) => events.push(e) });
    d.register(createMountProgram(state));
    server = new RpcTcpServer(d);
    const { port } = await server.listen(0, '127.0.0.1');
    client = await RpcTestClient.connect(port);
  });

  afterAll(async () => {
    await client.close();
    await server.close();
    await expectNoLeakedHandles(baseline);
  });

  const mnt3 = async (path: string) =>
    readMountres3(ok(await client.call(MOUNT_PROGRAM, 3, MountProc.MNT, dirpath(path))));
  const dump = async (vers = 3) =>
    readMountlist(ok(await client.call(MOUNT_PROGRAM, vers, MountProc.DUMP)));
  const umntall = async () => ok(await client.call(MOUNT_PROGRAM, 3, MountProc.UMNTALL));

  it('answers NULL in v1 and v3', async () => {
    for (const vers of [1, 3])
      expect(ok(await client.call(MOUNT_PROGRAM, vers, MountProc.NULL)).remaining).toBe(0);
  });

  it('MNT of an export answers its root handle and auth flavors', async () => {
    const res = await mnt3('/memfs');
    expect(res.status).toBe(MountStat3.MNT3_OK);
    expect(res.handle).toEqual(state.handles.encode(memfs.id, fs.rootId));
    expect(res.handle).toHaveLength(HANDLE_SIZE);
    expect(state.handles.decode(res.handle!)).toEqual({ exportId: memfs.id, fileId: 1n });
    expect(res.flavors).toEqual([1, 0]);
    expect((await mnt3('/memfs/')).handle).toEqual(res.handle);
    expect((await mnt3('//memfs/./')).handle).toEqual(res.handle);
    expect(await mnt3('/sys-only')).toMatchObject({ status: 0, flavors: [1] });
    await umntall();
  });

  it('MNT of a directory inside an export answers that directory', async () => {
    const res = await mnt3('/memfs/sub');
    expect(res.status).toBe(MountStat3.MNT3_OK);
    expect(state.handles.decode(res.handle!)).toEqual({ exportId: memfs.id, fileId: 2n });
    expect((await mnt3('/memfs/file')).status).toBe(MountStat3.MNT3ERR_NOTDIR);
    expect((await mnt3('/memfs/missing')).status).toBe(MountStat3.MNT3ERR_NOENT);
    expect((await mnt3('/memfs/file/x')).status).toBe(MountStat3.MNT3ERR_NOTDIR);
    expect((await mnt3('/memfs/boom')).status).toBe(MountStat3.MNT3ERR_SERVERFAULT);
    expect(errors).toHaveLength(1);
    expect((errors[0] as Error).message).toBe('disk on fire');
    await umntall();
  });

  it('MNT of an unknown or malformed path answers NOENT or INVAL', async () => {
    expect((await mnt3('/nope')).status).toBe(MountStat3.MNT3ERR_NOENT);
    expect((await mnt3('/memfsx')).status).toBe(MountStat3.MNT3ERR_NOENT);
    expect((await mnt3('/')).status).toBe(MountStat3.MNT3ERR_NOENT);
    expect((await mnt3('memfs')).status).toBe(MountStat3.MNT3ERR_INVAL);
    expect((await mnt3('/memfs/../remote-only')).status).toBe(MountStat3.MNT3ERR_INVAL);
    expect(await dump()).toEqual([]);
  });

  it('MNT takes paths up to MNTPATHLEN (1024) bytes; longer ones are GARBAGE_ARGS', async () => {
    expect((await mnt3(`/${'a'.repeat(1023)}`)).status).toBe(MountStat3.MNT3ERR_NOENT);
    const long = await client.call(
      MOUNT_PROGRAM,
      3,
      MountProc.MNT,
      dirpath(`/${'a'.repeat(1024)}`),
    );
    expect(long.acceptStat).toBe(AcceptStat.GARBAGE_ARGS);
  });

  it('MNT by a client the export does not allow answers ACCES', async () => {
    expect((await mnt3('/remote-only')).status).toBe(MountStat3.MNT3ERR_ACCES);
    const v1 = ok(await client.call(MOUNT_PROGRAM, 1, MountProc.MNT, dirpath('/remote-only')));
    expect(v1.u32()).toBe(13);
    expect(v1.remaining).toBe(0);
    expect(await dump()).toEqual([]);
  });

  it('v1 MNT answers an fhstatus with a fixed 32-byte handle', async () => {
    expect(HANDLE_SIZE).toBe(FHSIZE);
    const r = ok(await client.call(MOUNT_PROGRAM, 1, MountProc.MNT, dirpath('/memfs')));
    expect(r.remaining).toBe(4 + 32);
    expect(r.u32()).toBe(0);
    expect(Buffer.from(r.fixed(32))).toEqual(state.handles.encode(memfs.id, fs.rootId));
    const missing = ok(await client.call(MOUNT_PROGRAM, 1, MountProc.MNT, dirpath('/nope')));
    expect([missing.u32(), missing.remaining]).toEqual([2, 0]);
    const broken = ok(await client.call(MOUNT_PROGRAM, 1, MountProc.MNT, dirpath('/memfs/boom')));
    expect(broken.u32()).toBe(5);
    await umntall();
  });

  it('DUMP lists mounts; UMNT and UMNTALL remove them', async () => {
    await mnt3('/memfs');
    await mnt3('/memfs/sub/');
    await mnt3('/sys-only');
    expect(await dump()).toEqual([
      ['127.0.0.1', '/memfs'],
      ['127.0.0.1', '/memfs/sub'],
      ['127.0.0.1', '/sys-only'],
    ]);
    expect(await dump(1)).toEqual(await dump(3));
    expect(
      ok(await client.call(MOUNT_PROGRAM, 3, MountProc.UMNT, dirpath('/memfs/sub/'))).remaining,
    ).toBe(0);
    expect(await dump()).toEqual([
      ['127.0.0.1', '/memfs'],
      ['127.0.0.1', '/sys-only'],
    ]);
    ok(await client.call(MOUNT_PROGRAM, 1, MountProc.UMNT, dirpath('/not-mounted')));
    expect(await dump()).toHaveLength(2);
    expect((await umntall()).remaining).toBe(0);
    expect(await dump()).toEqual([]);
    expect(state.mounts.size).toBe(0);
  });

  it('EXPORT lists the exports with their client groups', async () => {
    for (const vers of [1, 3]) {
      const r = ok(await client.call(MOUNT_PROGRAM, vers, MountProc.EXPORT));
      const list: [string, string[]][] = [];
      while (r.bool()) {
        const dir = r.string(1024);
        const groups: string[] = [];
        while (r.bool()) groups.push(r.string(255));
        list.push([dir, groups]);
      }
      expect(list).toEqual([
        ['/memfs', ['127.0.0.0/8', '::1']],
        ['/remote-only', ['10.0.0.0/8']],
        ['/sys-only', ['*', '127.0.0.1']],
      ]);
    }
  });

  it('answers PROG_MISMATCH (1..3) for MOUNT v2 and PROC_UNAVAIL past EXPORT', async () => {
    const v2 = await client.call(MOUNT_PROGRAM, 2, MountProc.NULL);
    expect(v2.acceptStat).toBe(AcceptStat.PROG_MISMATCH);
    expect([v2.body.u32(), v2.body.u32()]).toEqual([1, 3]);
    expect((await client.call(MOUNT_PROGRAM, 3, 6)).acceptStat).toBe(AcceptStat.PROC_UNAVAIL);
    expect((await client.call(MOUNT_PROGRAM, 1, 7)).acceptStat).toBe(AcceptStat.PROC_UNAVAIL);
  });

  it('reports the status of MNT in call events (a refused mount is not a mount)', async () => {
    events.length = 0;
    await mnt3('/memfs');
    await mnt3('/remote-only');
    await mnt3('/nowhere');
    ok(await client.call(MOUNT_PROGRAM, 1, MountProc.MNT, dirpath('/remote-only')));
    await client.call(MOUNT_PROGRAM, 3, MountProc.UMNT, dirpath('/memfs'));
    expect(events.map((e) => [e.vers, e.proc, e.status])).toEqual([
      [3, MountProc.MNT, MountStat3.MNT3_OK],
      [3, MountProc.MNT, MountStat3.MNT3ERR_ACCES],
      [3, MountProc.MNT, MountStat3.MNT3ERR_NOENT],
      [1, MountProc.MNT, MountStat3.MNT3ERR_ACCES],
      [3, MountProc.UMNT, undefined],
    ]);
    await umntall();
  });

  it('answers AUTH_NONE callers too', async () => {
    const r = await client.call(MOUNT_PROGRAM, 3, MountProc.MNT, dirpath('/memfs'), {
      cred: { flavor: 'none' },
    });
    expect(readMountres3(ok(r)).status).toBe(0);
    await umntall();
  });
});
