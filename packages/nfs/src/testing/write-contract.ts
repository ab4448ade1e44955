import { expect, it } from 'vitest';
import type { StableHow } from '../filesystem.js';
import {
  atLeastAsStable,
  ctx,
  expectStatus,
  GiB,
  MiB,
  type OptionalMethod,
  type Subject,
} from './conformance-support.js';
import { patternBytes } from './conformance-tree.js';

/** Options of the write tests. */
export interface WriteContractOptions {
  /** The adapter keeps files sparse: test writes and sizes above 4 GiB. */
  readonly sparse: boolean;
}

const bytes = (s: string): Buffer => Buffer.from(s);

/** A sparse file above 4 GiB may use at most this much space (`used`). */
const SPARSE_USED_LIMIT = 16 * MiB;

/**
 * The contract of the optional write methods. A test is generated only when the adapter has every
 * method it calls (or is declared writable), so a read-only adapter gets none of them.
 */
export function describeWriteContract(s: Subject, options: WriteContractOptions): void {
  const test = (methods: readonly OptionalMethod[], title: string, fn: () => Promise<void>) => {
    if (s.has(...methods)) it(title, fn);
  };

  test(['write'], 'write overwrites in place, extends the file, and reads back', async () => {
    const write = s.need('write');
    const id = await s.id('hello.txt');
    const hello = s.data('hello.txt');
    await write(id, 0, bytes('HELLO'), 'unstable', ctx);
    await write(id, hello.length, bytes(' and more'), 'file_sync', ctx);
    expect((await s.fs.getattr(id, ctx)).size).toBe(hello.length + 9);
    const expected = Buffer.concat([bytes('HELLO'), hello.subarray(5), bytes(' and more')]);
    expect((await s.read(id, 0, 1000)).equals(expected)).toBe(true);
  });

  test(['write'], 'write answers at least the stability asked for', async () => {
    const write = s.need('write');
    const id = await s.id('hello.txt');
    for (const [i, asked] of (['unstable', 'data_sync', 'file_sync'] as const).entries()) {
      const got: StableHow = await write(id, i, bytes('x'), asked, ctx);
      expect(atLeastAsStable(got, asked), `asked ${asked}, got ${got}`).toBe(true);
    }
  });

  test(['write'], 'a write past the end of file leaves zeros before it', async () => {
    const write = s.need('write');
    const id = await s.id('hello.txt');
    const hello = s.data('hello.txt');
    const at = hello.length + 100_000;
    await write(id, at, bytes('end'), 'file_sync', ctx);
    expect((await s.fs.getattr(id, ctx)).size).toBe(at + 3);
    const got = await s.read(id, 0, at + 3);
    expect(got.subarray(0, hello.length).equals(hello)).toBe(true);
    expect(got.subarray(hello.length, at).every((b) => b === 0)).toBe(true);
    expect(got.subarray(at).toString()).toBe('end');
  });

  test(['write'], '50 concurrent writes to distinct ranges all read back', async () => {
    const write = s.need('write');
    const id = await s.id('empty.txt');
    const piece = 4099;
    const data = patternBytes(50 * piece, 77);
    const order = Array.from({ length: 50 }, (_, i) => (i * 17) % 50);
    await Promise.all(
      order.map((i) =>
        write(id, i * piece, data.subarray(i * piece, (i + 1) * piece), 'unstable', ctx),
      ),
    );
    expect((await s.fs.getattr(id, ctx)).size).toBe(data.length);
    expect((await s.read(id, 0, data.length)).equals(data)).toBe(true);
  });

  if (options.sparse) {
    test(['write'], 'writes above 4 GiB read back and keep a sparse file small', async () => {
      const write = s.need('write');
      const id = await s.id('empty.txt');
      const across = patternBytes(8192, 3);
      const high = patternBytes(4096, 4);
      const acrossAt = 4 * GiB - 4096;
      const highAt = 5 * GiB + 12_345;
      await write(id, acrossAt, across, 'file_sync', ctx);
      await write(id, highAt, high, 'file_sync', ctx);
      const attrs = await s.fs.getattr(id, ctx);
      expect(attrs.size).toBe(highAt + high.length);
      expect(attrs.used, `used ${attrs.used}`).toBeLessThanOrEqual(SPARSE_USED_LIMIT);
      expect((await s.read(id, acrossAt, across.length)).equals(across)).toBe(true);
      expect((await s.read(id, highAt, high.length)).equals(high)).toBe(true);
      expect((await s.read(id, highAt + 4000, 1000)).equals(high.subarray(4000))).toBe(true);
      const hole = await s.read(id, 4 * GiB + 1 * MiB, 4096);
      expect(hole.length).toBe(4096);
      expect(hole.every((b) => b === 0)).toBe(true);
    });

    test(['setattr'], 'setattr extends a sparse file above 4 GiB without filling it', async () => {
      const id = await s.id('empty.txt');
      await s.need('setattr')(id, { size: 6 * GiB + 1 }, ctx);
      const attrs = await s.fs.getattr(id, ctx);
      expect(attrs.size).toBe(6 * GiB + 1);
      expect(attrs.used, `used ${attrs.used}`).toBeLessThanOrEqual(SPARSE_USED_LIMIT);
      const tail = await s.read(id, 6 * GiB - 10, 100);
      expect(tail.length).toBe(11);
      expect(tail.every((b) => b === 0)).toBe(true);
    });
  }

  test(['write', 'commit'], 'commit resolves after unstable writes, which read back', async () => {
    const id = await s.id('hello.txt');
    await s.need('write')(id, 0, bytes('unstable'), 'unstable', ctx);
    await expect(s.need('commit')(id, ctx)).resolves.toBeUndefined();
    expect((await s.read(id, 0, 8)).toString()).toBe('unstable');
  });

  test(['writeVerifier'], 'writeVerifier is 8 bytes, the same on every call', async () => {
    const writeVerifier = s.need('writeVerifier');
    const first = Buffer.from(writeVerifier());
    expect(first.length).toBe(8);
    await s.fs.getattr(s.fs.rootId, ctx);
    expect(Buffer.from(writeVerifier()).equals(first)).toBe(true);
    expect(Buffer.from(writeVerifier()).equals(first)).toBe(true);
  });

  test(['setattr'], 'setattr size truncates, and extending again reads zeros', async () => {
    const setattr = s.need('setattr');
    const id = await s.id('data.bin');
    const data = s.data('data.bin');
    await setattr(id, { size: 1000 }, ctx);
    expect((await s.fs.getattr(id, ctx)).size).toBe(1000);
    expect((await s.read(id, 0, 5000)).equals(data.subarray(0, 1000))).toBe(true);
    await setattr(id, { size: 100_000 }, ctx);
    expect((await s.fs.getattr(id, ctx)).size).toBe(100_000);
    const got = await s.read(id, 0, 100_000);
    expect(got.subarray(0, 1000).equals(data.subarray(0, 1000))).toBe(true);
    expect(
      got.subarray(1000).every((b) => b === 0),
      'old bytes came back',
    ).toBe(true);
  });

  test(['setattr'], 'setattr changes mode, owner and times', async () => {
    const id = await s.id('hello.txt');
    const mtime = { seconds: 1_000_000_000, nanoseconds: 0 };
    const atime = { seconds: 1_100_000_000, nanoseconds: 0 };
    await s.need('setattr')(id, { mode: 0o600, uid: 1234, gid: 5678, atime, mtime }, ctx);
    const a = await s.fs.getattr(id, ctx);
    expect({ mode: a.mode, uid: a.uid, gid: a.gid, atime: a.atime, mtime: a.mtime }).toEqual({
      mode: 0o600,
      uid: 1234,
      gid: 5678,
      atime,
      mtime,
    });
    expect(a.size).toBe(s.data('hello.txt').length);
  });

  test(['create'], 'create makes an empty regular file that lookup and readdir find', async () => {
    const dirId = await s.id('dir');
    const id = await s.need('create')(dirId, 'new.txt', 'unchecked', {}, undefined, ctx);
    expect(await s.fs.lookup(dirId, 'new.txt', ctx)).toBe(id);
    const a = await s.fs.getattr(id, ctx);
    expect({ type: a.type, size: a.size, fileId: a.fileId }).toEqual({
      type: 'file',
      size: 0,
      fileId: id,
    });
    expect(await s.names(dirId)).toEqual([...s.children('dir'), 'new.txt'].sort());
    for (const e of s.tree) expect(await s.id(e.path), `id of ${e.path} reused`).not.toBe(id);
  });

  test(['create'], 'create unchecked keeps an existing file, emptied when size is 0', async () => {
    const create = s.need('create');
    const id = await s.id('hello.txt');
    const hello = s.data('hello.txt');
    expect(await create(s.fs.rootId, 'hello.txt', 'unchecked', {}, undefined, ctx)).toBe(id);
    expect((await s.read(id, 0, 1000)).equals(hello)).toBe(true);
    expect(await create(s.fs.rootId, 'hello.txt', 'unchecked', { size: 0 }, undefined, ctx)).toBe(
      id,
    );
    expect((await s.fs.getattr(id, ctx)).size).toBe(0);
    expect((await s.read(id, 0, 1000)).length).toBe(0);
  });

  test(['create'], 'create guarded of an existing name is EXIST, the file untouched', async () => {
    const create = s.need('create');
    const hello = s.data('hello.txt');
    await expectStatus(
      create(s.fs.rootId, 'hello.txt', 'guarded', { size: 0 }, undefined, ctx),
      'EXIST',
      'guarded create of hello.txt',
    );
    await expectStatus(
      create(s.fs.rootId, 'dir', 'guarded', {}, undefined, ctx),
      'EXIST',
      'guarded create of dir',
    );
    expect((await s.read(await s.id('hello.txt'), 0, 1000)).equals(hello)).toBe(true);
  });

  test(['create'], 'create exclusive: same verifier, same id; other verifier, EXIST', async () => {
    const create = s.need('create');
    const verifier = bytes('verifier');
    const id = await create(s.fs.rootId, 'excl.txt', 'exclusive', {}, verifier, ctx);
    expect((await s.fs.getattr(id, ctx)).type).toBe('file');
    // A retransmitted CREATE carries the same verifier: it must succeed with the same file.
    const again = await create(s.fs.rootId, 'excl.txt', 'exclusive', {}, bytes('verifier'), ctx);
    expect(again).toBe(id);
    await expectStatus(
      create(s.fs.rootId, 'excl.txt', 'exclusive', {}, bytes('another!'), ctx),
      'EXIST',
      'exclusive create with another verifier',
    );
    await expectStatus(
      create(s.fs.rootId, 'hello.txt', 'exclusive', {}, verifier, ctx),
      'EXIST',
      'exclusive create of a file created otherwise',
    );
  });

  test(['create'], '50 concurrent creates in one directory get 50 distinct ids', async () => {
    const create = s.need('create');
    const dirId = await s.id('empty');
    const names = Array.from({ length: 50 }, (_, i) => `c${i}`);
    const ids = await Promise.all(
      names.map((name) => create(dirId, name, 'guarded', {}, undefined, ctx)),
    );
    expect(new Set(ids).size).toBe(50);
    expect(await s.names(dirId)).toEqual([...names].sort());
    for (const [i, name] of names.entries()) {
      expect(await s.fs.lookup(dirId, name, ctx)).toBe(ids[i]);
    }
  });

  test(['mkdir'], 'mkdir makes an empty directory; an existing name is EXIST', async () => {
    const mkdir = s.need('mkdir');
    const dirId = await mkdir(s.fs.rootId, 'made', {}, ctx);
    expect((await s.fs.getattr(dirId, ctx)).type).toBe('directory');
    expect(await s.fs.lookup(s.fs.rootId, 'made', ctx)).toBe(dirId);
    expect(await s.fs.readdir(dirId, ctx)).toEqual([]);
    expect(await s.names(s.fs.rootId)).toEqual([...s.children(''), 'made'].sort());
    const inner = await mkdir(dirId, 'inner', {}, ctx);
    expect(await s.fs.lookup(dirId, 'inner', ctx)).toBe(inner);
    await expectStatus(mkdir(s.fs.rootId, 'made', {}, ctx), 'EXIST', 'mkdir made again');
    await expectStatus(mkdir(s.fs.rootId, 'hello.txt', {}, ctx), 'EXIST', 'mkdir hello.txt');
  });

  test(['rmdir'], 'rmdir removes an empty directory, and a full one is NOTEMPTY', async () => {
    const rmdir = s.need('rmdir');
    await expectStatus(rmdir(s.fs.rootId, 'dir', ctx), 'NOTEMPTY', 'rmdir dir');
    expect(await s.names(await s.id('dir'))).toEqual(s.children('dir'));
    const emptyId = await s.id('empty');
    await rmdir(s.fs.rootId, 'empty', ctx);
    await expectStatus(s.fs.lookup(s.fs.rootId, 'empty', ctx), 'NOENT', 'lookup after rmdir');
    expect(await s.names(s.fs.rootId)).toEqual(s.children('').filter((n) => n !== 'empty'));
    await expectStatus(s.fs.getattr(emptyId, ctx), 'STALE', 'getattr of the removed directory');
  });

  test(['remove'], 'remove deletes a file: lookup is NOENT, its id STALE', async () => {
    const id = await s.id('dir/a.txt');
    const dirId = await s.id('dir');
    await s.need('remove')(dirId, 'a.txt', ctx);
    await expectStatus(s.fs.lookup(dirId, 'a.txt', ctx), 'NOENT', 'lookup after remove');
    expect(await s.names(dirId)).toEqual(s.children('dir').filter((n) => n !== 'a.txt'));
    await expectStatus(s.fs.getattr(id, ctx), 'STALE', 'getattr of the removed file');
    await expectStatus(s.need('remove')(dirId, 'a.txt', ctx), 'NOENT', 'remove again');
  });

  test(['rename'], 'rename keeps the file id, within and across directories', async () => {
    const rename = s.need('rename');
    const id = await s.id('hello.txt');
    const dirId = await s.id('dir');
    await rename(s.fs.rootId, 'hello.txt', s.fs.rootId, 'hi.txt', ctx);
    expect(await s.fs.lookup(s.fs.rootId, 'hi.txt', ctx)).toBe(id);
    await expectStatus(s.fs.lookup(s.fs.rootId, 'hello.txt', ctx), 'NOENT', 'old name');
    await rename(s.fs.rootId, 'hi.txt', dirId, 'moved.txt', ctx);
    expect(await s.fs.lookup(dirId, 'moved.txt', ctx)).toBe(id);
    expect((await s.fs.getattr(id, ctx)).fileId).toBe(id);
    expect((await s.read(id, 0, 1000)).equals(s.data('hello.txt'))).toBe(true);
    expect(await s.names(s.fs.rootId)).toEqual(s.children('').filter((n) => n !== 'hello.txt'));
    expect(await s.names(dirId)).toEqual([...s.children('dir'), 'moved.txt'].sort());
  });

  test(['rename'], 'rename over an existing file replaces it', async () => {
    const id = await s.id('hello.txt');
    const dirId = await s.id('dir');
    await s.need('rename')(s.fs.rootId, 'hello.txt', dirId, 'a.txt', ctx);
    expect(await s.fs.lookup(dirId, 'a.txt', ctx)).toBe(id);
    expect((await s.read(id, 0, 1000)).equals(s.data('hello.txt'))).toBe(true);
    expect(await s.names(dirId)).toEqual(s.children('dir'));
    await expectStatus(s.fs.lookup(s.fs.rootId, 'hello.txt', ctx), 'NOENT', 'old name');
  });

  test(['rename'], 'rename of a directory keeps the ids of everything in it', async () => {
    const before = await Promise.all(['dir', 'dir/a.txt', 'dir/sub/deep.txt'].map((p) => s.id(p)));
    await s.need('rename')(s.fs.rootId, 'dir', await s.id('many'), 'dir2', ctx);
    const after = await Promise.all(
      ['many/dir2', 'many/dir2/a.txt', 'many/dir2/sub/deep.txt'].map((p) => s.id(p)),
    );
    expect(after).toEqual(before);
    await expectStatus(s.fs.lookup(s.fs.rootId, 'dir', ctx), 'NOENT', 'old name');
  });

  test(['rename'], 'rename of a missing name is NOENT', async () => {
    await expectStatus(
      s.need('rename')(s.fs.rootId, 'no-such-entry', s.fs.rootId, 'x', ctx),
      'NOENT',
      'rename no-such-entry',
    );
  });

  test(['link'], 'link adds a second name for a file and counts it in nlink', async () => {
    const id = await s.id('hello.txt');
    const dirId = await s.id('dir');
    expect((await s.fs.getattr(id, ctx)).nlink).toBe(1);
    await s.need('link')(id, dirId, 'hello-link', ctx);
    expect(await s.fs.lookup(dirId, 'hello-link', ctx)).toBe(id);
    expect((await s.fs.getattr(id, ctx)).nlink).toBe(2);
    expect(await s.names(dirId)).toEqual([...s.children('dir'), 'hello-link'].sort());
  });

  test(['link', 'remove'], 'removing one name of a linked file keeps the other', async () => {
    const id = await s.id('hello.txt');
    const dirId = await s.id('dir');
    await s.need('link')(id, dirId, 'hello-link', ctx);
    await s.need('remove')(s.fs.rootId, 'hello.txt', ctx);
    const a = await s.fs.getattr(id, ctx);
    expect(a.nlink).toBe(1);
    expect((await s.read(id, 0, 1000)).equals(s.data('hello.txt'))).toBe(true);
  });

  test(['symlink', 'readlink'], 'symlink makes a link whose readlink is the target', async () => {
    const symlink = s.need('symlink');
    const dirId = await s.id('dir');
    for (const [name, target] of [
      ['to-hello', '../hello.txt'],
      ['dangling', 'no/such/target'],
      ['absolute', '/srv/elsewhere with spaces'],
    ] as const) {
      const id = await symlink(dirId, name, target, {}, ctx);
      expect(await s.fs.lookup(dirId, name, ctx)).toBe(id);
      expect((await s.fs.getattr(id, ctx)).type).toBe('symlink');
      expect(await s.need('readlink')(id, ctx)).toBe(target);
    }
  });
}
