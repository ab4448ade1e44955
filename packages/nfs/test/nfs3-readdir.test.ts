import { describe, expect, it } from 'vitest';
import { NfsStatus } from '../src/filesystem.js';
import { type DirEntry, type Nfs3Client, useNfs3Fixture } from './helpers/nfs3-client.js';

const ZERO_VERF = Buffer.alloc(8);

/** The size an entry3 takes in a reply: pointer, fileid, name with padding, cookie. */
const entry3Size = (name: string) => 4 + 8 + 4 + Math.ceil(Buffer.byteLength(name) / 4) * 4 + 8;

/** Pages through a directory with READDIRPLUS; checks every page against its limits. */
async function readdirplusAll(c: Nfs3Client, dir: Buffer, dircount: number, maxcount: number) {
  const all: DirEntry[] = [];
  let cookie = 0n;
  let verf: Buffer = ZERO_VERF;
  for (let pages = 0; ; pages++) {
    const res = await c.readdirplus(dir, cookie, verf, dircount, maxcount);
    expect(res.status).toBe(NfsStatus.OK);
    expect(res.bodySize).toBeLessThanOrEqual(maxcount);
    const info = res.entries!.reduce((n, e) => n + entry3Size(e.name), 0);
    expect(info).toBeLessThanOrEqual(dircount);
    expect(res.entries!.length).toBeGreaterThan(0);
    all.push(...res.entries!);
    if (res.eof) return { entries: all, pages: pages + 1 };
    cookie = res.entries!.at(-1)!.cookie;
    verf = res.verf!;
  }
}

describe('READDIR', () => {
  const f = useNfs3Fixture();

  it('lists . and .. first, then the entries with their file ids', async () => {
    const a = f.fs.writeFile('/d/a');
    const b = f.fs.mkdirp('/d/b');
    const d = f.server.handle('/memfs', f.fs.idOf('/d'));
    const res = await f.client.readdir(d, 0n, ZERO_VERF, 4096);
    expect(res.status).toBe(NfsStatus.OK);
    expect(res.eof).toBe(true);
    expect(res.dirAttrs?.fileId).toBe(f.fs.idOf('/d'));
    expect(res.entries).toEqual([
      { fileId: f.fs.idOf('/d'), name: '.', cookie: 1n },
      { fileId: f.fs.rootId, name: '..', cookie: 2n },
      { fileId: a, name: 'a', cookie: 3n },
      { fileId: b, name: 'b', cookie: 4n },
    ]);
  });

  it('pages through 1000 entries with small counts, each entry exactly once', async () => {
    for (let i = 0; i < 1000; i++) f.fs.writeFile(`/big/file-${String(i).padStart(4, '0')}.vmdk`);
    const dir = f.server.handle('/memfs', f.fs.idOf('/big'));
    for (const count of [200, 512, 4096]) {
      const seen: string[] = [];
      const cookies: bigint[] = [];
      let cookie = 0n;
      let verf: Buffer = ZERO_VERF;
      let pages = 0;
      for (;;) {
        const res = await f.client.readdir(dir, cookie, verf, count);
        expect(res.status).toBe(NfsStatus.OK);
        expect(res.bodySize).toBeLessThanOrEqual(count);
        pages++;
        seen.push(...res.entries!.map((e) => e.name));
        cookies.push(...res.entries!.map((e) => e.cookie));
        if (res.eof) break;
        cookie = res.entries!.at(-1)!.cookie;
        verf = res.verf!;
      }
      expect(seen).toHaveLength(1002);
      expect(new Set(seen).size).toBe(1002);
      expect(cookies).toEqual(cookies.map((_, i) => BigInt(i + 1)));
      if (count === 200) expect(pages).toBeGreaterThan(100);
    }
  });

  it('resumes from any cookie while the directory is unchanged', async () => {
    for (let i = 0; i < 20; i++) f.fs.writeFile(`/d/f${i}`);
    const dir = f.server.handle('/memfs', f.fs.idOf('/d'));
    const all = await f.client.readdirAll(dir);
    const first = await f.client.readdir(dir, 0n, ZERO_VERF, 4096);
    const from = await f.client.readdir(dir, 10n, first.verf!, 4096);
    expect(from.entries).toEqual(all.slice(10));
    const atEnd = await f.client.readdir(dir, 22n, first.verf!, 4096);
    expect(atEnd).toMatchObject({ status: NfsStatus.OK, entries: [], eof: true });
  });

  it('answers BAD_COOKIE after the directory changes, and for a cookie past the end', async () => {
    for (let i = 0; i < 50; i++) f.fs.writeFile(`/d/f${i}`);
    const dir = f.server.handle('/memfs', f.fs.idOf('/d'));
    const page = await f.client.readdir(dir, 0n, ZERO_VERF, 512);
    expect(page.eof).toBe(false);
    const next = page.entries!.at(-1)!.cookie;
    expect((await f.client.readdir(dir, next, page.verf!, 512)).status).toBe(NfsStatus.OK);
    expect((await f.client.create(dir, 'new', { mode: 'guarded' })).status).toBe(NfsStatus.OK);
    const stale = await f.client.readdir(dir, next, page.verf!, 512);
    expect(stale.status).toBe(NfsStatus.BAD_COOKIE);
    expect(stale.dirAttrs?.fileId).toBe(f.fs.idOf('/d'));
    const restart = await f.client.readdir(dir, 0n, page.verf!, 512);
    expect(restart.status).toBe(NfsStatus.OK);
    expect(restart.verf).not.toEqual(page.verf);
    expect((await f.client.readdir(dir, 1000n, restart.verf!, 512)).status).toBe(
      NfsStatus.BAD_COOKIE,
    );
    expect((await f.client.readdir(dir, 3n, ZERO_VERF, 512)).status).toBe(NfsStatus.BAD_COOKIE);
  });

  it('answers TOOSMALL when not even one entry fits, NOTDIR for a file', async () => {
    f.fs.writeFile(`/d/${'x'.repeat(200)}`);
    const dir = f.server.handle('/memfs', f.fs.idOf('/d'));
    expect((await f.client.readdir(dir, 0n, ZERO_VERF, 50)).status).toBe(NfsStatus.TOOSMALL);
    // status, dir attributes, verifier (100) + end of list, eof (8) + '.' and '..' (28 each).
    const first = await f.client.readdir(dir, 0n, ZERO_VERF, 164);
    expect(first.entries!.map((e) => e.name)).toEqual(['.', '..']);
    expect(first.bodySize).toBe(164);
    const small = await f.client.readdir(dir, 2n, first.verf!, 164);
    expect(small.status).toBe(NfsStatus.TOOSMALL);
    expect(small.dirAttrs).toBeDefined();
    const file = f.server.handle('/memfs', f.fs.writeFile('/f'));
    expect((await f.client.readdir(file, 0n, ZERO_VERF, 4096)).status).toBe(NfsStatus.NOTDIR);
  });
});

