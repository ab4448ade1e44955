import { describe, expect, it } from 'vitest';
import { NfsStatus } from '../src/filesystem.js';
import { Ftype3 } from '../src/nfs3/constants.js';
import { MemoryFileSystem, readOnlyView } from './helpers/memory-fs.js';
import { useNfs3Fixture } from './helpers/nfs3-client.js';

const names = async (fs: MemoryFileSystem, path = '/') =>
  (await fs.readdir(fs.idOf(path))).map((e) => e.name).sort();

describe('CREATE', () => {
  const f = useNfs3Fixture();

  it('creates a file and answers its handle, attributes and the directory wcc_data', async () => {
    const before = await f.fs.getattr(f.fs.rootId);
    const res = await f.client.create(f.root, 'vmware.log', {
      mode: 'unchecked',
      attrs: { mode: 0o600 },
    });
    expect(res.status).toBe(NfsStatus.OK);
    const id = f.fs.idOf('/vmware.log');
    expect(res.object).toEqual(f.server.handle('/memfs', id));
    expect(res.objAttrs).toMatchObject({ type: 'file', mode: 0o600, size: 0, fileId: id });
    expect(res.wcc.before).toEqual({ size: before.size, mtime: before.mtime, ctime: before.ctime });
    expect(res.wcc.after?.mtime).not.toEqual(before.mtime);
  });

  it('keeps an existing file on UNCHECKED, truncating it when asked for size 0', async () => {
    const id = f.fs.writeFile('/f', 'content');
    const kept = await f.client.create(f.root, 'f', { mode: 'unchecked' });
    expect(kept.objAttrs).toMatchObject({ fileId: id, size: 7 });
    const cut = await f.client.create(f.root, 'f', { mode: 'unchecked', attrs: { size: 0 } });
    expect(cut.objAttrs).toMatchObject({ fileId: id, size: 0 });
  });

  it('answers EXIST to GUARDED when the name exists (ESXi lock files)', async () => {
    const first = await f.client.create(f.root, '.lck-0123', { mode: 'guarded' });
    expect(first.status).toBe(NfsStatus.OK);
    const second = await f.client.create(f.root, '.lck-0123', { mode: 'guarded' });
    expect(second.status).toBe(NfsStatus.EXIST);
    expect(second.wcc.after?.fileId).toBe(f.fs.rootId);
  });

  it('replays EXCLUSIVE with the same verifier and refuses another verifier', async () => {
    const verf = Buffer.from('12345678');
    const first = await f.client.create(f.root, 'x', { mode: 'exclusive', verf });
    expect(first.status).toBe(NfsStatus.OK);
    const replay = await f.client.create(f.root, 'x', { mode: 'exclusive', verf });
    expect(replay.status).toBe(NfsStatus.OK);
    expect(replay.object).toEqual(first.object);
    const other = await f.client.create(f.root, 'x', {
      mode: 'exclusive',
      verf: Buffer.from('87654321'),
    });
    expect(other.status).toBe(NfsStatus.EXIST);
    // The client then sets the attributes (RFC 1813 §3.3.8).
    const set = await f.client.setattr(first.object!, { mode: 0o644, mtime: 'server' });
    expect(set.wcc.after?.mode).toBe(0o644);
  });

  it('answers NOTDIR for a file as directory and STALE for a removed one', async () => {
    const file = f.server.handle('/memfs', f.fs.writeFile('/f'));
    expect((await f.client.create(file, 'x', { mode: 'guarded' })).status).toBe(NfsStatus.NOTDIR);
    const dirId = f.fs.mkdirp('/d');
    await f.fs.rmdir(f.fs.rootId, 'd');
    const stale = await f.client.create(f.server.handle('/memfs', dirId), 'x', { mode: 'guarded' });
    expect(stale.status).toBe(NfsStatus.STALE);
    expect(stale.wcc).toEqual({ before: undefined, after: undefined });
  });
});

