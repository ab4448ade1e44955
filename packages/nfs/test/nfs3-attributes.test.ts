import { describe, expect, it } from 'vitest';
import { NfsStatus } from '../src/filesystem.js';
import { exportIdOf } from '../src/handles.js';
import { Access3, Fsf3, Nfs3Proc } from '../src/nfs3/constants.js';
import { MemoryFileSystem, readOnlyView } from './helpers/memory-fs.js';
import { useNfs3Fixture } from './helpers/nfs3-client.js';

const ALL = 0x3f;
const GiB = 1024 ** 3;

describe('NULL and GETATTR', () => {
  const f = useNfs3Fixture();

  it('answers NULL with an empty body', async () => {
    await expect(f.client.null()).resolves.toBeUndefined();
  });

  it('answers GETATTR of the root with an 84-byte fattr3', async () => {
    let size = -1;
    const res = await f.client.call(
      Nfs3Proc.GETATTR,
      (w) => w.opaque(f.root),
      (r) => {
        size = r.remaining;
        return r.u32();
      },
    );
    expect(res).toBe(NfsStatus.OK);
    expect(size).toBe(4 + 84);
    const { attrs } = await f.client.getattr(f.root);
    expect(attrs).toMatchObject({
      type: 'directory',
      mode: 0o755,
      fileId: f.fs.rootId,
      fsid: BigInt(exportIdOf('/memfs')),
    });
  });

  it('reports a file as the adapter describes it, with the permission bits only', async () => {
    const id = f.fs.writeFile('/f.bin', 'hello', { mode: 0o4755 });
    const { status, attrs } = await f.client.getattr(f.server.handle('/memfs', id));
    expect(status).toBe(NfsStatus.OK);
    const expected = await f.fs.getattr(id);
    expect(attrs).toMatchObject({
      type: 'file',
      mode: 0o4755,
      nlink: 1,
      size: 5,
      used: expected.used,
      fileId: id,
      mtime: expected.mtime,
      ctime: expected.ctime,
    });
  });

  it('answers STALE for a file that is gone', async () => {
    const id = f.fs.writeFile('/gone', 'x');
    await f.fs.remove(f.fs.rootId, 'gone');
    expect((await f.client.getattr(f.server.handle('/memfs', id))).status).toBe(NfsStatus.STALE);
  });
});

describe('SETATTR', () => {
  const f = useNfs3Fixture();

  it('changes mode, owner and times and answers wcc_data', async () => {
    const id = f.fs.writeFile('/f', 'abc');
    const fh = f.server.handle('/memfs', id);
    const before = await f.fs.getattr(id);
    const mtime = { seconds: 1_000_000, nanoseconds: 5 };
    const res = await f.client.setattr(fh, { mode: 0o600, uid: 7, gid: 8, mtime, atime: 'server' });
    expect(res.status).toBe(NfsStatus.OK);
    expect(res.wcc.before).toEqual({ size: 3, mtime: before.mtime, ctime: before.ctime });
    expect(res.wcc.after).toMatchObject({ mode: 0o600, uid: 7, gid: 8, mtime });
  });

  it('truncates and extends sparsely by size (a 6 GiB swap file costs nothing)', async () => {
    const id = f.fs.writeFile('/swap', 'data');
    const fh = f.server.handle('/memfs', id);
    const grown = await f.client.setattr(fh, { size: 6 * GiB });
    expect(grown.status).toBe(NfsStatus.OK);
    expect(grown.wcc.after?.size).toBe(6 * GiB);
    expect(f.fs.chunkCount('/swap')).toBe(1);
    const shrunk = await f.client.setattr(fh, { size: 2 });
    expect(shrunk.wcc.after?.size).toBe(2);
    expect(f.fs.readFile('/swap').toString()).toBe('da');
  });

  it('applies a guarded change only while the ctime matches (else NOT_SYNC)', async () => {
    const id = f.fs.writeFile('/g', 'x');
    const fh = f.server.handle('/memfs', id);
    const { ctime } = await f.fs.getattr(id);
    const ok = await f.client.setattr(fh, { mode: 0o640 }, ctime);
    expect(ok.status).toBe(NfsStatus.OK);
    const stale = await f.client.setattr(fh, { mode: 0o600 }, ctime);
    expect(stale.status).toBe(NfsStatus.NOT_SYNC);
    expect(stale.wcc.before).toBeDefined();
    expect(stale.wcc.after?.mode).toBe(0o640);
  });

  it('refuses a size on a directory with INVAL', async () => {
    const res = await f.client.setattr(f.root, { size: 0 });
    expect(res.status).toBe(NfsStatus.INVAL);
    expect(res.wcc.after?.type).toBe('directory');
  });
});