describe('READDIRPLUS', () => {
  const f = useNfs3Fixture();

  it('answers attributes and working handles with every entry', async () => {
    const id = f.fs.writeFile('/d/a', 'abc');
    f.fs.mkdirp('/d/sub');
    const d = (await f.client.lookup(f.root, 'd')).object!;
    const res = await f.client.readdirplus(d, 0n, ZERO_VERF, 4096, 65536);
    expect(res.status).toBe(NfsStatus.OK);
    expect(res.entries!.map((e) => e.name)).toEqual(['.', '..', 'a', 'sub']);
    const a = res.entries![2]!;
    expect(a.attrs).toMatchObject({ type: 'file', size: 3, fileId: id });
    expect(a.handle).toEqual(f.server.handle('/memfs', id));
    expect(res.entries![0]!.handle).toEqual(d);
    expect(res.entries![1]!.handle).toEqual(f.root);
    for (const e of res.entries!) {
      expect((await f.client.getattr(e.handle!)).attrs?.fileId).toBe(e.fileId);
    }
  });

  it('never exceeds maxcount nor dircount, and lists every entry once', async () => {
    for (let i = 0; i < 300; i++) f.fs.writeFile(`/big/${'n'.repeat(i % 40)}-${i}`);
    const dir = f.server.handle('/memfs', f.fs.idOf('/big'));
    for (const [dircount, maxcount] of [
      [65536, 400],
      [65536, 1000],
      [100, 65536],
      [512, 4096],
      [8192, 32768],
    ] as const) {
      const { entries, pages } = await readdirplusAll(f.client, dir, dircount, maxcount);
      expect(entries.map((e) => e.name).sort()).toEqual(
        ['.', '..', ...(await f.fs.readdir(f.fs.idOf('/big'))).map((e) => e.name)].sort(),
      );
      expect(pages).toBeGreaterThan(1);
    }
  });

  it('answers TOOSMALL when one entry does not fit in maxcount or dircount', async () => {
    const dir = f.server.handle('/memfs', f.fs.mkdirp('/d'));
    expect((await f.client.readdirplus(dir, 0n, ZERO_VERF, 4096, 200)).status).toBe(
      NfsStatus.TOOSMALL,
    );
    expect((await f.client.readdirplus(dir, 0n, ZERO_VERF, 20, 4096)).status).toBe(
      NfsStatus.TOOSMALL,
    );
    // 100 + 8 as for READDIR, plus '.' with attributes and handle: 28 + 88 + 40.
    expect((await f.client.readdirplus(dir, 0n, ZERO_VERF, 4096, 263)).status).toBe(
      NfsStatus.TOOSMALL,
    );
    const one = await f.client.readdirplus(dir, 0n, ZERO_VERF, 4096, 264);
    expect(one.entries).toHaveLength(1);
    expect(one.bodySize).toBe(264);
  });

  it('sends .. without a handle when its directory is not known', async () => {
    const deep = f.server.handle('/memfs', f.fs.mkdirp('/x/y'));
    const res = await f.client.readdirplus(deep, 0n, ZERO_VERF, 4096, 65536);
    const dotdot = res.entries![1]!;
    expect(dotdot).toMatchObject({ name: '..', attrs: undefined, handle: undefined });
  });
});
