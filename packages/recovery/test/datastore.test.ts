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
const SECTOR = 512;
/** The repository's block size: the unit the backups store and the deltas replace. */
const BLOCK = 256 * 1024;

/** A disk image: random data, runs of zeros, text; any size (not only multiples of 4). */
function image(size: number, seed: number): Buffer {
  const out = Buffer.alloc(Math.ceil(size / 4) * 4);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < out.length; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out.writeUInt32LE(x >>> 0, i);
  }
  out.fill(0, Math.floor(size / 3), Math.floor(size / 2));
  out.write('ivmr test disk '.repeat(1000), Math.floor(size / 2), 'latin1');
  return Buffer.from(out.subarray(0, size));
}

/**
 * The disk as the guest changed it before backup `step` (1, 2, ...): a run of new bytes that
 * overlaps the previous step's, a whole block zeroed (step 2; a quarter of a disk smaller than
 * two blocks) and partly rewritten (step 3), and the last 300 bytes (the partial last sector
 * and block) rewritten every time. Every step leaves bytes no other step has, so each point of a
 * chain differs from every other.
 */
function nextVersion(prev: Buffer, step: number): Buffer {
  const disk = Buffer.from(prev);
  const n = disk.length;
  const at = Math.floor((n * step) / 7);
  disk.fill(0x40 + step, at, Math.min(n, at + Math.floor(n / 5)));
  const zeroed = n > 2 * BLOCK ? BLOCK : 0;
  if (step === 2) disk.fill(0, zeroed, zeroed + Math.min(BLOCK, Math.floor(n / 4)));
  if (step >= 3) disk.write(`step ${step} `.repeat(50), zeroed + 1000, 'latin1');
  disk.fill(0x60 + step, Math.max(0, n - 300), n);
  return disk;
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

/**
 * The disks of the chain VMs: none fills its last backup block, and two are not whole sectors
 * (their flat extents are padded with zeros to the next sector).
 */
const DISKS = [
  // 8 blocks and 1536 bytes: whole sectors, short last block.
  { name: 'sect', size: 2 * MIB + 3 * SECTOR },
  // 10 blocks and 777 bytes: the last sector holds 265 bytes.
  { name: 'odd', size: 2 * MIB + 2 * BLOCK + 777 },
  // Less than one block and not whole sectors.
  { name: 'tiny', size: 200_001 },
] as const;
/** Points per chain: a full one and three increments. */
const CHAIN_LENGTH = 4;
type ChainVm = 'fwd' | 'rev';

/** One backed-up point of a chain VM: its id and, per disk, the raw image it was taken from. */
interface ChainPoint {
  readonly id: string;
  readonly raw: Readonly<Record<string, string>>;
}

/** Kind of a block map object: byte 8 of `maps/<name>` (FORMAT.md, "Block maps"). */
async function mapKind(repoDir: string, map: string): Promise<'full' | 'delta'> {
  const bytes = await readFile(join(repoDir, 'maps', map));
  expect(bytes.subarray(0, 8).toString('latin1')).toBe('IVMRMAP1');
  expect([0, 1]).toContain(bytes[8]);
  return bytes[8] === 0 ? 'full' : 'delta';
}

describe('recovery datastore served over NFS to qemu', () => {
  let tools: ReturnType<typeof requireTools>;
  let tmp: Awaited<ReturnType<typeof tempDir>>;
  let release111: (() => Promise<void>) | undefined;
  let repo: Repository;
  /** `fwd`: full + forward increments; `rev`: reverse increments + the newest full. */
  const chains: Record<ChainVm, ChainPoint[]> = { fwd: [], rev: [] };
  /** `web01`, for the write test: two forward backups, then a reverse one. */
  const web01Points: { info: RestorePointInfo; raw: string }[] = [];
  const SIZE = 10 * MIB + 3 * 512;

  beforeAll(async () => {
    tools = requireTools('qemu-img', 'qemu-io', 'nfs-cat');
    tmp = await tempDir();
    repo = await openLocalRepository(join(tmp.path, 'repo'), {
      create: true,
      blockSize: BLOCK,
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
      web01Points.push({ info, raw });
    }
    // Two chains of the same shape, one forward and one reverse, with different contents.
    for (const [c, vm] of (['fwd', 'rev'] as const).entries()) {
      let disks = DISKS.map((d, k) => image(d.size, 101 + 10 * c + k));
      for (let i = 0; i < CHAIN_LENGTH; i++) {
        if (i > 0) disks = disks.map((d) => nextVersion(d, i));
        const raw: Record<string, string> = {};
        for (const [k, d] of DISKS.entries()) {
          raw[d.name] = join(tmp.path, `${vm}-p${i}-${d.name}.raw`);
          await writeFile(raw[d.name]!, disks[k]!);
        }
        const info = await repo.backup({
          vm,
          disks: DISKS.map((d, k) => ({ name: d.name, source: new MemoryBlockSource(disks[k]!) })),
          reverse: vm === 'rev',
        });
        chains[vm].push({ id: info.id, raw });
      }
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

  /**
   * Fails unless `fwd` is a genuine forward chain and `rev` a genuine reverse chain (point kinds,
   * bases, and the block map objects themselves), with different bytes at every point.
   */
  async function checkChains(): Promise<void> {
    const repoDir = join(tmp.path, 'repo');
    // Every point of every chain VM holds different bytes on every disk.
    const digests = new Set<string>();
    for (const vm of ['fwd', 'rev'] as const) {
      for (const p of chains[vm]) {
        for (const d of DISKS) {
          digests.add(
            createHash('sha256')
              .update(await readFile(p.raw[d.name]!))
              .digest('hex'),
          );
        }
      }
    }
    expect(digests.size).toBe(2 * CHAIN_LENGTH * DISKS.length);

    const fwd = await repo.listPoints('fwd');
    const ids = chains.fwd.map((p) => p.id);
    expect(fwd.map((p) => p.id)).toEqual(ids);
    // Forward: a full point, then increments each against the point before it.
    expect(fwd.map((p) => p.kind)).toEqual([
      'full',
      ...Array<string>(CHAIN_LENGTH - 1).fill('incremental'),
    ]);
    expect(fwd.map((p) => p.base)).toEqual([null, ...ids.slice(0, -1)]);
    for (const [i, p] of fwd.entries()) {
      expect(p.disks.map((d) => [d.name, d.size])).toEqual(DISKS.map((d) => [d.name, d.size]));
      for (const d of p.disks) {
        expect(await mapKind(repoDir, d.map)).toBe(i === 0 ? 'full' : 'delta');
      }
    }

    const rev = await repo.listPoints('rev');
    const revIds = chains.rev.map((p) => p.id);
    expect(rev.map((p) => p.id)).toEqual(revIds);
    // Reverse: the newest point is full, each older one a delta against the point after it.
    expect(rev.map((p) => p.kind)).toEqual([
      ...Array<string>(CHAIN_LENGTH - 1).fill('reverse-incremental'),
      'full',
    ]);
    expect(rev.map((p) => p.base)).toEqual([...revIds.slice(1), null]);
    for (const [i, p] of rev.entries()) {
      expect(p.disks.map((d) => [d.name, d.size])).toEqual(DISKS.map((d) => [d.name, d.size]));
      for (const d of p.disks) {
        expect(await mapKind(repoDir, d.map)).toBe(i === CHAIN_LENGTH - 1 ? 'full' : 'delta');
      }
    }
  }

  // qemu 7.2's nfs driver gives the directory of nfs://h/e/vm/disk.vmdk as
  // "nfs://h/e/vm/disk.vmdk/", so it cannot open a descriptor's extent through nfs:// (ESXi
  // resolves it fine). The flat file is compared through nfs:// directly, and the descriptor
  // the datastore serves is checked by copying both files out over NFS and opening them locally.
  it('every point of a forward and a reverse chain compares identical through nfs://, flat and descriptor, for odd disk sizes', async () => {
    await checkChains();
    const cache = join(tmp.path, 'cache');
    const sessions: RecoverySession[] = [];
    for (const vm of ['fwd', 'rev'] as const) {
      for (const [i, p] of chains[vm].entries()) {
        sessions.push(
          await RecoverySession.start({
            minFreeBytes: 0,
            floorFraction: 0,
            repository: repo,
            cacheDir: cache,
            vm,
            point: p.id,
            name: `${vm}-p${i}`,
            mode: 'sandbox',
          }),
        );
      }
    }
    const repoHash = await hashTree(join(tmp.path, 'repo'));
    const { server, errors } = await serve(sessions);
    let compared = 0;
    try {
      for (const vm of ['fwd', 'rev'] as const) {
        for (const [i, p] of chains[vm].entries()) {
          const folder = `nfs://127.0.0.1/ivmr/${vm}-p${i}`;
          const local = join(tmp.path, `copy-${vm}-p${i}`);
          await mkdir(local);
          for (const d of DISKS) {
            const raw = p.raw[d.name]!;
            const expected = await readFile(raw);
            const padded = Math.ceil(d.size / SECTOR) * SECTOR;
            const flat = `${folder}/${d.name}-flat.vmdk`;
            // qemu's own NFS client. qemu reads a raw file that is not whole sectors as if padded
            // with zeros, so this also checks that the served padding is zero.
            await runOk(
              tools['qemu-img'],
              ['compare', '-f', 'raw', '-F', 'raw', flat, raw],
              60_000,
            );
            // The exact bytes served (libnfs): the disk, then zeros up to the sector boundary.
            const served = await runOk(tools['nfs-cat'], [flat], 60_000);
            expect(served.length).toBe(padded);
            expect(served.subarray(0, d.size).equals(expected), `${vm}-p${i} ${d.name}`).toBe(true);
            expect(served.subarray(d.size).every((b) => b === 0)).toBe(true);
            // The descriptor, opened locally next to the served flat bytes.
            const descriptor = await runOk(tools['nfs-cat'], [`${folder}/${d.name}.vmdk`]);
            // One extent of the padded size: the flat file, whole sectors.
            expect(descriptor.toString('latin1')).toMatch(
              new RegExp(`^RW ${padded / SECTOR} VMFS "${d.name}-flat\\.vmdk"$`, 'm'),
            );
            const localDescriptor = join(local, `${d.name}.vmdk`);
            await writeFile(localDescriptor, descriptor);
            await writeFile(join(local, `${d.name}-flat.vmdk`), served);
            const info = JSON.parse(
              (
                await runOk(tools['qemu-img'], ['info', '--output=json', localDescriptor])
              ).toString(),
            );
            expect(info.format).toBe('vmdk');
            expect(info['virtual-size']).toBe(padded);
            await runOk(
              tools['qemu-img'],
              ['compare', '-f', 'vmdk', '-F', 'raw', localDescriptor, raw],
              60_000,
            );
            compared++;
          }
        }
      }
      // The compare is not blind to the partial last sector: one byte off there is a difference.
      const last = chains.rev.at(-1)!;
      const odd = DISKS[1];
      const wrong = await readFile(last.raw[odd.name]!);
      wrong.writeUInt8(wrong.readUInt8(odd.size - 1) ^ 1, odd.size - 1);
      const wrongRaw = join(tmp.path, 'wrong.raw');
      await writeFile(wrongRaw, wrong);
      const r = await run(tools['qemu-img'], [
        'compare',
        '-f',
        'raw',
        '-F',
        'raw',
        `nfs://127.0.0.1/ivmr/rev-p${CHAIN_LENGTH - 1}/${odd.name}-flat.vmdk`,
        wrongRaw,
      ]);
      expect(r.code, r.stderr).toBe(1);
      expect(r.stdout.toString()).toMatch(/Content mismatch/);
    } finally {
      await server.stop();
      for (const s of sessions) await s.close();
    }
    expect(compared).toBe(2 * CHAIN_LENGTH * DISKS.length);
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
      const expected = await readFile(web01Points.at(-1)!.raw);
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
