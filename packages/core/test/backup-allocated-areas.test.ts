import { describe, expect, it } from 'vitest';
import {
  type BlockSource,
  MemoryBlockSource,
  MemoryStore,
  Repository,
  type RestorePointInfo,
} from '../src/index.js';
import { expectBytes, Prng } from './support/bytes.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const BS = 64 * KiB;

interface Range {
  readonly offset: number;
  readonly length: number;
}

/** Fails every read that is not inside one block overlapping a range; records the others. */
class AreasOnlySource implements BlockSource {
  readonly size: number;
  readonly reads: Range[] = [];
  readonly #inner: BlockSource;
  readonly #ranges: readonly Range[];
  readonly #blockSize: number;

  constructor(inner: BlockSource, ranges: readonly Range[], blockSize: number) {
    this.#inner = inner;
    this.size = inner.size;
    this.#ranges = ranges;
    this.#blockSize = blockSize;
  }

  read(offset: number, length: number, into?: Uint8Array): Promise<Uint8Array> {
    const block = Math.floor(offset / this.#blockSize);
    const lo = block * this.#blockSize;
    const hi = lo + this.#blockSize;
    const inside = this.#ranges.some(
      (r) => r.length > 0 && r.offset < hi && r.offset + r.length > lo,
    );
    if (!inside || offset + length > hi) {
      return Promise.reject(new Error(`read ${offset}+${length} outside the allocated areas`));
    }
    this.reads.push({ offset, length });
    return this.#inner.read(offset, length, into);
  }
}

/** A `size`-byte disk of zeros with seeded random data in `ranges`. */
function imageWith(size: number, ranges: readonly Range[], seed: number): Uint8Array {
  const bytes = new Uint8Array(size);
  const rng = new Prng(seed);
  for (const r of ranges) rng.fill(bytes.subarray(r.offset, r.offset + r.length));
  return bytes;
}

