import { existsSync } from 'node:fs';
import { mkdir, open, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  type BlockSource,
  ErrorCode,
  FileBlockSource,
  MemoryBlockSource,
  MemoryStore,
  Repository,
} from '../src/index.js';
import { expectBytes, Prng, randomBytesFrom } from './support/bytes.js';
import { openFilesUnder, useTempDirs } from './support/temp-dir.js';

const tempDir = useTempDirs('source');
// Reading 5 GiB of holes costs seconds of kernel time on a disk file system, a fraction on tmpfs.
const sparseDir = useTempDirs('sparse', existsSync('/dev/shm') ? '/dev/shm' : tmpdir());
const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

const SIZE = 300_001;
const BYTES = randomBytesFrom(77, SIZE);

async function fileSource(bytes: Uint8Array): Promise<FileBlockSource> {
  const path = join(await tempDir(), 'disk.img');
  await writeFile(path, bytes);
  return FileBlockSource.open(path);
}

const kinds: [string, () => Promise<BlockSource>][] = [
  ['MemoryBlockSource', async () => new MemoryBlockSource(BYTES)],
  ['FileBlockSource', () => fileSource(BYTES)],
];

describe.each(kinds)('%s', (_, make) => {
  it('reads any offset and length, with or without a target buffer', async () => {
    const source = await make();
    expect(source.size).toBe(SIZE);
    await fc.assert(
      fc.asyncProperty(fc.nat(SIZE), fc.nat(SIZE), fc.nat(64), async (a, b, spare) => {
        const offset = Math.min(a, b);
        const length = Math.max(a, b) - offset;
        expectBytes(await source.read(offset, length), BYTES.subarray(offset, offset + length));
        const into = new Uint8Array(length + spare).fill(0xee);
        const got = await source.read(offset, length, into);
        expect(got.buffer).toBe(into.buffer);
        expectBytes(got.subarray(0, length), BYTES.subarray(offset, offset + length));
        expect(into.subarray(length).every((x) => x === 0xee)).toBe(true);
      }),
      { numRuns: 200 },
    );
    await source.close?.();
  });

  it('a read past the end is IVMR_RANGE and reads nothing', async () => {
    const source = await make();
    for (const [offset, length] of [
      [SIZE, 1],
      [SIZE - 10, 11],
      [0, SIZE + 1],
      [2 ** 40, 1],
    ] as const) {
      await expect(source.read(offset, length)).rejects.toMatchObject({
        code: ErrorCode.RANGE,
        details: { offset, length, size: SIZE },
      });
    }
    expect((await source.read(SIZE, 0)).length).toBe(0);
    await source.close?.();
  });

  it('bad arguments are IVMR_INVALID_ARGUMENT', async () => {
    const source = await make();
    for (const [offset, length] of [
      [-1, 1],
      [0.5, 1],
      [Number.NaN, 1],
      [Number.POSITIVE_INFINITY, 1],
      [2 ** 53, 1],
      [0, -1],
      [0, 1.5],
      [0, Number.NaN],
    ]) {
      await expect(source.read(offset!, length!)).rejects.toMatchObject({
        code: ErrorCode.INVALID_ARGUMENT,
      });
    }
    await expect(source.read(0, 10, new Uint8Array(9))).rejects.toMatchObject({
      code: ErrorCode.INVALID_ARGUMENT,
    });
    await source.close?.();
  });
});

describe('FileBlockSource', () => {
  it('a missing file is IVMR_NOT_FOUND naming the path; a directory is IVMR_INVALID_ARGUMENT', async () => {
    const dir = await tempDir();
    const missing = join(dir, 'nope.img');
    await expect(FileBlockSource.open(missing)).rejects.toMatchObject({
      code: ErrorCode.NOT_FOUND,
      details: { path: missing },
    });
    await mkdir(join(dir, 'sub'));
    await expect(FileBlockSource.open(join(dir, 'sub'))).rejects.toMatchObject({
      code: ErrorCode.INVALID_ARGUMENT,
    });
  });

  it('close releases the file; reads after close are IVMR_CLOSED', async () => {
    const source = await fileSource(BYTES);
    const isOpen = () => openFilesUnder(dirname(source.path)).includes(source.path);
    expect(isOpen()).toBe(true);
    await source.close();
    expect(isOpen()).toBe(false);
    await expect(source.read(0, 1)).rejects.toMatchObject({ code: ErrorCode.CLOSED });
  });
});

