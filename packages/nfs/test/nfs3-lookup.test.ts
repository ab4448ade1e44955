import { describe, expect, it } from 'vitest';
import { NfsStatus } from '../src/filesystem.js';
import { readOnlyView } from './helpers/memory-fs.js';
import { Nfs3Client, startTestServer, useNfs3Fixture } from './helpers/nfs3-client.js';

describe('LOOKUP', () => {
  const f = useNfs3Fixture();

  it('finds a name and answers its handle and both attributes', async () => {
    const id = f.fs.writeFile('/a/b.txt', 'hello');
    const a = await f.client.lookup(f.root, 'a');
    expect(a.status).toBe(NfsStatus.OK);
    expect(a.objAttrs?.type).toBe('directory');
    expect(a.dirAttrs?.fileId).toBe(f.fs.rootId);
    const b = await f.client.lookup(a.object!, 'b.txt');
    expect(b.object).toEqual(f.server.handle('/memfs', id));
    expect(b.objAttrs).toMatchObject({ type: 'file', size: 5, fileId: id });
  });

  it('answers NOENT with the directory attributes, NOTDIR for a file', async () => {
    const missing = await f.client.lookup(f.root, 'nope');
    expect(missing.status).toBe(NfsStatus.NOENT);
    expect(missing.dirAttrs?.fileId).toBe(f.fs.rootId);
    const file = f.server.handle('/memfs', f.fs.writeFile('/f', 'x'));
    expect((await f.client.lookup(file, 'x')).status).toBe(NfsStatus.NOTDIR);
    expect((await f.client.lookup(file, '.')).status).toBe(NfsStatus.NOTDIR);
    expect((await f.client.lookup(file, '..')).status).toBe(NfsStatus.NOTDIR);
  });

  it('answers . with the directory and .. of the root with the root', async () => {
    const dot = await f.client.lookup(f.root, '.');
    expect(dot.object).toEqual(f.root);
    const up = await f.client.lookup(f.root, '..');
    expect(up.object).toEqual(f.root);
    expect(up.objAttrs?.fileId).toBe(f.fs.rootId);
  });

  it('answers .. with the parent learned from LOOKUP, MKDIR, READDIRPLUS and RENAME', async () => {
    f.fs.mkdirp('/a/b/c');
    const a = (await f.client.lookup(f.root, 'a')).object!;
    const b = (await f.client.lookup(a, 'b')).object!;
    expect((await f.client.lookup(b, '..')).object).toEqual(a);

    const made = (await f.client.mkdir(b, 'm')).object!;
    expect((await f.client.lookup(made, '..')).object).toEqual(b);

    const plus = await f.client.readdirplus(b, 0n, Buffer.alloc(8), 8192, 65536);
    const c = plus.entries!.find((e) => e.name === 'c')!.handle!;
    expect((await f.client.lookup(c, '..')).object).toEqual(b);

    expect((await f.client.rename(b, 'c', a, 'c2')).status).toBe(NfsStatus.OK);
    expect((await f.client.lookup(c, '..')).object).toEqual(a);
  });

  it('answers .. of a directory it never saw with the root (documented fallback)', async () => {
    const deep = f.server.handle('/memfs', f.fs.mkdirp('/x/y'));
    expect((await f.client.lookup(deep, '..')).object).toEqual(f.root);
  });
});

describe('file names', () => {
  const f = useNfs3Fixture();
  const long = (n: number) => 'n'.repeat(n);

  it('refuses /, NUL, empty and non-UTF-8 names with ACCES', async () => {
    f.fs.writeFile('/a/secret', 'x');
    const bad: (string | Uint8Array)[] = [
      'a/secret',
      '../../etc/passwd',
      '/',
      'nul\0byte',
      '',
      Buffer.from([0x66, 0xff, 0xfe]),
    ];
    for (const name of bad) {
      expect((await f.client.lookup(f.root, name)).status, String(name)).toBe(NfsStatus.ACCES);
      const created = await f.client.create(f.root, name, { mode: 'guarded' });
      expect(created.status, String(name)).toBe(NfsStatus.ACCES);
      expect(created.wcc.after?.fileId).toBe(f.fs.rootId);
    }
    expect((await f.fs.readdir(f.fs.rootId)).map((e) => e.name)).toEqual(['a']);
  });

  it('accepts 255 bytes and answers NAMETOOLONG from 256', async () => {
    expect((await f.client.create(f.root, long(255), { mode: 'guarded' })).status).toBe(
      NfsStatus.OK,
    );
    expect((await f.client.lookup(f.root, long(255))).status).toBe(NfsStatus.OK);
    expect((await f.client.create(f.root, long(256), { mode: 'guarded' })).status).toBe(
      NfsStatus.NAMETOOLONG,
    );
    expect((await f.client.lookup(f.root, long(256))).status).toBe(NfsStatus.NAMETOOLONG);
    expect((await f.client.mkdir(f.root, long(300))).status).toBe(NfsStatus.NAMETOOLONG);
    // 128 two-byte characters: 256 bytes.
    expect((await f.client.lookup(f.root, 'é'.repeat(128))).status).toBe(NfsStatus.NAMETOOLONG);
  });

  it('refuses to create . or .. (EXIST) and to remove or rename them (INVAL)', async () => {
    f.fs.mkdirp('/d');
    for (const name of ['.', '..']) {
      expect((await f.client.create(f.root, name, { mode: 'unchecked' })).status).toBe(
        NfsStatus.EXIST,
      );
      expect((await f.client.mkdir(f.root, name)).status).toBe(NfsStatus.EXIST);
      expect((await f.client.symlink(f.root, name, 'x')).status).toBe(NfsStatus.EXIST);
      expect((await f.client.remove(f.root, name)).status).toBe(NfsStatus.INVAL);
      expect((await f.client.rmdir(f.root, name)).status).toBe(NfsStatus.INVAL);
      expect((await f.client.rename(f.root, name, f.root, 'z')).status).toBe(NfsStatus.INVAL);
      expect((await f.client.rename(f.root, 'd', f.root, name)).status).toBe(NfsStatus.INVAL);
    }
    expect((await f.fs.readdir(f.fs.rootId)).map((e) => e.name)).toEqual(['d']);
  });
});

describe('READLINK', () => {
  const f = useNfs3Fixture();

  it('answers the target of a symbolic link, INVAL for anything else', async () => {
    const made = await f.client.symlink(f.root, 'link', '../target/file.vmdk');
    expect(made.status).toBe(NfsStatus.OK);
    expect(made.objAttrs?.type).toBe('symlink');
    const res = await f.client.readlink(made.object!);
    expect(res).toMatchObject({ status: NfsStatus.OK, data: '../target/file.vmdk' });
    expect(res.attrs?.type).toBe('symlink');
    const file = f.server.handle('/memfs', f.fs.writeFile('/f', 'x'));
    const notLink = await f.client.readlink(file);
    expect(notLink.status).toBe(NfsStatus.INVAL);
    expect(notLink.attrs?.type).toBe('file');
  });

  it('answers NOTSUPP when the adapter has no readlink', async () => {
    const srv = await startTestServer({ exports: [{ path: '/view', fs: readOnlyView(f.fs) }] });
    const c = await Nfs3Client.connect(srv.port);
    try {
      await f.fs.symlink(
        f.fs.rootId,
        'l',
        't',
        {},
        { user: null, clientAddress: '', exportPath: '' },
      );
      const id = f.fs.idOf('/l');
      const res = await c.readlink(srv.handle('/view', id));
      expect(res.status).toBe(NfsStatus.NOTSUPP);
    } finally {
      await c.close();
      await srv.stop();
    }
  });
});