describe('MKDIR, SYMLINK, MKNOD', () => {
  const f = useNfs3Fixture();

  it('makes directories and counts their links', async () => {
    const res = await f.client.mkdir(f.root, 'vm', { mode: 0o700 });
    expect(res.status).toBe(NfsStatus.OK);
    expect(res.objAttrs).toMatchObject({ type: 'directory', mode: 0o700, nlink: 2 });
    expect(res.wcc.after?.nlink).toBe(3);
    expect((await f.client.mkdir(f.root, 'vm')).status).toBe(NfsStatus.EXIST);
  });

  it('makes symbolic links, EXIST when the name is taken', async () => {
    const res = await f.client.symlink(f.root, 'l', 'a/b');
    expect(res.objAttrs).toMatchObject({ type: 'symlink', size: 3 });
    expect((await f.client.symlink(f.root, 'l', 'c')).status).toBe(NfsStatus.EXIST);
  });

  it('answers NOTSUPP for special files and BADTYPE for other types', async () => {
    for (const type of [Ftype3.NF3CHR, Ftype3.NF3BLK, Ftype3.NF3SOCK, Ftype3.NF3FIFO]) {
      const res = await f.client.mknod(f.root, `n${type}`, type);
      expect(res.status).toBe(NfsStatus.NOTSUPP);
      expect(res.wcc.after?.fileId).toBe(f.fs.rootId);
    }
    for (const type of [Ftype3.NF3REG, Ftype3.NF3DIR, Ftype3.NF3LNK, 99]) {
      expect((await f.client.mknod(f.root, 'x', type)).status).toBe(NfsStatus.BADTYPE);
    }
    expect(await names(f.fs)).toEqual([]);
  });
});

describe('REMOVE, RMDIR', () => {
  const f = useNfs3Fixture();

  it('removes files, NOENT when missing, ISDIR for a directory', async () => {
    f.fs.writeFile('/f');
    f.fs.mkdirp('/d');
    const res = await f.client.remove(f.root, 'f');
    expect(res.status).toBe(NfsStatus.OK);
    expect(res.wcc.before).toBeDefined();
    expect(res.wcc.after?.fileId).toBe(f.fs.rootId);
    expect((await f.client.remove(f.root, 'f')).status).toBe(NfsStatus.NOENT);
    expect((await f.client.remove(f.root, 'd')).status).toBe(NfsStatus.ISDIR);
    expect(await names(f.fs)).toEqual(['d']);
  });

  it('removes empty directories, NOTEMPTY otherwise, NOTDIR for a file', async () => {
    f.fs.writeFile('/full/f');
    f.fs.mkdirp('/empty');
    f.fs.writeFile('/file');
    expect((await f.client.rmdir(f.root, 'full')).status).toBe(NfsStatus.NOTEMPTY);
    expect((await f.client.rmdir(f.root, 'file')).status).toBe(NfsStatus.NOTDIR);
    expect((await f.client.rmdir(f.root, 'empty')).status).toBe(NfsStatus.OK);
    expect((await f.client.rmdir(f.root, 'empty')).status).toBe(NfsStatus.NOENT);
    expect(await names(f.fs)).toEqual(['file', 'full']);
  });
});