describe('a sparse 5 GiB image (offsets above 2^32)', () => {
  it('backs up and reads back exactly at every offset, across the 4 GiB boundary', async () => {
    const size = 5 * GiB + 12_345;
    const rng = new Prng(2024);
    const regions = [
      { offset: 123, bytes: rng.fill(new Uint8Array(70_000)) },
      // Straddles 2^32: one half in the block below, one in the block above.
      { offset: 2 ** 32 - 50_000, bytes: rng.fill(new Uint8Array(100_000)) },
      { offset: 4 * GiB + 1 * MiB + 7, bytes: rng.fill(new Uint8Array(300_000)) },
      { offset: 4.5 * GiB - 3, bytes: new Uint8Array(9 * MiB).fill(0x42) },
      { offset: size - 3000, bytes: rng.fill(new Uint8Array(3000)) },
    ];
    const path = join(await sparseDir(), 'sparse.img');
    const fh = await open(path, 'w');
    await fh.truncate(size);
    for (const r of regions) await fh.write(r.bytes, 0, r.bytes.length, r.offset);
    await fh.close();

    /** The expected bytes of `[offset, offset + length)` of the image. */
    const expected = (offset: number, length: number) => {
      const out = new Uint8Array(length);
      for (const r of regions) {
        const from = Math.max(offset, r.offset);
        const to = Math.min(offset + length, r.offset + r.bytes.length);
        if (from < to) out.set(r.bytes.subarray(from - r.offset, to - r.offset), from - offset);
      }
      return out;
    };
    const reads: [number, number][] = [
      ...regions.map((r): [number, number] => [
        r.offset - 17,
        Math.min(r.bytes.length + 40, size - r.offset + 17),
      ]),
      [2 ** 32 - 1, 2],
      [2 ** 32, 4 * MiB],
      [2 ** 32 + 3 * MiB, 2 * MiB + 1],
      [4.5 * GiB - 4 * MiB - 3, 6 * MiB],
      [size - 4 * MiB - 10, 4 * MiB + 10],
    ];

    const source = await FileBlockSource.open(path);
    expect(source.size).toBe(size);
    for (const [offset, length] of reads) {
      expectBytes(await source.read(offset, length), expected(offset, length), `file @${offset}`);
    }

    const repo = await Repository.init(new MemoryStore(), { blockSize: 4 * MiB });
    const info = await repo.backup({ vm: 'big', disks: [{ path, source }] });
    await source.close();
    const disk = info.disks[0]!;
    expect(disk).toMatchObject({ name: 'sparse', size, blockSize: 4 * MiB });
    expect(disk.stats.blocks).toBe(Math.ceil(size / (4 * MiB)));

    const point = await repo.openPoint('big', info.id);
    const restored = point.disk('sparse');
    for (const [offset, length] of reads) {
      expectBytes(
        await restored.read(offset, length),
        expected(offset, length),
        `restored @${offset}`,
      );
    }
    // Only blocks that hold data are allocated, and they are where the data is.
    const allocated = restored.allocatedRanges();
    for (const r of regions) {
      expect(
        allocated.some(
          (a) => a.offset <= r.offset && r.offset + r.bytes.length <= a.offset + a.length,
        ),
        `region @${r.offset} allocated`,
      ).toBe(true);
    }
    expect(restored.allocatedBytes).toBeLessThan(40 * MiB);
    expect(restored.blobOf(Math.floor((4 * GiB + MiB) / (4 * MiB)))).not.toBeNull();
    expect(restored.isZeroBlock(Math.floor((3 * GiB) / (4 * MiB)))).toBe(true);
    await point.close();
    expect((await repo.verify()).ok).toBe(true);
  }, 60_000);
});
