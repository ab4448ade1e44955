import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import {
  ErrorCode,
  isIvmrError,
  MemoryBlockSource,
  openLocalRepository,
  type Repository,
} from '@ivmr/core';
import { NfsStatusError } from '@ivmr/nfs';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { tempDir } from '../../nfs/test/real-clients/harness.js';
import {
  callControl,
  RecoveryService,
  type RecoveryServiceOptions,
  RecoverySession,
  serveControl,
} from '../src/index.js';
import { bytes } from './support/bytes.js';

const MIB = 1024 * 1024;

describe('RecoveryService', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>;
  let repo: Repository;
  const images: Record<string, Buffer> = {};
  let n = 0;
  const cacheDir = () => join(tmp.path, `cache${++n}`);
  const options = (dir: string): RecoveryServiceOptions => ({
    repository: repo,
    cacheDir: dir,
    minFreeBytes: 0,
    floorFraction: 0,
  });

  beforeAll(async () => {
    tmp = await tempDir();
    repo = await openLocalRepository(join(tmp.path, 'repo'), { create: true });
    for (const [vm, size, seed] of [
      ['web01', 3 * MIB + 512, 1],
      ['db02', 2 * MIB, 2],
      ['odd03', MIB + 100, 3],
    ] as const) {
      images[vm] = bytes(size, seed);
      await repo.backup({
        vm,
        disks: [{ name: vm, source: new MemoryBlockSource(images[vm]!) }],
        vmConfig: { memoryMB: 1024 },
      });
    }
  });

  afterAll(async () => {
    await repo?.close();
    await tmp?.remove();
  });

  /** The flat extent's id in the datastore. */
  async function flatId(service: RecoveryService, vm: string): Promise<bigint> {
    const ds = service.datastore;
    const folder = await ds.lookup(ds.rootId, vm);
    return ds.lookup(folder, `${vm}-flat.vmdk`);
  }

  it('stops a session keeping its writes, resumes it by name, and discards it', async () => {
    const dir = cacheDir();
    const service = await RecoveryService.open(options(dir));
    await service.start({ vm: 'web01' });
    await service.start({ vm: 'db02' });
    const ds = service.datastore;
    await ds.write(await flatId(service, 'web01'), 4096, Buffer.alloc(100, 0xab), 'file_sync');
    const listed = await service.list();
    expect(listed.map((s) => [s.name, s.status])).toEqual([
      ['web01', 'served'],
      ['db02', 'served'],
    ]);
    expect(listed[0]!.cacheBytes).toBeGreaterThan(0);

    expect(await service.stop('web01')).toEqual({ discarded: false });
    await expect(ds.lookup(ds.rootId, 'web01')).rejects.toBeInstanceOf(NfsStatusError);
    expect((await service.list()).map((s) => [s.name, s.status])).toEqual([
      ['db02', 'served'],
      ['web01', 'kept'],
    ]);
    await service.close();

    // A new service does not serve the kept session until it is started again.
    const again = await RecoveryService.open(options(dir));
    expect(again.sessions.map((s) => s.name)).toEqual(['db02']);
    await expect(again.start({ vm: 'db02', point: 'ffff' })).rejects.toMatchObject({
      code: ErrorCode.EXISTS,
    });
    await again.start({ vm: 'web01' });
    const got = await again.datastore.read(await flatId(again, 'web01'), 4090, 110);
    expect([...got.subarray(0, 6)]).toEqual([...images.web01!.subarray(4090, 4096)]);
    expect(got.subarray(6, 106).every((b) => b === 0xab)).toBe(true);
    expect(await again.stop('web01', { discard: true })).toEqual({ discarded: true });
    await expect(stat(join(dir, 'sessions', 'web01'))).rejects.toMatchObject({ code: 'ENOENT' });
    await expect(again.stop('web01')).rejects.toMatchObject({ code: ErrorCode.NOT_FOUND });
    await again.close();
  });

  it('a sandbox session stopped without discard drops its writes, and says so', async () => {
    const dir = cacheDir();
    const service = await RecoveryService.open(options(dir));
    await service.start({ vm: 'odd03', mode: 'sandbox' });
    await service.datastore.write(
      await flatId(service, 'odd03'),
      0,
      Buffer.alloc(512, 1),
      'file_sync',
    );
    expect(await service.stop('odd03')).toEqual({ discarded: true });
    await expect(stat(join(dir, 'sessions', 'odd03'))).rejects.toMatchObject({ code: 'ENOENT' });
    await service.close();
  });

  it('refuses to start without the free space the VM needs, leaving nothing', async () => {
    const dir = cacheDir();
    const service = await RecoveryService.open({
      repository: repo,
      cacheDir: dir,
      floorFraction: 0.05,
      statfs: async () => ({ totalBytes: 100 * 1024 * MIB, freeBytes: 30 * 1024 * MIB }),
    });
    // 20 GiB for the VM + 5 GiB floor = 25 GiB <= 30 GiB free: it starts.
    await service.start({ vm: 'db02' });
    await service.close();
    const tight = await RecoveryService.open({
      repository: repo,
      cacheDir: dir,
      floorFraction: 0.05,
      statfs: async () => ({ totalBytes: 100 * 1024 * MIB, freeBytes: 24 * 1024 * MIB }),
    });
    const err = await tight.start({ vm: 'web01' }).catch((e: unknown) => e);
    expect(isIvmrError(err, ErrorCode.NO_SPACE)).toBe(true);
    expect((err as Error).message).toMatch(/24 GiB free.*at least 25 GiB/);
    await expect(stat(join(dir, 'sessions', 'web01'))).rejects.toMatchObject({ code: 'ENOENT' });
    expect(tight.sessions.map((s) => s.name)).toEqual(['db02']);
    await tight.close();
  });

  it('puts a read cache under the overlay: a second read comes from local disk', async () => {
    const dir = cacheDir();
    const service = await RecoveryService.open({ ...options(dir), readCacheBytes: 8 * MIB });
    const session = await service.start({ vm: 'db02' });
    const id = await flatId(service, 'db02');
    const first = await service.datastore.read(id, 0, MIB);
    const fromBackup = session.stats()[0]!.bytesFromBase;
    const second = await service.datastore.read(id, 0, MIB);
    expect(Buffer.compare(first, images.db02!.subarray(0, MIB))).toBe(0);
    expect(Buffer.compare(second, first)).toBe(0);
    const s = session.stats()[0]!;
    expect(s.bytesFromBase).toBe(fromBackup);
    expect(s.bytesFromCache).toBe(MIB);
    // A miss is answered before its block is stored in the cache file; the store follows.
    await vi.waitFor(() => expect(session.stats()[0]!.cachedBytes).toBeGreaterThanOrEqual(MIB));
    await service.close();
  });

  it('migrates while writes go on; after the switch the target is the disk and writes are refused', async () => {
    const dir = cacheDir();
    const to = join(tmp.path, 'prod-web01');
    const service = await RecoveryService.open(options(dir));
    const session = await service.start({ vm: 'web01' });
    const ds = service.datastore;
    const id = await flatId(service, 'web01');
    const model = Buffer.from(images.web01!);
    const write = async (off: number, len: number, v: number) => {
      const data = Buffer.alloc(len, v);
      await ds.write(id, off, data, 'unstable');
      data.copy(model, off);
    };
    await write(100, 5000, 1);
    const migration = await service.migrate('web01', {
      to,
      rateBytesPerSec: 4 * MIB,
      chunkSize: 64 * 1024,
    });
    // Writes while the first pass runs, into copied and not yet copied chunks.
    for (let i = 0; i < 20; i++) {
      await write((i * 157_813) % (model.length - 9000), 9000, 10 + i);
      if (i % 5 === 4) await ds.commit(id);
      await new Promise((r) => setTimeout(r, 10));
    }
    await migration.synced;
    expect(migration.progress().phase).toBe('mirroring');
    await write(model.length - 700, 700, 99);
    await service.switchOver('web01');
    expect(migration.progress().phase).toBe('done');
    const flat = await readFile(join(to, 'web01-flat.vmdk'));
    // The flat extent is the disk rounded up to 512 bytes, as the datastore serves it.
    expect(flat.length).toBe(model.length);
    expect(Buffer.compare(flat, model)).toBe(0);
    expect(await readFile(join(to, 'web01.vmx'), 'utf8')).toBe(
      await readFile(join(session.files.dir, 'web01.vmx'), 'utf8'),
    );
    expect(await readFile(join(to, 'web01.vmdk'), 'utf8')).toContain('"web01-flat.vmdk"');
    await expect(ds.write(id, 0, Buffer.alloc(1), 'file_sync')).rejects.toMatchObject({
      statusName: 'ROFS',
    });
    const vmx = await ds.lookup(await ds.lookup(ds.rootId, 'web01'), 'web01.vmx');
    await expect(ds.write(vmx, 0, Buffer.from('x'), 'file_sync')).rejects.toMatchObject({
      statusName: 'ROFS',
    });
    await expect(ds.setattr(vmx, { size: 0 })).rejects.toMatchObject({ statusName: 'ROFS' });
    expect((await service.list())[0]!.status).toBe('migrated');
    await service.close();

    // The switch is persisted: after a restart the session stays read-only.
    const again = await RecoveryService.open(options(dir));
    const s = again.session('web01');
    expect(s.readOnly).toBe(true);
    await expect(
      again.datastore.write(await flatId(again, 'web01'), 0, Buffer.alloc(1), 'file_sync'),
    ).rejects.toMatchObject({ statusName: 'ROFS' });
    await expect(again.migrate('web01', { to })).rejects.toMatchObject({ code: ErrorCode.EXISTS });
    await again.close();
  });

  it('a raw target is the disk; a flat target is padded to the flat extent, as served', async () => {
    const dir = cacheDir();
    const service = await RecoveryService.open(options(dir));
    await service.start({ vm: 'odd03' });
    const flat = join(tmp.path, 'odd-flat');
    const m = await service.migrate('odd03', { to: flat });
    await m.synced;
    await service.switchOver('odd03');
    const got = await readFile(join(flat, 'odd03-flat.vmdk'));
    expect(got.length).toBe(MIB + 512);
    expect(Buffer.compare(got.subarray(0, MIB + 100), images.odd03!)).toBe(0);
    expect(got.subarray(MIB + 100).every((b) => b === 0)).toBe(true);
    await service.stop('odd03', { discard: true });
    await service.start({ vm: 'odd03' });
    const raw = join(tmp.path, 'odd-raw');
    await (await service.migrate('odd03', { to: raw, format: 'raw' })).synced;
    await service.switchOver('odd03');
    expect(Buffer.compare(await readFile(join(raw, 'odd03.raw')), images.odd03!)).toBe(0);
    await service.close();
  });

  it('is driven through its control socket; a second server on the folder is refused', async () => {
    const dir = cacheDir();
    await expect(callControl(dir, 'ping')).rejects.toMatchObject({
      code: ErrorCode.NOT_FOUND,
      details: { reason: 'NO_SERVER' },
    });
    const service = await RecoveryService.open(options(dir));
    await service.start({ vm: 'db02' });
    const control = await serveControl(dir, service);
    try {
      expect(await callControl(dir, 'ping')).toMatchObject({ pid: process.pid });
      const err = await serveControl(dir, service).catch((e: unknown) => e);
      expect(isIvmrError(err, ErrorCode.LOCKED)).toBe(true);
      expect((err as Error).message).toContain(`pid ${process.pid}`);
      const sessions = (await callControl(dir, 'sessions')) as { name: string; status: string }[];
      expect(sessions.map((s) => [s.name, s.status])).toEqual([['db02', 'served']]);
      await expect(callControl(dir, 'stop', { name: 'nosuch' })).rejects.toMatchObject({
        code: ErrorCode.NOT_FOUND,
      });
      await expect(callControl(dir, 'migrate', { name: 'db02' })).rejects.toMatchObject({
        code: ErrorCode.INVALID_ARGUMENT,
      });
      await callControl(dir, 'stop', { name: 'db02', discard: true });
      expect(await RecoverySession.list(dir)).toEqual([]);
    } finally {
      await control.close();
      await service.close();
    }
    // The socket file is gone, so no one mistakes the folder for a served one.
    await expect(stat(join(dir, 'control.sock'))).rejects.toMatchObject({ code: 'ENOENT' });
  });
});