describe('ACCESS', () => {
  const f = useNfs3Fixture((fs) => ({
    exports: [
      { path: '/memfs', fs },
      { path: '/ro', fs, readOnly: true },
      { path: '/view', fs: readOnlyView(fs) },
    ],
  }));
  const sys = (uid: number, gid: number, gids: number[] = []) => ({
    cred: { flavor: 'sys' as const, uid, gid, gids },
  });

  it('gives root everything a file allows, but no execute without an x bit', async () => {
    const fh = f.server.handle('/memfs', f.fs.writeFile('/f', 'x', { mode: 0o644 }));
    const res = await f.client.access(fh, ALL);
    expect(res.status).toBe(NfsStatus.OK);
    expect(res.access).toBe(Access3.READ | Access3.MODIFY | Access3.EXTEND);
    expect(res.attrs?.type).toBe('file');
    const exe = f.server.handle('/memfs', f.fs.writeFile('/x', 'x', { mode: 0o700 }));
    expect((await f.client.access(exe, ALL)).access).toBe(
      Access3.READ | Access3.MODIFY | Access3.EXTEND | Access3.EXECUTE,
    );
    expect((await f.client.access(f.root, ALL)).access).toBe(
      Access3.READ | Access3.LOOKUP | Access3.MODIFY | Access3.EXTEND | Access3.DELETE,
    );
  });

  it('never answers a bit that was not asked for', async () => {
    const fh = f.server.handle('/memfs', f.fs.writeFile('/f', 'x', { mode: 0o777 }));
    for (const handle of [fh, f.root]) {
      for (let mask = 0; mask <= ALL; mask++) {
        const res = await f.client.access(handle, mask);
        expect(res.access! & ~mask).toBe(0);
      }
    }
    // Unknown bits are never echoed either.
    expect((await f.client.access(fh, 0xffff_ffff)).access! & ~ALL).toBe(0);
  });

  it('answers exactly what libnfs asks when opening read-write', async () => {
    const fh = f.server.handle('/memfs', f.fs.writeFile('/disk.vmdk', 'x'));
    const mask = Access3.READ | Access3.MODIFY;
    expect((await f.client.access(fh, mask)).access).toBe(mask);
  });

  it('uses the owner, group and other bits for other users', async () => {
    const fh = f.server.handle('/memfs', f.fs.writeFile('/f', 'x', { mode: 0o640 }));
    await f.fs.setattr(f.fs.idOf('/f'), { uid: 1000, gid: 100 });
    const rw = Access3.READ | Access3.MODIFY | Access3.EXTEND;
    expect((await f.client.access(fh, ALL, sys(1000, 1))).access).toBe(rw);
    expect((await f.client.access(fh, ALL, sys(1001, 100))).access).toBe(Access3.READ);
    expect((await f.client.access(fh, ALL, sys(1001, 1, [5, 100]))).access).toBe(Access3.READ);
    expect((await f.client.access(fh, ALL, sys(1001, 1))).access).toBe(0);
    const dir = f.server.handle('/memfs', f.fs.mkdirp('/d'));
    await f.fs.setattr(f.fs.idOf('/d'), { mode: 0o751, uid: 1000, gid: 100 });
    expect((await f.client.access(dir, ALL, sys(1001, 1))).access).toBe(Access3.LOOKUP);
    expect((await f.client.access(dir, ALL, sys(1001, 100))).access).toBe(
      Access3.READ | Access3.LOOKUP,
    );
  });

  it('grants no change on a read-only export or an adapter without write methods', async () => {
    const id = f.fs.writeFile('/f', 'x', { mode: 0o666 });
    for (const path of ['/ro', '/view']) {
      expect((await f.client.access(f.server.handle(path, id), ALL)).access).toBe(Access3.READ);
      expect((await f.client.access(f.server.handle(path), ALL)).access).toBe(
        Access3.READ | Access3.LOOKUP,
      );
    }
  });
});

describe('FSSTAT, FSINFO, PATHCONF', () => {
  const plain = new MemoryFileSystem();
  const f = useNfs3Fixture((fs) => ({
    rtmax: 256 * 1024,
    wtmax: 128 * 1024,
    exports: [
      { path: '/memfs', fs },
      { path: '/nostat', fs: readOnlyView(plain) },
    ],
  }));

  it('reports the adapter fsstat, or zeros without one', async () => {
    const res = await f.client.fsstat(f.root);
    const stat = await f.fs.fsstat();
    expect(res).toMatchObject({
      status: NfsStatus.OK,
      tbytes: BigInt(stat.totalBytes),
      fbytes: BigInt(stat.freeBytes),
      abytes: BigInt(stat.availableBytes),
      tfiles: BigInt(stat.totalFiles),
      invarsec: 0,
    });
    expect(res.attrs?.type).toBe('directory');
    const zeros = await f.client.fsstat(f.server.handle('/nostat'));
    expect(zeros).toMatchObject({ status: NfsStatus.OK, tbytes: 0n, fbytes: 0n, afiles: 0n });
  });

  it('advertises the transfer sizes, a huge maxfilesize, 1 ns times and the properties', async () => {
    const res = await f.client.fsinfo(f.root);
    expect(res).toMatchObject({
      status: NfsStatus.OK,
      rtmax: 256 * 1024,
      rtpref: 256 * 1024,
      rtmult: 4096,
      wtmax: 128 * 1024,
      wtpref: 128 * 1024,
      wtmult: 4096,
      dtpref: 64 * 1024,
      timeDelta: { seconds: 0, nanoseconds: 1 },
      properties: Fsf3.LINK | Fsf3.SYMLINK | Fsf3.HOMOGENEOUS | Fsf3.CANSETTIME,
    });
    expect(res.maxfilesize! >= 64n * 1024n ** 4n).toBe(true);
    expect(res.attrs?.fileId).toBe(f.fs.rootId);
  });

  it('answers PATHCONF', async () => {
    expect(await f.client.pathconf(f.root)).toMatchObject({
      status: NfsStatus.OK,
      nameMax: 255,
      noTrunc: true,
      chownRestricted: true,
      caseInsensitive: false,
      casePreserving: true,
    });
  });
});
