import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SparseVmdk } from '../../src/index.js';
import { firstDifference } from '../helpers/bytes.js';
import { numRuns } from '../helpers/fc.js';
import { requireQemu } from '../helpers/qemu.js';
import {
  makeSparseFixtures,
  SPARSE_KINDS,
  type SparseFixtures,
} from '../helpers/sparse-fixtures.js';

const GRAIN = 64 * 1024;
let fx: SparseFixtures;

beforeAll(async () => {
  requireQemu();
  fx = await makeSparseFixtures(11);
});
afterAll(async () => {
  await fx?.remove();
});

/** Offset and length of a read inside a disk of `size` bytes, biased to grain boundaries. */
function readArb(size: number): fc.Arbitrary<{ offset: number; length: number }> {
  const offset = fc.oneof(
    fc.integer({ min: 0, max: size - 1 }),
    fc
      .tuple(fc.integer({ min: 0, max: Math.floor(size / GRAIN) }), fc.integer({ min: -3, max: 3 }))
      .map(([g, d]) => Math.min(size - 1, Math.max(0, g * GRAIN + d))),
  );
  const length = fc.oneof(
    fc.integer({ min: 0, max: 4096 }),
    fc.integer({ min: 0, max: 3 * 1024 * 1024 }),
  );
  return fc.tuple(offset, length).map(([o, l]) => ({ offset: o, length: Math.min(l, size - o) }));
}

describe('sparse readers give the bytes of the disk qemu-img converted, at random offsets', () => {
  for (const kind of SPARSE_KINDS) {
    it(kind, async () => {
      const vmdk = await SparseVmdk.open(fx.files[kind], { grainTables: 2, grains: 4 });
      try {
        expect(vmdk.size).toBe(fx.raw.length);
        expect(vmdk.createType).toBe(
          kind === 'monolithicSparse' ? 'monolithicSparse' : 'streamOptimized',
        );
        await fc.assert(
          fc.asyncProperty(
            fc.array(readArb(fx.raw.length), { minLength: 1, maxLength: 4 }),
            fc.boolean(),
            async (reads, withBuffer) => {
              // Concurrent reads share grain-table and grain loads; small caches force evictions.
              const results = await Promise.all(
                reads.map(({ offset, length }) =>
                  vmdk.read(offset, length, withBuffer ? new Uint8Array(length + 7) : undefined),
                ),
              );
              reads.forEach(({ offset, length }, i) => {
                const got = results[i]!;
                expect(got.length).toBe(length);
                const at = firstDifference(got, fx.raw.subarray(offset, offset + length));
                if (at >= 0)
                  throw new Error(
                    `${kind}: byte ${offset + at} differs (read ${offset}+${length})`,
                  );
              });
            },
          ),
          { numRuns: numRuns(40, 400) },
        );
      } finally {
        await vmdk.close();
      }
    });
  }
});
