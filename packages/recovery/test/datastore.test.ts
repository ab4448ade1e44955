import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  MemoryBlockSource,
  openLocalRepository,
  type Repository,
  type RestorePointInfo,
} from '@ivmr/core';
import { NfsServer } from '@ivmr/nfs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  lockPort111,
  requirePortFree,
  requireTools,
  run,
  runOk,
  tempDir,
} from '../../nfs/test/real-clients/harness.js';
import { RecoveryDatastore, RecoverySession } from '../src/index.js';

const MIB = 1024 * 1024;

/** A disk image: random data, runs of zeros, text; size not a multiple of the block size. */
function image(size: number, seed: number): Buffer {
  const out = Buffer.alloc(size);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < size; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out.writeUInt32LE(x >>> 0, i);
  }
  out.fill(0, Math.floor(size / 3), Math.floor(size / 2));
  out.write('ivmr test disk '.repeat(1000), Math.floor(size / 2), 'latin1');
  return out;
}

async function hashTree(dir: string): Promise<string> {
  const h = createHash('sha256');
  const walk = async (d: string): Promise<void> => {
    for (const e of (await readdir(d, { withFileTypes: true })).sort((a, b) =>
      a.name < b.name ? -1 : 1,
    )) {
      const p = join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else if (!p.includes('/locks/')) h.update(p).update(await readFile(p));
    }
  };
  await walk(dir);
  return h.digest('hex');
}

