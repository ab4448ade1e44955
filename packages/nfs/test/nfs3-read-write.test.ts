import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { NfsStatus, type StableHow } from '../src/filesystem.js';
import { StableHow3 } from '../src/nfs3/constants.js';
import { AcceptStat } from '../src/rpc/message.js';
import { MemoryFileSystem, readOnlyView } from './helpers/memory-fs.js';
import { type RpcReplyError, useNfs3Fixture } from './helpers/nfs3-client.js';

const KiB = 1024;
const GiB = 1024 ** 3;

/** Commits every write at once and has its own write verifier. */
class SyncFileSystem extends MemoryFileSystem {
  override async write(
    id: bigint,
    offset: number,
    data: Uint8Array,
    stable: StableHow,
  ): Promise<StableHow> {
    await super.write(id, offset, data, stable);
    return 'file_sync';
  }

  writeVerifier(): Uint8Array {
    return Buffer.from('VERIFIER');
  }
}

describe('READ', () => {
  const f = useNfs3Fixture(() => ({ rtmax: 64 * KiB }));

  it('sets eof when the data reaches the end, also when it returns data', async () => {
    const fh = f.server.handle('/memfs', f.fs.writeFile('/f', '0123456789'));
    const whole = await f.client.read(fh, 0, 100);
    expect(whole).toMatchObject({ status: NfsStatus.OK, count: 10, eof: true });
    expect(whole.data?.toString()).toBe('0123456789');
    expect(whole.attrs?.size).toBe(10);
    const exact = await f.client.read(fh, 4, 6);
    expect(exact).toMatchObject({ count: 6, eof: true });
    const middle = await f.client.read(fh, 2, 3);
    expect(middle).toMatchObject({ count: 3, eof: false });
    expect(middle.data?.toString()).toBe('234');
    const past = await f.client.read(fh, 50, 10);
    expect(past).toMatchObject({ status: NfsStatus.OK, count: 0, eof: true });
    const none = await f.client.read(fh, 0, 0);
    expect(none).toMatchObject({ status: NfsStatus.OK, count: 0, eof: false });
  });

  it('pads data of odd length and keeps the stream in step', async () => {
    const fh = f.server.handle('/memfs', f.fs.writeFile('/odd', 'abcde'));
    for (const n of [1, 2, 3, 5]) {
      expect((await f.client.read(fh, 0, n)).data?.toString()).toBe('abcde'.slice(0, n));
    }
  });

  it('caps count at rtmax', async () => {
    const data = randomBytes(200 * KiB);
    const fh = f.server.handle('/memfs', f.fs.writeFile('/big', data));
    const res = await f.client.read(fh, 1000, 1024 * KiB);
    expect(res).toMatchObject({ count: 64 * KiB, eof: false });
    expect(res.data?.equals(data.subarray(1000, 1000 + 64 * KiB))).toBe(true);
  });

  it('answers ISDIR for a directory and INVAL for a symbolic link', async () => {
    const dir = await f.client.read(f.root, 0, 10);
    expect(dir.status).toBe(NfsStatus.ISDIR);
    expect(dir.attrs?.type).toBe('directory');
    const link = await f.client.symlink(f.root, 'l', 'target');
    expect((await f.client.read(link.object!, 0, 10)).status).toBe(NfsStatus.INVAL);
  });

  it('reads and writes beyond 4 GiB in a sparse file', async () => {
    const fh = f.server.handle('/memfs', f.fs.writeFile('/disk-flat.vmdk', '', { size: 6 * GiB }));
    const data = randomBytes(10_000);
    const at = 4 * GiB - 5000; // straddles the 4 GiB line
    const w = await f.client.write(fh, at, data, StableHow3.FILE_SYNC);
    expect(w).toMatchObject({ status: NfsStatus.OK, count: data.length });
    const high = 5 * GiB + 3;
    expect((await f.client.write(fh, high, data.subarray(0, 7))).status).toBe(NfsStatus.OK);
    expect((await f.client.read(fh, at, data.length)).data?.equals(data)).toBe(true);
    expect((await f.client.read(fh, high, 7)).data).toEqual(data.subarray(0, 7));
    expect((await f.client.read(fh, high + 7, 9)).data).toEqual(Buffer.alloc(9));
    const end = await f.client.read(fh, 6 * GiB - 4, 100);
    expect(end).toMatchObject({ count: 4, eof: true });
    expect(end.attrs?.size).toBe(6 * GiB);
    expect(f.fs.chunkCount('/disk-flat.vmdk')).toBeLessThanOrEqual(3);
  });
});

