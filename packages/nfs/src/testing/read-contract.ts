import { expect, it } from 'vitest';
import type { NfsTime } from '../filesystem.js';
import { ctx, expectStatus, GiB, type Subject } from './conformance-support.js';

function expectTime(t: NfsTime, what: string): void {
  expect(Number.isSafeInteger(t.seconds), `${what}: seconds ${t.seconds}`).toBe(true);
  expect(
    Number.isInteger(t.nanoseconds) && t.nanoseconds >= 0 && t.nanoseconds < 1e9,
    `${what}: nanoseconds ${t.nanoseconds}`,
  ).toBe(true);
}

/**
 * The contract of the required methods (`rootId`, `getattr`, `lookup`, `read`, `readdir`) and of
 * `fsstat` when the adapter has it, on the suite's tree.
 */
export function describeReadContract(s: Subject): void {
  it('rootId is a directory, and not the reserved id 0', async () => {
    expect(s.fs.rootId).not.toBe(0n);
    const attrs = await s.fs.getattr(s.fs.rootId, ctx);
    expect(attrs.type).toBe('directory');
    expect(attrs.fileId).toBe(s.fs.rootId);
  });

  it('getattr reports the id, type and size of every entry of the tree', async () => {
    for (const e of s.tree) {
      const id = await s.id(e.path);
      const a = await s.fs.getattr(id, ctx);
      expect(a.fileId, e.path).toBe(id);
      expect(a.type, e.path).toBe(e.type);
      if (e.type === 'file') expect(a.size, e.path).toBe(e.data.length);
      expect(a.nlink, e.path).toBeGreaterThanOrEqual(1);
      expect(
        Number.isInteger(a.mode) && a.mode >= 0 && a.mode <= 0o7777,
        `${e.path}: mode ${a.mode.toString(8)} must be permission bits only`,
      ).toBe(true);
      expect(Number.isSafeInteger(a.size) && a.size >= 0, `${e.path}: size ${a.size}`).toBe(true);
      expect(Number.isSafeInteger(a.used) && a.used >= 0, `${e.path}: used ${a.used}`).toBe(true);
      expectTime(a.atime, `${e.path} atime`);
      expectTime(a.mtime, `${e.path} mtime`);
      expectTime(a.ctime, `${e.path} ctime`);
    }
  });

  it('getattr of an unknown id rejects with STALE', async () => {
    await expectStatus(s.fs.getattr(await s.unknownId(), ctx), 'STALE', 'getattr(unknown id)');
  });

  it('file ids are unique, not 0, and the same on every lookup', async () => {
    const seen = new Map<bigint, string>([[s.fs.rootId, '(root)']]);
    for (const e of s.tree) {
      const id = await s.id(e.path);
      expect(id, e.path).not.toBe(0n);
      expect(seen.get(id), `${e.path} has the id of another entry`).toBeUndefined();
      seen.set(id, e.path);
      expect(await s.id(e.path), `${e.path} looked up again`).toBe(id);
    }
  });

  it('lookup of a missing name is NOENT', async () => {
    await expectStatus(s.fs.lookup(s.fs.rootId, 'no-such-entry', ctx), 'NOENT', 'in the root');
    await expectStatus(s.fs.lookup(await s.id('dir'), 'hello.txt', ctx), 'NOENT', 'in dir');
    await expectStatus(s.fs.lookup(await s.id('empty'), 'a.txt', ctx), 'NOENT', 'in empty');
  });

  it('lookup in a file is NOTDIR', async () => {
    await expectStatus(s.fs.lookup(await s.id('hello.txt'), 'x', ctx), 'NOTDIR', 'in hello.txt');
    await expectStatus(s.fs.lookup(await s.id('empty.txt'), 'x', ctx), 'NOTDIR', 'in empty.txt');
  });

  it('read returns exactly the bytes of a range inside the file', async () => {
    const id = await s.id('data.bin');
    const data = s.data('data.bin');
    for (const [offset, count] of [
      [0, 4096],
      [1, 1],
      [65_535, 3],
      [100_000, 65_536],
      [131_071, 2],
      [199_000, 1003],
    ] as const) {
      const got = await s.read(id, offset, count);
      expect(got.equals(data.subarray(offset, offset + count)), `read(${offset}, ${count})`).toBe(
        true,
      );
    }
  });

  it('read into a scratch buffer of left-over bytes returns exactly the file bytes', async () => {
    // The server passes a reused buffer whose contents are old replies: an adapter that reads
    // into it must overwrite every byte it returns.
    const data = s.data('data.bin');
    const hello = s.data('hello.txt');
    for (const [name, bytes, offset, count] of [
      ['data.bin', data, 0, 65_536],
      ['data.bin', data, 4095, 8193],
      ['data.bin', data, data.length - 100, 4096],
      ['hello.txt', hello, 0, 4096],
    ] as const) {
      const scratch = Buffer.alloc(count, 0xa5);
      const got = Buffer.from(await s.fs.read(await s.id(name), offset, count, ctx, scratch));
      const want = bytes.subarray(offset, offset + count);
      expect(got.equals(want), `read(${name}, ${offset}, ${count}) into a dirty buffer`).toBe(true);
    }
  });

  it('read returns fewer bytes than asked only at end of file', async () => {
    const id = await s.id('data.bin');
    const data = s.data('data.bin');
    const piece = 8191;
    const parts: Buffer[] = [];
    for (let offset = 0; offset < data.length; offset += piece) {
      const got = await s.read(id, offset, piece);
      const expected = Math.min(piece, data.length - offset);
      expect(got.length, `read(${offset}, ${piece})`).toBe(expected);
      parts.push(got);
    }
    expect(Buffer.concat(parts).equals(data)).toBe(true);
    const hello = s.data('hello.txt');
    const tail = await s.read(await s.id('hello.txt'), hello.length - 3, 100);
    expect(tail.equals(hello.subarray(hello.length - 3))).toBe(true);
  });

  it('read at or past end of file returns no bytes', async () => {
    const id = await s.id('hello.txt');
    const size = s.data('hello.txt').length;
    for (const offset of [size, size + 1, size + 1_000_000, 5 * GiB]) {
      expect((await s.read(id, offset, 100)).length, `read(${offset}, 100)`).toBe(0);
    }
    expect((await s.read(await s.id('empty.txt'), 0, 100)).length, 'empty.txt').toBe(0);
    expect((await s.read(id, 0, 0)).length, 'count 0').toBe(0);
  });

  it('read of a directory is ISDIR', async () => {
    await expectStatus(s.fs.read(s.fs.rootId, 0, 100, ctx), 'ISDIR', 'read(root)');
    await expectStatus(s.fs.read(await s.id('dir'), 0, 100, ctx), 'ISDIR', 'read(dir)');
  });

  // The server sends the returned bytes without copying them, possibly after later reads ran.
  it('bytes a read returned stay unchanged by later reads', async () => {
    const id = await s.id('data.bin');
    const data = s.data('data.bin');
    const first = await s.fs.read(id, 0, 4096, ctx);
    await Promise.all(
      Array.from({ length: 20 }, (_, i) => s.fs.read(id, 4096 * (i + 1), 4096, ctx)),
    );
    expect(Buffer.from(first).equals(data.subarray(0, 4096))).toBe(true);
  });

  it('50 concurrent reads of distinct ranges each return their own bytes', async () => {
    const id = await s.id('data.bin');
    const data = s.data('data.bin');
    const ranges = Array.from({ length: 50 }, (_, i) => (i * 39_119) % (data.length - 3000));
    const got = await Promise.all(ranges.map((offset) => s.read(id, offset, 3000)));
    for (const [i, offset] of ranges.entries()) {
      expect(got[i]!.equals(data.subarray(offset, offset + 3000)), `read(${offset})`).toBe(true);
    }
  });

  it('readdir lists exactly the entries of a directory, without . and ..', async () => {
    for (const dir of ['', 'dir', 'dir/sub', 'empty', 'many']) {
      const entries = await s.fs.readdir(await s.id(dir), ctx);
      const names = entries.map((e) => e.name);
      expect([...names].sort(), `readdir(${dir || '/'})`).toEqual(s.children(dir));
      for (const e of entries) {
        const path = dir === '' ? e.name : `${dir}/${e.name}`;
        expect(e.fileId, `file id of ${path}`).toBe(await s.id(path));
      }
    }
  });

  it('readdir returns the same order on every call while the directory is unchanged', async () => {
    for (const dir of ['', 'many']) {
      const id = await s.id(dir);
      const first = (await s.fs.readdir(id, ctx)).map((e) => e.name);
      for (let i = 0; i < 3; i++) {
        await s.fs.getattr(id, ctx);
        expect((await s.fs.readdir(id, ctx)).map((e) => e.name)).toEqual(first);
      }
    }
  });

  if (s.has('fsstat')) {
    it('fsstat figures are non-negative, available <= free <= total', async () => {
      const st = await s.need('fsstat')(ctx);
      for (const [key, value] of Object.entries(st)) {
        expect(Number.isSafeInteger(value) && value >= 0, `${key}: ${value}`).toBe(true);
      }
      expect(st.freeBytes).toBeLessThanOrEqual(st.totalBytes);
      expect(st.availableBytes).toBeLessThanOrEqual(st.freeBytes);
      expect(st.freeFiles).toBeLessThanOrEqual(st.totalFiles);
      expect(st.availableFiles).toBeLessThanOrEqual(st.freeFiles);
    });
  }
}