describe('recovery datastore served over NFS to qemu', () => {
  let tools: ReturnType<typeof requireTools>;
  let tmp: Awaited<ReturnType<typeof tempDir>>;
  let release111: (() => Promise<void>) | undefined;
  let repo: Repository;
  const points: { info: RestorePointInfo; raw: string }[] = [];
  const SIZE = 10 * MIB + 3 * 512;

  beforeAll(async () => {
    tools = requireTools('qemu-img', 'qemu-io', 'nfs-cat');
    tmp = await tempDir();
    repo = await openLocalRepository(join(tmp.path, 'repo'), {
      create: true,
      blockSize: 256 * 1024,
    });
    let disk = image(SIZE, 7);
    for (const [i, reverse] of [false, false, true].entries()) {
      if (i > 0) {
        disk = Buffer.from(disk);
        disk.fill(0x40 + i, (i * 3 + 1) * 300_000, (i * 3 + 2) * 300_000);
      }
      const raw = join(tmp.path, `point${i}.raw`);
      await writeFile(raw, disk);
      const info = await repo.backup({
        vm: 'web01',
        disks: [{ name: 'web01', source: new MemoryBlockSource(disk) }],
        reverse,
      });
      points.push({ info, raw });
    }
    release111 = await lockPort111();
    await requirePortFree(111);
  });

  afterAll(async () => {
    await release111?.();
    await repo?.close();
    await tmp?.remove();
  });

  async function serve(sessions: RecoverySession[]) {
    const datastore = new RecoveryDatastore(join(tmp.path, 'cache'), sessions);
    const errors: unknown[] = [];
    const server = new NfsServer({
      exports: [{ path: '/ivmr', fs: datastore }],
      nfsPort: 0,
      mountPort: 0,
      portmap: 'embedded',
      portmapPort: 111,
      handleKey: Buffer.alloc(32, 7),
      onError: (e) => errors.push(e),
    });
    await server.start();
    return { server, datastore, errors };
  }

  // qemu 7.2's nfs driver gives the directory of nfs://h/e/vm/disk.vmdk as
  // "nfs://h/e/vm/disk.vmdk/", so it cannot open a descriptor's extent through nfs:// (ESXi
  // resolves it fine). The flat file is compared through nfs:// directly, and the descriptor
  // the datastore serves is checked by copying both files out over NFS and opening them locally.
  it('every point of a forward and reverse chain compares identical through nfs://, flat and descriptor', async () => {
    const cache = join(tmp.path, 'cache');
    const sessions: RecoverySession[] = [];
    for (const [i, p] of points.entries()) {
      sessions.push(
        await RecoverySession.start({
          minFreeBytes: 0,
          floorFraction: 0,
          repository: repo,
          cacheDir: cache,
          vm: 'web01',
          point: p.info.id,
          name: `web01-p${i}`,
          mode: 'sandbox',
        }),
      );
    }
    const repoHash = await hashTree(join(tmp.path, 'repo'));
    const { server, errors } = await serve(sessions);
    try {
      for (const [i, p] of points.entries()) {
        const folder = `nfs://127.0.0.1/ivmr/web01-p${i}`;
        const flat = `${folder}/web01-flat.vmdk`;
        await runOk(tools['qemu-img'], ['compare', '-f', 'raw', '-F', 'raw', flat, p.raw], 60_000);
        const local = join(tmp.path, `copy-p${i}`);
        await mkdir(local);
        const descriptor = await runOk(tools['nfs-cat'], [`${folder}/web01.vmdk`]);
        await writeFile(join(local, 'web01.vmdk'), descriptor);
        const localFlat = join(local, 'web01-flat.vmdk');
        await runOk(
          tools['qemu-img'],
          ['convert', '-f', 'raw', '-O', 'raw', flat, localFlat],
          60_000,
        );
        const localDescriptor = join(local, 'web01.vmdk');
        const info = JSON.parse(
          (await runOk(tools['qemu-img'], ['info', '--output=json', localDescriptor])).toString(),
        );
        expect(info.format).toBe('vmdk');
        expect(info['virtual-size']).toBe(SIZE);
        await runOk(
          tools['qemu-img'],
          ['compare', '-f', 'vmdk', '-F', 'raw', localDescriptor, p.raw],
          60_000,
        );
      }
    } finally {
      await server.stop();
      for (const s of sessions) await s.close();
    }
    expect(errors).toEqual([]);
    expect(await hashTree(join(tmp.path, 'repo'))).toBe(repoHash);
    // Sandbox sessions leave nothing behind.
    expect(await readdir(join(cache, 'sessions'))).toEqual([]);
  });

  it('writes through qemu-io land in the overlay, survive a restart, and never touch the repository', async () => {
    const cache = join(tmp.path, 'cache2');
    const repoHash = await hashTree(join(tmp.path, 'repo'));
    const session = await RecoverySession.start({
      minFreeBytes: 0,
      floorFraction: 0,
      repository: repo,
      cacheDir: cache,
      vm: 'web01',
      name: 'web01',
    });
    let served = await serve([session]);
    const url = 'nfs://127.0.0.1/ivmr/web01/web01-flat.vmdk';
    try {
      await runOk(tools['qemu-io'], [
        '-f',
        'raw',
        '-c',
        'write -P 0x5a 1048576 65536',
        '-c',
        'write -P 0xa5 3145728 4096',
        url,
      ]);
      const r = await run(tools['qemu-io'], [
        '-f',
        'raw',
        '-c',
        'read -P 0x5a 1048576 65536',
        '-c',
        'read -P 0xa5 3145728 4096',
        url,
      ]);
      expect(r.stdout.toString()).not.toMatch(/Pattern verification failed/);
      expect(r.code).toBe(0);
    } finally {
      await served.server.stop();
      await session.close();
    }
    // Restart: the session comes back from the cache folder with its writes.
    const resumed = await RecoverySession.resumeAll(repo, cache);
    expect(resumed.map((s) => s.name)).toEqual(['web01']);
    served = await serve(resumed);
    try {
      const r = await run(tools['qemu-io'], [
        '-f',
        'raw',
        '-c',
        'read -P 0x5a 1048576 65536',
        '-c',
        'read -P 0xa5 3145728 4096',
        url,
      ]);
      expect(r.stdout.toString()).not.toMatch(/Pattern verification failed/);
      expect(r.code).toBe(0);
      // Everything else still reads as the newest point.
      const expected = await readFile(points.at(-1)!.raw);
      expected.fill(0x5a, MIB, MIB + 65536);
      expected.fill(0xa5, 3 * MIB, 3 * MIB + 4096);
      const merged = join(tmp.path, 'merged.raw');
      await writeFile(merged, expected);
      await runOk(tools['qemu-img'], ['compare', '-f', 'raw', '-F', 'raw', url, merged], 60_000);
    } finally {
      await served.server.stop();
      for (const s of resumed) await s.close();
    }
    expect(served.errors).toEqual([]);
    expect(await hashTree(join(tmp.path, 'repo'))).toBe(repoHash);
    expect((await stat(join(cache, 'sessions', 'web01', 'session.json'))).isFile()).toBe(true);
  });
});