describe('WRITE and COMMIT', () => {
  const f = useNfs3Fixture((fs) => ({
    wtmax: 8 * KiB,
    exports: [
      { path: '/memfs', fs },
      { path: '/sync', fs: new SyncFileSystem() },
      { path: '/ro', fs, readOnly: true },
      { path: '/view', fs: readOnlyView(fs) },
    ],
  }));

  it('writes, answers wcc_data, the count, how it committed and the boot verifier', async () => {
    const id = f.fs.writeFile('/f', 'abc');
    const fh = f.server.handle('/memfs', id);
    const before = await f.fs.getattr(id);
    const res = await f.client.write(fh, 3, Buffer.from('defg'), StableHow3.UNSTABLE);
    expect(res).toMatchObject({ status: NfsStatus.OK, count: 4, committed: StableHow3.UNSTABLE });
    expect(res.wcc.before).toEqual({ size: 3, mtime: before.mtime, ctime: before.ctime });
    expect(res.wcc.after?.size).toBe(7);
    expect(f.fs.readFile('/f').toString()).toBe('abcdefg');
    for (const stable of [StableHow3.DATA_SYNC, StableHow3.FILE_SYNC]) {
      const again = await f.client.write(fh, 0, Buffer.from('A'), stable);
      expect(again.committed).toBe(stable);
      expect(again.verf).toEqual(res.verf);
    }
    const commit = await f.client.commit(fh, 0, 0);
    expect(commit.status).toBe(NfsStatus.OK);
    expect(commit.verf).toEqual(res.verf);
    expect(commit.wcc.after?.size).toBe(7);
    expect(f.fs.commits).toBe(1);
  });

  it("answers the adapter's committed level and write verifier", async () => {
    const create = await f.client.create(f.server.handle('/sync'), 'f', { mode: 'guarded' });
    const res = await f.client.write(create.object!, 0, Buffer.from('x'), StableHow3.UNSTABLE);
    expect(res.committed).toBe(StableHow3.FILE_SYNC);
    expect(res.verf?.toString()).toBe('VERIFIER');
    expect((await f.client.commit(create.object!)).verf?.toString()).toBe('VERIFIER');
  });

  it('writes only wtmax bytes of a longer write and says so', async () => {
    const fh = f.server.handle('/memfs', f.fs.writeFile('/f'));
    const data = randomBytes(10 * KiB);
    const res = await f.client.write(fh, 0, data);
    expect(res).toMatchObject({ status: NfsStatus.OK, count: 8 * KiB });
    expect(f.fs.readFile('/f').equals(data.subarray(0, 8 * KiB))).toBe(true);
  });

  it('writes count bytes when data is longer, and calls data shorter than count garbage', async () => {
    const fh = f.server.handle('/memfs', f.fs.writeFile('/f'));
    const res = await f.client.write(fh, 0, Buffer.from('abcdef'), 2, { count: 2 });
    expect(res.count).toBe(2);
    expect(f.fs.readFile('/f').toString()).toBe('ab');
    const err = await f.client
      .write(fh, 0, Buffer.from('abc'), 2, { count: 4 })
      .catch((e: unknown) => e);
    expect((err as RpcReplyError).reply.acceptStat).toBe(AcceptStat.GARBAGE_ARGS);
  });

  it('answers ISDIR for a directory and INVAL for a symbolic link', async () => {
    expect((await f.client.write(f.root, 0, Buffer.from('x'))).status).toBe(NfsStatus.ISDIR);
    const link = await f.client.symlink(f.root, 'l', 't');
    const res = await f.client.write(link.object!, 0, Buffer.from('x'));
    expect(res.status).toBe(NfsStatus.INVAL);
    expect(res.wcc.before).toBeDefined();
  });

  it('answers ROFS on a read-only export and an adapter without write, with attributes', async () => {
    const id = f.fs.writeFile('/f', 'keep');
    for (const path of ['/ro', '/view']) {
      const res = await f.client.write(f.server.handle(path, id), 0, Buffer.from('lost'));
      expect(res.status).toBe(NfsStatus.ROFS);
      expect(res.wcc.after?.size).toBe(4);
    }
    expect(f.fs.readFile('/f').toString()).toBe('keep');
  });

  it('answers COMMIT on a read-only export (nothing to flush)', async () => {
    const id = f.fs.writeFile('/f', 'x');
    const res = await f.client.commit(f.server.handle('/ro', id));
    expect(res.status).toBe(NfsStatus.OK);
    expect(res.verf).toHaveLength(8);
  });

  it('uses one verifier for WRITE and COMMIT across files', async () => {
    const a = f.server.handle('/memfs', f.fs.writeFile('/a'));
    const b = f.server.handle('/memfs', f.fs.writeFile('/b'));
    const va = (await f.client.write(a, 0, Buffer.from('1'), StableHow3.UNSTABLE)).verf;
    const vb = (await f.client.write(b, 0, Buffer.from('2'), StableHow3.UNSTABLE)).verf;
    expect(va).toEqual(vb);
    expect((await f.client.commit(b)).verf).toEqual(va);
  });
});
