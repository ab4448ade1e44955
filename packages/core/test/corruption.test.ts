import { cp, open, readdir, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { expectSettlesAfterItsParts, Hold } from '../../../scripts/testing/settling-read.js';
import { FRAME_HEADER_SIZE } from '../src/format/pack.js';
import {
  ErrorCode,
  type IvmrError,
  LocalStore,
  MemoryBlockSource,
  openLocalRepository,
  Repository,
  type RestorePointInfo,
} from '../src/index.js';
import { expectBytes, Prng } from './support/bytes.js';
import { FaultyStore } from './support/faulty-store.js';
import {
  findBlob,
  liveBlobIds,
  localPackPath,
  packEntries,
  storedBlobIds,
} from './support/repo-inspect.js';
import { useTempDirs } from './support/temp-dir.js';

const KiB = 1024;
const BS = 64 * KiB;
const SETTINGS = {
  blockSize: BS,
  frameSize: 16 * KiB,
  packSize: 1024 * KiB,
  codec: 'lz4',
} as const;

const tempDir = useTempDirs('corruption');

/** A disk of `blocks` blocks plus a short tail: random, compressible and zero blocks. */
function makeDisk(seed: number, blocks: number, tail = 1234): Uint8Array {
  const rng = new Prng(seed);
  const bytes = new Uint8Array(blocks * BS + tail);
  for (let b = 0; b * BS < bytes.length; b++) {
    const block = bytes.subarray(b * BS, (b + 1) * BS);
    if (b % 7 === 3) continue;
    if (b % 5 === 1) block.fill(b);
    else rng.fill(block);
  }
  return bytes;
}

/** A copy of `bytes` with `count` blocks starting at `first` overwritten with new random data. */
function rewrite(bytes: Uint8Array, seed: number, first: number, count: number): Uint8Array {
  const out = bytes.slice();
  new Prng(seed).fill(out.subarray(first * BS, Math.min(out.length, (first + count) * BS)));
  return out;
}

function backup(repo: Repository, bytes: Uint8Array, reverse = false) {
  return repo.backup({
    vm: 'vm1',
    disks: [{ name: 'd0', source: new MemoryBlockSource(bytes) }],
    reverse,
  });
}

async function readPoint(repo: Repository, id: string, offset = 0, length?: number) {
  const point = await repo.openPoint('vm1', id);
  try {
    const disk = point.disk('d0');
    return await disk.read(offset, length ?? disk.size - offset);
  } finally {
    await point.close();
  }
}

async function expectReadsBack(dir: string, points: [RestorePointInfo, Uint8Array][]) {
  const repo = await openLocalRepository(dir);
  try {
    expect((await repo.listPoints('vm1')).map((p) => p.id)).toEqual(points.map(([p]) => p.id));
    for (const [p, want] of points) expectBytes(await readPoint(repo, p.id), want, `point ${p.id}`);
  } finally {
    await repo.close();
  }
}

async function rejection(promise: Promise<unknown>): Promise<IvmrError> {
  try {
    await promise;
  } catch (err) {
    return err as IvmrError;
  }
  throw new Error('expected a rejection');
}

/** A repository with two points of one disk: P1 full, P2 an increment that rewrote 4 blocks. */
async function twoPoints() {
  const dir = await tempDir();
  const repo = await openLocalRepository(dir, { create: true, ...SETTINGS });
  const a = makeDisk(1, 40);
  const b = rewrite(a, 2, 10, 4);
  const p1 = await backup(repo, a);
  const p2 = await backup(repo, b);
  await repo.close();
  return { dir, a, b, p1, p2 };
}

async function flipByte(path: string, offset: number): Promise<void> {
  const fh = await open(path, 'r+');
  try {
    const one = Buffer.alloc(1);
    await fh.read(one, 0, 1, offset);
    one[0]! ^= 0x5a;
    await fh.write(one, 0, 1, offset);
  } finally {
    await fh.close();
  }
}

describe('a damaged blob', () => {
  // Block 2 of both points holds the same blob (block 2 is not in the rewritten range).
  const BLOCK = 2;

  it.each([
    ['codec byte', 0],
    ['checksum', 4],
    ['payload', FRAME_HEADER_SIZE + 100],
  ])('a flipped %s fails reads of that block only, and verify names it', async (_, at) => {
    const { dir, a, b, p1, p2 } = await twoPoints();
    const repo = await openLocalRepository(dir);
    const opened = await repo.openPoint('vm1', p1.id);
    const blob = opened.disk('d0').blobOf(BLOCK)!;
    await opened.close();
    const { pack, entry } = await findBlob(repo.store, blob);
    // Damage the blob's second frame: a read of its first 16 KiB never decodes it.
    await flipByte(localPackPath(dir, pack), entry.offset + entry.frameLengths[0]! + at);

    const fresh = await openLocalRepository(dir);
    for (const [p, want] of [
      [p1, a],
      [p2, b],
    ] as const) {
      const err = await rejection(readPoint(fresh, p.id, BLOCK * BS + 20_000, 100));
      expect(err.code).toBe(ErrorCode.CHUNK_CORRUPT);
      expect(err.details).toMatchObject({
        blob,
        pack,
        vm: 'vm1',
        point: p.id,
        disk: 'd0',
        offset: BLOCK * BS,
        length: BS,
      });
      // A read spanning the damaged block fails too, never returning wrong bytes.
      await expect(readPoint(fresh, p.id, BS + 5, 3 * BS)).rejects.toMatchObject({
        code: ErrorCode.CHUNK_CORRUPT,
      });
      // Everything else reads back, including the undamaged first frame of the blob.
      expectBytes(
        await readPoint(fresh, p.id, 0, BLOCK * BS + 16 * KiB),
        want.subarray(0, BLOCK * BS + 16 * KiB),
      );
      expectBytes(await readPoint(fresh, p.id, (BLOCK + 1) * BS), want.subarray((BLOCK + 1) * BS));
    }

    const report = await fresh.verify();
    expect(report.ok).toBe(false);
    expect(report.damagedBlobs).toEqual([
      expect.objectContaining({ id: blob, pack, code: ErrorCode.CHUNK_CORRUPT }),
    ]);
    expect(report.missingBlobs).toEqual([]);
    expect(report.damagedObjects).toEqual([]);
    expect(sortAffected(report.affected)).toEqual(
      sortAffected(
        [p1, p2].map((p) => ({
          vm: 'vm1',
          point: p.id,
          disk: 'd0',
          ranges: [{ offset: BLOCK * BS, length: BS }],
          blobs: [blob],
        })),
      ),
    );
    // Verifying one point reports only that point's ranges.
    expect((await fresh.verify({ vm: 'vm1', point: p2.id })).affected).toEqual([
      expect.objectContaining({ point: p2.id, ranges: [{ offset: BLOCK * BS, length: BS }] }),
    ]);
    await fresh.close();
    await repo.close();
  });

  it('a read that fails rejects only once every part of it has stopped writing into its buffer', async () => {
    const { dir, p1 } = await twoPoints();
    const repo = await openLocalRepository(dir);
    const point = await repo.openPoint('vm1', p1.id);
    const damaged = await findBlob(repo.store, point.disk('d0').blobOf(BLOCK)!);
    // Block BLOCK + 1 is a zero block; BLOCK + 2 holds random bytes.
    const slow = await findBlob(repo.store, point.disk('d0').blobOf(BLOCK + 2)!);
    await point.close();
    await repo.close();
    const e = damaged.entry;
    await flipByte(
      localPackPath(dir, damaged.pack),
      e.offset + e.frameLengths[0]! + FRAME_HEADER_SIZE + 100,
    );

    // The damaged block fails at once; the fetch of the slow block is held back meanwhile.
    const store = new FaultyStore(await LocalStore.open(dir));
    const hold = new Hold();
    store.hold = (kind, name, range) =>
      kind === 'pack' && name === slow.pack && range?.offset === slow.entry.offset
        ? hold.wait()
        : undefined;
    const fresh = await Repository.open(store);
    const opened = await fresh.openPoint('vm1', p1.id);
    const into = new Uint8Array(3 * BS);
    await expectSettlesAfterItsParts(opened.disk('d0').read(BLOCK * BS, 3 * BS, into), into, hold, {
      code: ErrorCode.CHUNK_CORRUPT,
    });
    await opened.close();
    await fresh.close();
  });

  it('a truncated pack fails the blobs past the cut with IVMR_CHUNK_CORRUPT, and verify reports the pack', async () => {
    const { dir, a, p1 } = await twoPoints();
    const store = await LocalStore.open(dir);
    const packs = (await packEntries(store)).sort((x, y) => y.entries.length - x.entries.length);
    const { pack, entries } = packs[0]!;
    const sorted = [...entries].sort((x, y) => x.offset - y.offset);
    const cut = sorted[Math.floor(sorted.length / 2)]!;
    const lost = new Set(
      sorted.filter((e) => e.offset >= cut.offset).map((e) => Buffer.from(e.id).toString('hex')),
    );
    await store.close();
    await truncate(localPackPath(dir, pack), cut.offset + 30);

    const repo = await openLocalRepository(dir);
    const point = await repo.openPoint('vm1', p1.id);
    const disk = point.disk('d0');
    let failed = 0;
    for (let blk = 0; blk < disk.blockCount; blk++) {
      const start = blk * BS;
      const length = Math.min(BS, disk.size - start);
      const id = disk.blobOf(blk);
      if (id !== null && lost.has(id)) {
        failed++;
        await expect(disk.read(start, length)).rejects.toMatchObject({
          code: ErrorCode.CHUNK_CORRUPT,
          details: { blob: id, disk: 'd0', point: p1.id, offset: start, length },
        });
      } else {
        expectBytes(
          await disk.read(start, length),
          a.subarray(start, start + length),
          `block ${blk}`,
        );
      }
    }
    expect(failed).toBeGreaterThan(0);
    await point.close();

    const report = await repo.verify();
    expect(report.ok).toBe(false);
    expect(report.damagedObjects).toEqual([
      expect.objectContaining({ kind: 'pack', name: pack, code: ErrorCode.FORMAT }),
    ]);
    expect(new Set(report.damagedBlobs.map((d) => d.id))).toEqual(lost);
    for (const d of report.damagedBlobs)
      expect(d).toMatchObject({ pack, code: ErrorCode.CHUNK_CORRUPT });
    await repo.close();
  });
});

function sortAffected<T extends { point: string }>(list: readonly T[]): T[] {
  return [...list].sort((x, y) => (x.point < y.point ? -1 : 1));
}

describe('a lost or damaged index', () => {
  it('deleted index objects: reads are IVMR_NOT_FOUND naming the blob, verify lists the missing blobs, repair restores everything', async () => {
    const { dir, a, b, p1, p2 } = await twoPoints();
    const indexDir = join(dir, 'index');
    const before = await readdir(indexDir);
    expect(before.length).toBeGreaterThan(0);
    for (const name of before) await rm(join(indexDir, name));

    const repo = await openLocalRepository(dir);
    const point = await repo.openPoint('vm1', p2.id);
    const disk = point.disk('d0');
    const blob = disk.blobOf(0)!;
    expect(blob).not.toBeNull();
    await expect(disk.read(10, 10)).rejects.toMatchObject({
      code: ErrorCode.NOT_FOUND,
      details: { blob, disk: 'd0', vm: 'vm1', point: p2.id, offset: 0, length: BS },
    });
    // Zero blocks need no blob and still read.
    expect(disk.isZeroBlock(3)).toBe(true);
    expectBytes(await disk.read(3 * BS, BS), new Uint8Array(BS));
    await point.close();

    const live = await liveBlobIds(repo);
    const report = await repo.verify();
    expect(report.ok).toBe(false);
    expect(new Set(report.missingBlobs)).toEqual(live);
    expect(report.affected.map((x) => x.point).sort()).toEqual([p1.id, p2.id].sort());

    const repair = await repo.repair();
    expect(repair).toMatchObject({ unreadablePacks: [], indexesReplaced: 0 });
    expect(repair.blobs).toBe((await storedBlobIds(repo.store)).length);
    expect(repair.packs).toBe((await packEntries(repo.store)).length);
    expect(await repo.verify()).toMatchObject({ ok: true, missingBlobs: [], damagedBlobs: [] });
    expectBytes(await readPoint(repo, p2.id), b);
    await repo.close();
    await expectReadsBack(dir, [
      [p1, a],
      [p2, b],
    ]);
  });

  it('a damaged index object is reported, blocks prune, and repair replaces it', async () => {
    const { dir, a, b, p1, p2 } = await twoPoints();
    const indexDir = join(dir, 'index');
    const names = await readdir(indexDir);
    const victim = names[0]!;
    await flipByte(join(indexDir, victim), 20);

    const repo = await openLocalRepository(dir);
    const report = await repo.verify();
    expect(report.ok).toBe(false);
    expect(report.damagedObjects).toContainEqual(
      expect.objectContaining({ kind: 'index', name: victim, code: ErrorCode.FORMAT }),
    );
    // Pruning with part of the index unreadable could delete live blobs: it must refuse.
    await expect(repo.forget({ vm: 'vm1', keepLast: 1 })).rejects.toMatchObject({
      code: ErrorCode.FORMAT,
    });
    const repair = await repo.repair();
    expect(repair.indexesReplaced).toBe(names.length);
    expect((await repo.verify()).ok).toBe(true);
    await repo.close();
    await expectReadsBack(dir, [
      [p1, a],
      [p2, b],
    ]);
  });
});

describe('damaged metadata objects', () => {
  it('a damaged block map makes its point IVMR_FORMAT, and verify lists the map', async () => {
    const { dir, a, p1, p2 } = await twoPoints();
    const map = p2.disks[0]!.map;
    expect(map).not.toBe(p1.disks[0]!.map);
    await flipByte(join(dir, 'maps', map), 40);

    const repo = await openLocalRepository(dir);
    await expect(repo.openPoint('vm1', p2.id)).rejects.toMatchObject({ code: ErrorCode.FORMAT });
    expectBytes(await readPoint(repo, p1.id), a);
    const report = await repo.verify();
    expect(report.ok).toBe(false);
    expect(report.damagedObjects).toContainEqual(
      expect.objectContaining({ kind: 'map', name: map, code: ErrorCode.FORMAT }),
    );
    await repo.close();
  });

  it('a damaged base map makes every point of its chain IVMR_FORMAT', async () => {
    const { dir, p1, p2 } = await twoPoints();
    await writeFile(join(dir, 'maps', p1.disks[0]!.map), 'not a map');
    const repo = await openLocalRepository(dir);
    for (const p of [p1, p2]) {
      await expect(repo.openPoint('vm1', p.id)).rejects.toMatchObject({ code: ErrorCode.FORMAT });
    }
    const report = await repo.verify();
    expect(report.damagedObjects).toContainEqual(
      expect.objectContaining({ kind: 'map', name: p1.disks[0]!.map }),
    );
    await repo.close();
  });

  it.each([
    ['truncated JSON', (s: string) => s.slice(0, s.length / 2)],
    ['wrong field', (s: string) => s.replace('"sequence": 1', '"sequence": "one"')],
  ])('a damaged point object (%s) is IVMR_FORMAT and verify lists it', async (_, damage) => {
    const { dir, p1, p2 } = await twoPoints();
    const path = join(dir, 'points', p1.id);
    const text = await readFile(path, 'utf8');
    const bad = damage(text);
    expect(bad).not.toBe(text);
    await writeFile(path, bad);

    const repo = await openLocalRepository(dir);
    expect((await repo.listPoints('vm1')).map((p) => p.id)).toEqual([p2.id]);
    await expect(repo.openPoint('vm1', p1.id)).rejects.toMatchObject({ code: ErrorCode.FORMAT });
    // P2 is an increment of P1: its chain is broken.
    await expect(repo.openPoint('vm1', p2.id)).rejects.toMatchObject({ code: ErrorCode.FORMAT });
    const report = await repo.verify();
    expect(report.ok).toBe(false);
    expect(report.damagedObjects).toContainEqual(
      expect.objectContaining({ kind: 'point', name: p1.id, code: ErrorCode.FORMAT }),
    );
    await repo.close();
  });
});

describe('a backup that fails part-way', () => {
  /**
   * Template repository (P1, P2) copied for every attempt; `c` needs 3 new packs, and `d` repeats
   * most of `c`, so a retry would deduplicate against whatever the failed attempt left indexed.
   */
  async function template() {
    const { dir, a, b, p1, p2 } = await twoPoints();
    const c = rewrite(b, 3, 2, 36);
    // Two blocks with the same content inside one backup.
    c.copyWithin(18 * BS, 2 * BS, 3 * BS);
    const d = rewrite(c, 4, 39, 1);
    return {
      dir,
      points: [
        [p1, a] as [RestorePointInfo, Uint8Array],
        [p2, b] as [RestorePointInfo, Uint8Array],
      ],
      c,
      d,
    };
  }

  /** The kinds of the puts a successful backup of `c` makes, in order. */
  async function putLog(dir: string, c: Uint8Array, reverse: boolean): Promise<string[]> {
    const copy = await tempDir();
    await cp(dir, copy, { recursive: true });
    const faulty = new FaultyStore(await LocalStore.open(copy));
    const repo = await Repository.open(faulty);
    await backup(repo, c, reverse);
    await repo.close();
    return faulty.log;
  }

  for (const reverse of [false, true]) {
    it(`${reverse ? 'reverse' : 'forward'}: a failed backup leaves no point, earlier points read back, retries in the same and in a new repository succeed`, async () => {
      const { dir, points, c, d } = await template();
      const log = await putLog(dir, c, reverse);
      // The point object commits the backup; a put after it (a reverse rebase) cannot undo it.
      const commit = log.indexOf('point') + 1;
      expect(log.filter((k) => k === 'pack').length).toBeGreaterThanOrEqual(3);
      for (let budget = 0; budget < log.length; budget++) {
        const copy = await tempDir();
        await cp(dir, copy, { recursive: true });
        const faulty = new FaultyStore(await LocalStore.open(copy));
        const repo = await Repository.open(faulty);
        faulty.putBudget = budget;
        const label = `failing at put ${budget} of [${log.join(',')}]`;
        const result = await backup(repo, c, reverse).then(
          (p) => ({ ok: true as const, p }),
          (err: IvmrError) => ({ ok: false as const, err }),
        );
        expect(result.ok, label).toBe(budget >= commit);
        if (!result.ok) expect(result.err.code, label).toBe(ErrorCode.IO);
        const before: [RestorePointInfo, Uint8Array][] = result.ok
          ? [...points, [result.p, c]]
          : points;
        await expectReadsBack(copy, before);

        // The same repository object retries: nothing of the failed attempt may be trusted
        // unless it reached the store.
        faulty.putBudget = Number.POSITIVE_INFINITY;
        const pc = await backup(repo, c, reverse);
        await repo.close();
        await expectReadsBack(copy, [...before, [pc, c]]);

        // A new repository on the same store, with the failed attempt's leftovers in it.
        const again = await openLocalRepository(copy);
        const pd = await backup(again, d, reverse);
        await again.close();
        await expectReadsBack(copy, [...before, [pc, c], [pd, d]]);

        const check = await openLocalRepository(copy);
        expect((await check.verify()).ok, label).toBe(true);
        await check.forget({ vm: 'vm1', keepLast: 2 });
        const stored = await storedBlobIds(check.store);
        expect(new Set(stored), label).toEqual(await liveBlobIds(check));
        expect(stored.length, label).toBe(new Set(stored).size);
        expect((await check.verify()).ok, label).toBe(true);
        await check.close();
        await expectReadsBack(copy, [
          [pc, c],
          [pd, d],
        ]);
        await rm(copy, { recursive: true, force: true });
      }
    });
  }

  it('an aborted backup leaves no point, and a retry in the same repository reads back', async () => {
    const { dir, points, c } = await template();
    const repo = await openLocalRepository(dir);
    for (const abortAfter of [0, 1, 9, 20, 39]) {
      const controller = new AbortController();
      if (abortAfter === 0) controller.abort();
      let blocks = 0;
      await expect(
        repo.backup({
          vm: 'vm1',
          disks: [{ name: 'd0', source: new MemoryBlockSource(c) }],
          signal: controller.signal,
          onProgress: () => {
            if (++blocks === abortAfter) controller.abort();
          },
        }),
      ).rejects.toMatchObject({ code: ErrorCode.ABORTED });
      expect((await repo.listPoints('vm1')).map((p) => p.id)).toEqual(points.map(([p]) => p.id));
    }
    const pc = await backup(repo, c);
    await repo.close();
    await expectReadsBack(dir, [...points, [pc, c]]);
  });
});
