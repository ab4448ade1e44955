import { join } from 'node:path';
import { MemoryBlockSource, openLocalRepository, type Repository } from '@ivmr/core';
import { NfsStatus } from '@ivmr/nfs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  Nfs3Client,
  startTestServer,
  type TestServer,
} from '../../nfs/test/helpers/nfs3-client.js';
import { tempDir } from '../../nfs/test/real-clients/harness.js';
import { RecoveryDatastore, RecoverySession } from '../src/index.js';

const MIB = 1024 * 1024;

describe('ESXi-like file traffic in a VM folder', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>;
  let repo: Repository;
  let session: RecoverySession;
  let server: TestServer;
  let client: Nfs3Client;
  let folder: Buffer;

  beforeAll(async () => {
    tmp = await tempDir();
    repo = await openLocalRepository(join(tmp.path, 'repo'), { create: true });
    const disk = Buffer.alloc(4 * MIB + 512, 0x11);
    await repo.backup({
      vm: 'app01',
      disks: [{ name: 'app01', source: new MemoryBlockSource(disk) }],
      vmConfig: { memoryMB: 2048 },
    });
    session = await RecoverySession.start({
      minFreeBytes: 0,
      floorFraction: 0,
      repository: repo,
      cacheDir: join(tmp.path, 'cache'),
      vm: 'app01',
    });
    server = await startTestServer({
      exports: [{ path: '/ivmr', fs: new RecoveryDatastore(join(tmp.path, 'cache'), [session]) }],
    });
    client = await Nfs3Client.connect(server.port);
    const found = await client.lookup(server.handle('/ivmr'), 'app01');
    expect(found.status).toBe(NfsStatus.OK);
    folder = found.object!;
  });

  afterAll(async () => {
    await client?.close();
    await server?.stop();
    await session?.close();
    await repo?.close();
    await tmp?.remove();
  });

  it('lists the .vmx, the descriptor and the flat extent', async () => {
    const names = new Set<string>();
    let cookie = 0n;
    let verf: Buffer = Buffer.alloc(8);
    for (;;) {
      const page = await client.readdir(folder, cookie, verf, 4096);
      expect(page.status).toBe(NfsStatus.OK);
      for (const e of page.entries!) names.add(e.name);
      if (page.eof) break;
      cookie = page.entries!.at(-1)!.cookie;
      verf = page.verf!;
    }
    expect([...names].sort()).toEqual(['.', '..', 'app01-flat.vmdk', 'app01.vmdk', 'app01.vmx']);
    const flat = await client.lookup(folder, 'app01-flat.vmdk');
    expect(flat.objAttrs?.size).toBe(4 * MIB + 512);
  });

  it('creates a .lck file GUARDED, refuses a second GUARDED create, rewrites and removes it', async () => {
    const lck = await client.create(folder, '.lck-0a0b0c0d00000001', { mode: 'guarded' });
    expect(lck.status).toBe(NfsStatus.OK);
    const again = await client.create(folder, '.lck-0a0b0c0d00000001', { mode: 'guarded' });
    expect(again.status).toBe(NfsStatus.EXIST);
    for (let i = 0; i < 3; i++) {
      const w = await client.write(lck.object!, 0, Buffer.from(`lock generation ${i}`), 2);
      expect(w.status).toBe(NfsStatus.OK);
    }
    const read = await client.read(lck.object!, 0, 100);
    expect(read.data?.toString()).toBe('lock generation 2');
    expect(read.eof).toBe(true);
    expect((await client.remove(folder, '.lck-0a0b0c0d00000001')).status).toBe(NfsStatus.OK);
    expect((await client.lookup(folder, '.lck-0a0b0c0d00000001')).status).toBe(NfsStatus.NOENT);
  });

  it('creates a swap file and sizes it with SETATTR (sparse)', async () => {
    const swap = await client.create(folder, 'app01-5f3e.vswp', { mode: 'unchecked' });
    expect(swap.status).toBe(NfsStatus.OK);
    const set = await client.setattr(swap.object!, { size: 2048 * MIB });
    expect(set.status).toBe(NfsStatus.OK);
    const attrs = await client.getattr(swap.object!);
    expect(attrs.attrs?.size).toBe(2048 * MIB);
    expect(attrs.attrs!.used).toBeLessThan(MIB);
  });

  it('renames .vmx~ onto .vmx and serves the new content', async () => {
    const tilde = await client.create(folder, 'app01.vmx~', { mode: 'guarded' });
    const text = Buffer.from(
      '.encoding = "UTF-8"\nconfig.version = "8"\ndisplayName = "app01 edited"\n',
    );
    expect((await client.write(tilde.object!, 0, text, 2)).status).toBe(NfsStatus.OK);
    expect((await client.rename(folder, 'app01.vmx~', folder, 'app01.vmx')).status).toBe(
      NfsStatus.OK,
    );
    const vmx = await client.lookup(folder, 'app01.vmx');
    expect((await client.read(vmx.object!, 0, 4096)).data?.toString()).toBe(text.toString());
    expect((await client.lookup(folder, 'app01.vmx~')).status).toBe(NfsStatus.NOENT);
  });

  it('writes to the flat extent go to the overlay; COMMIT returns the WRITE verifier', async () => {
    const flat = (await client.lookup(folder, 'app01-flat.vmdk')).object!;
    const data = Buffer.alloc(8192, 0x77);
    const w = await client.write(flat, MIB + 100, data, 0);
    expect(w.status).toBe(NfsStatus.OK);
    const c = await client.commit(flat);
    expect(c.status).toBe(NfsStatus.OK);
    expect(c.verf).toEqual(w.verf);
    const r = await client.read(flat, MIB, 16384);
    expect(r.data!.subarray(100, 100 + 8192)).toEqual(data);
    expect(r.data!.subarray(0, 100)).toEqual(Buffer.alloc(100, 0x11));
    expect(session.disks[0]!.overlay.stats().dirtyBytes).toBe(0);
  });

  it('an UNCHECKED CREATE of the flat extent opens it (open with O_CREAT); it cannot be replaced', async () => {
    const flat = (await client.lookup(folder, 'app01-flat.vmdk')).object!;
    const before = (await client.read(flat, 0, 4096)).data!;
    const opened = await client.create(folder, 'app01-flat.vmdk', { mode: 'unchecked' });
    expect(opened.status).toBe(NfsStatus.OK);
    expect(opened.object).toEqual(flat);
    expect(opened.objAttrs?.size).toBe(session.disks[0]!.extent.size);
    expect((await client.read(flat, 0, 4096)).data).toEqual(before);
    // Truncation (O_TRUNC sends size 0) would replace the disk.
    const truncate = { mode: 'unchecked', attrs: { size: 0 } } as const;
    expect((await client.create(folder, 'app01-flat.vmdk', truncate)).status).toBe(NfsStatus.INVAL);
    expect((await client.create(folder, 'app01-flat.vmdk', { mode: 'guarded' })).status).toBe(
      NfsStatus.EXIST,
    );
    expect((await client.read(flat, 0, 4096)).data).toEqual(before);
  });

  it('refuses to remove the flat extent, and to make folders', async () => {
    expect((await client.remove(folder, 'app01-flat.vmdk')).status).toBe(NfsStatus.ACCES);
    expect((await client.mkdir(folder, 'sub')).status).toBe(NfsStatus.NOTSUPP);
    expect(
      (await client.create(server.handle('/ivmr'), 'new-vm', { mode: 'guarded' })).status,
    ).toBe(NfsStatus.ACCES);
  });
});