describe('full backup with allocated areas (changedRanges without a parent)', () => {
  it('reads only the blocks the areas overlap and reads back zeros elsewhere', async () => {
    const size = 40 * BS + 1234;
    const areas: Range[] = [
      { offset: 0, length: 3 * BS }, // aligned, several blocks
      { offset: 10 * BS + 100, length: 200 }, // inside one block
      { offset: 20 * BS - 10, length: 20 }, // across a block boundary
      { offset: 30 * BS, length: 0 }, // empty: reads nothing
      { offset: 1 * BS, length: 5 }, // overlaps the first one
      { offset: 40 * BS + 1000, length: 234 }, // in the short last block
    ];
    const bytes = imageWith(size, areas, 7);
    const source = new AreasOnlySource(new MemoryBlockSource(bytes), areas, BS);
    const repo = await Repository.init(new MemoryStore(), { blockSize: BS, packSize: MiB });
    const point = await repo.backup({
      vm: 'vm',
      disks: [{ name: 'd', source, changedRanges: areas }],
    });

    const blocks = [0, 1, 2, 10, 19, 20, 40];
    expect(source.reads.map((r) => r.offset)).toEqual(blocks.map((b) => b * BS));
    const stats = point.disks[0]!.stats;
    expect(stats.blocks).toBe(41);
    expect(stats.readBytes).toBe(6 * BS + 1234);
    expect(stats.zeroBlocks).toBe(41 - blocks.length);
    expect(stats.newBlocks).toBe(blocks.length);

    const open = await repo.openPoint('vm', point.id);
    try {
      expectBytes(await open.disk('d').read(0, size), bytes, 'whole disk');
    } finally {
      await open.close();
    }
    expect((await repo.verify()).ok).toBe(true);
  });

  it('records data outside the areas as zeros: the areas are trusted', async () => {
    const size = 8 * BS;
    const bytes = new Prng(3).fill(new Uint8Array(size));
    const areas = [{ offset: 2 * BS, length: BS }];
    const repo = await Repository.init(new MemoryStore(), { blockSize: BS, packSize: MiB });
    const point = await repo.backup({
      vm: 'vm',
      disks: [{ name: 'd', source: new MemoryBlockSource(bytes), changedRanges: areas }],
    });
    const want = new Uint8Array(size);
    want.set(bytes.subarray(2 * BS, 3 * BS), 2 * BS);
    const open = await repo.openPoint('vm', point.id);
    try {
      expectBytes(await open.disk('d').read(0, size), want, 'whole disk');
    } finally {
      await open.close();
    }
    expect(point.disks[0]!.allocatedBytes).toBe(BS);
  });

  it('treats a disk the parent lacks as a first backup, and keeps CBT for the one it has', async () => {
    const repo = await Repository.init(new MemoryStore(), { blockSize: BS, packSize: MiB });
    const d0 = new Prng(1).fill(new Uint8Array(4 * BS));
    await repo.backup({ vm: 'vm', disks: [{ name: 'd0', source: new MemoryBlockSource(d0) }] });
    const changed = [{ offset: BS, length: 1 }];
    const d1Areas = [{ offset: 3 * BS, length: BS }];
    const d1 = imageWith(6 * BS, d1Areas, 2);
    const s0 = new AreasOnlySource(new MemoryBlockSource(d0), changed, BS);
    const s1 = new AreasOnlySource(new MemoryBlockSource(d1), d1Areas, BS);
    const point: RestorePointInfo = await repo.backup({
      vm: 'vm',
      disks: [
        { name: 'd0', source: s0, changedRanges: changed },
        { name: 'd1', source: s1, changedRanges: d1Areas },
      ],
    });
    expect(s0.reads.map((r) => r.offset)).toEqual([BS]);
    expect(s1.reads.map((r) => r.offset)).toEqual([3 * BS]);
    const [st0, st1] = point.disks.map((d) => d.stats);
    expect(st0).toMatchObject({ unchangedBlocks: 4, zeroBlocks: 0 });
    expect(st1).toMatchObject({ zeroBlocks: 5, newBlocks: 1 });
    const open = await repo.openPoint('vm', point.id);
    try {
      expectBytes(await open.disk('d0').read(0, d0.length), d0, 'd0');
      expectBytes(await open.disk('d1').read(0, d1.length), d1, 'd1');
    } finally {
      await open.close();
    }
  });

  it('backs up a 2 TiB sparse disk in 1 MiB blocks reading only its areas', async () => {
    const size = 2 * 1024 * 1024 * MiB;
    const areas: Range[] = [
      { offset: 0, length: 2 * MiB },
      { offset: size / 2 - 50 * KiB, length: 100 * KiB }, // across a block boundary
      { offset: size - MiB, length: MiB },
    ];
    // Only the areas' bytes exist; any other read fails.
    const data = areas.map((r, i) => new Prng(i + 1).fill(new Uint8Array(r.length)));
    const sparse: BlockSource = {
      size,
      read: async (offset, length, into) => {
        const out = into ? into.subarray(0, length) : new Uint8Array(length);
        out.fill(0);
        areas.forEach((r, i) => {
          const lo = Math.max(offset, r.offset);
          const hi = Math.min(offset + length, r.offset + r.length);
          if (lo < hi) out.set(data[i]!.subarray(lo - r.offset, hi - r.offset), lo - offset);
        });
        return out;
      },
    };
    const source = new AreasOnlySource(sparse, areas, MiB);
    const repo = await Repository.init(new MemoryStore(), { blockSize: MiB, packSize: 4 * MiB });
    let reports = 0;
    const point = await repo.backup({
      vm: 'vm',
      disks: [{ name: 'd', source, changedRanges: areas }],
      onProgress: () => {
        reports++;
      },
    });
    expect(source.reads).toHaveLength(5);
    expect(point.disks[0]!.stats).toMatchObject({
      blocks: 2 * 1024 * 1024,
      zeroBlocks: 2 * 1024 * 1024 - 5,
      newBlocks: 5,
      readBytes: 5 * MiB,
    });
    // Runs of skipped blocks are reported once each, not block by block.
    expect(reports).toBeLessThan(20);
    const open = await repo.openPoint('vm', point.id);
    try {
      const disk = open.disk('d');
      for (const [i, r] of areas.entries()) {
        expectBytes(await disk.read(r.offset, r.length), data[i]!, `area ${i}`);
      }
      expectBytes(await disk.read(MiB * 1000, 4096), new Uint8Array(4096), 'a hole');
    } finally {
      await open.close();
    }
  });
});