describe('RENAME, LINK', () => {
  const f = useNfs3Fixture((fs) => ({
    exports: [
      { path: '/memfs', fs },
      { path: '/other', fs: new MemoryFileSystem() },
    ],
  }));

  it('renames .vmx~ onto .vmx, replacing it', async () => {
    f.fs.writeFile('/vm/vm.vmx', 'old');
    f.fs.writeFile('/vm/vm.vmx~', 'new');
    const vm = f.server.handle('/memfs', f.fs.idOf('/vm'));
    const res = await f.client.rename(vm, 'vm.vmx~', vm, 'vm.vmx');
    expect(res.status).toBe(NfsStatus.OK);
    expect(res.fromWcc.after).toEqual(res.toWcc.after);
    expect(await names(f.fs, '/vm')).toEqual(['vm.vmx']);
    expect(f.fs.readFile('/vm/vm.vmx').toString()).toBe('new');
  });

  it('moves between directories with wcc_data for both', async () => {
    f.fs.writeFile('/a/f', 'x');
    f.fs.mkdirp('/b');
    const a = f.server.handle('/memfs', f.fs.idOf('/a'));
    const b = f.server.handle('/memfs', f.fs.idOf('/b'));
    const res = await f.client.rename(a, 'f', b, 'g');
    expect(res.status).toBe(NfsStatus.OK);
    expect(res.fromWcc.after?.fileId).toBe(f.fs.idOf('/a'));
    expect(res.toWcc.after?.fileId).toBe(f.fs.idOf('/b'));
    expect(res.fromWcc.before).toBeDefined();
    expect(res.toWcc.before).toBeDefined();
    expect(f.fs.readFile('/b/g').toString()).toBe('x');
  });

  it('answers NOENT, NOTEMPTY, and XDEV across exports', async () => {
    f.fs.writeFile('/d/x');
    f.fs.writeFile('/e/y');
    expect((await f.client.rename(f.root, 'nope', f.root, 'z')).status).toBe(NfsStatus.NOENT);
    expect((await f.client.rename(f.root, 'd', f.root, 'e')).status).toBe(NfsStatus.NOTEMPTY);
    const other = f.server.handle('/other');
    const res = await f.client.rename(f.root, 'd', other, 'd');
    expect(res.status).toBe(NfsStatus.XDEV);
    expect(res.fromWcc.after?.fileId).toBe(f.fs.rootId);
  });

  it('makes hard links', async () => {
    const id = f.fs.writeFile('/f', 'x');
    const fh = f.server.handle('/memfs', id);
    const res = await f.client.link(fh, f.root, 'g');
    expect(res.status).toBe(NfsStatus.OK);
    expect(res.attrs).toMatchObject({ fileId: id, nlink: 2 });
    expect(res.wcc.after?.fileId).toBe(f.fs.rootId);
    expect(f.fs.idOf('/g')).toBe(id);
    expect((await f.client.link(fh, f.root, 'g')).status).toBe(NfsStatus.EXIST);
    expect((await f.client.link(fh, f.server.handle('/other'), 'g')).status).toBe(NfsStatus.XDEV);
  });
});

describe('changes on read-only exports', () => {
  const f = useNfs3Fixture((fs) => ({
    exports: [
      { path: '/memfs', fs },
      { path: '/ro', fs, readOnly: true },
      { path: '/view', fs: readOnlyView(fs) },
    ],
  }));

  it('answers ROFS to every change and changes nothing', async () => {
    const fileId = f.fs.writeFile('/f', 'data');
    f.fs.mkdirp('/d');
    const before = await names(f.fs);
    for (const path of ['/ro', '/view']) {
      const root = f.server.handle(path);
      const file = f.server.handle(path, fileId);
      const c = f.client;
      const statuses = [
        (await c.setattr(file, { size: 0 })).status,
        (await c.write(file, 0, Buffer.from('x'))).status,
        (await c.create(root, 'n', { mode: 'unchecked' })).status,
        (await c.create(root, 'n', { mode: 'exclusive', verf: Buffer.alloc(8) })).status,
        (await c.mkdir(root, 'n')).status,
        (await c.symlink(root, 'n', 't')).status,
        (await c.mknod(root, 'n', Ftype3.NF3FIFO)).status,
        (await c.remove(root, 'f')).status,
        (await c.rmdir(root, 'd')).status,
        (await c.rename(root, 'f', root, 'g')).status,
        (await c.link(file, root, 'g')).status,
      ];
      expect(statuses, path).toEqual(statuses.map(() => NfsStatus.ROFS));
    }
    expect(await names(f.fs)).toEqual(before);
    expect(f.fs.readFile('/f').toString()).toBe('data');
  });
});
