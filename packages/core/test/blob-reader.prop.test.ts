import fc from 'fast-check';
import { describe, it } from 'vitest';
import { MemoryBlockSource, MemoryStore, openLocalRepository, Repository } from '../src/index.js';
import { numRuns } from './fc.js';
import { expectBytes, Prng } from './support/bytes.js';
import { useTempDirs } from './support/temp-dir.js';

const KiB = 1024;
const BS = 64 * KiB;
const FRAME = 16 * KiB;
const tempDir = useTempDirs('blob-reader');

/** Random, compressible, repetitive and zero blocks, and a short tail. */
function makeDisk(blocks: number): Uint8Array {
  const rng = new Prng(11);
  const bytes = new Uint8Array(blocks * BS + 5000);
  for (let b = 0; b * BS < bytes.length; b++) {
    const block = bytes.subarray(b * BS, (b + 1) * BS);
    if (b % 6 === 2) continue;
    if (b % 4 === 1) for (let i = 0; i < block.length; i++) block[i] = (i >> 7) & 0xff;
    else rng.fill(block);
  }
  return bytes;
}

/** Reads of a disk of `size` bytes: any range, ranges of whole frames, and small ones. */
function readArb(size: number): fc.Arbitrary<{ offset: number; length: number }> {
  return fc.oneof(
    fc
      .tuple(fc.integer({ min: 0, max: size - 1 }), fc.integer({ min: 1, max: 3 * BS }))
      .map(([offset, n]) => ({ offset, length: Math.min(n, size - offset) })),
    fc
      .tuple(
        fc.integer({ min: 0, max: Math.floor(size / FRAME) - 1 }),
        fc.integer({ min: 1, max: 12 }),
      )
      .map(([f, n]) => ({ offset: f * FRAME, length: Math.min(n * FRAME, size - f * FRAME) })),
    fc
      .tuple(fc.integer({ min: 0, max: size - 4 * KiB }), fc.integer({ min: 1, max: 4 * KiB }))
      .map(([offset, length]) => ({ offset, length })),
  );
}

describe('restore reads (blob reader)', () => {
  for (const kind of ['local', 'memory'] as const) {
    for (const frameCache of [0, 4 * FRAME, 16 * 1024 * KiB]) {
      it(`concurrent reads of whole and partial frames return the disk's bytes (${kind} store, frame cache ${frameCache / KiB} KiB, property)`, async () => {
        const disk = makeDisk(24);
        const settings = {
          blockSize: BS,
          frameSize: FRAME,
          packSize: 1024 * KiB,
          codec: 'lz4',
        } as const;
        const repo =
          kind === 'local'
            ? await openLocalRepository(await tempDir(), {
                create: true,
                ...settings,
                frameCache: { maxBytes: frameCache },
              })
            : await Repository.init(new MemoryStore(), {
                ...settings,
                frameCache: { maxBytes: frameCache },
              });
        try {
          await repo.backup({
            vm: 'vm',
            disks: [{ name: 'd', source: new MemoryBlockSource(disk) }],
          });
          const point = await repo.openPoint('vm');
          try {
            const d = point.disk('d');
            await fc.assert(
              fc.asyncProperty(
                fc.array(readArb(disk.length), { minLength: 1, maxLength: 24 }),
                async (reads) => {
                  // All at once: frames in flight are shared, scratch buffers reused meanwhile.
                  const got = await Promise.all(reads.map((r) => d.read(r.offset, r.length)));
                  reads.forEach((r, i) => {
                    expectBytes(
                      got[i]!,
                      disk.subarray(r.offset, r.offset + r.length),
                      `read ${r.offset}+${r.length}`,
                    );
                  });
                },
              ),
              { numRuns: numRuns(40, 150) },
            );
          } finally {
            await point.close();
          }
        } finally {
          await repo.close();
        }
      });
    }
  }
});
