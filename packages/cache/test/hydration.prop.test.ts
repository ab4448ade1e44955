import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { startHydration, WriteOverlay } from '../src/index.js';
import { expectBytes } from './support/bytes.js';
import { CrashFs } from './support/crash-fs.js';
import { numRuns } from './support/fc.js';
import { Prng, randomBytesFrom } from './support/prng.js';
import { ReadOnlyBase } from './support/read-only-base.js';

// A crash of everything (overlay, target, progress file) at a random moment of a hydration with
// writes going on: after the reboot, the hydration resumes from what it saved, and the target
// it ends with equals the merged disk byte for byte.

const KiB = 1024;
const SIZE = 512 * KiB;
const TARGET = '/prod/disk.raw';

async function readAll(fs: CrashFs, path: string): Promise<Uint8Array> {
  const f = await fs.open(path, 'read');
  const out = new Uint8Array(await f.size());
  await f.read(out, 0);
  await f.close();
  return out;
}

/** Random changes with flushes, yielding to the hydration between them. */
async function writeSome(overlay: WriteOverlay, rng: Prng, steps: number): Promise<void> {
  for (let i = 0; i < steps; i++) {
    const length = rng.int(1, 40 * KiB);
    const offset = rng.int(0, SIZE - length);
    if (rng.int(0, 7) === 0) await overlay.writeZeroes(offset, length);
    else await overlay.write(offset, randomBytesFrom(rng.u32(), length));
    if (rng.int(0, 2) === 0) await overlay.flush();
    for (let k = rng.int(0, 6); k > 0; k--) await new Promise((r) => setImmediate(r));
  }
}

describe('hydration across a crash', () => {
  it('resumes from its saved progress and ends byte-identical to the merged disk', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer(),
        fc.integer({ min: 0, max: 60 }),
        fc.constantFrom(16 * KiB, 64 * KiB),
        async (seed, before, chunkSize) => {
          const rng = new Prng(seed);
          const base = new ReadOnlyBase(randomBytesFrom(seed ^ 0x55, SIZE));
          let fs = new CrashFs();
          const options = { chunkSize, saveEveryBytes: 128 * KiB, fs };
          const overlay = await WriteOverlay.open(base, { dir: '/ov', fs, grainSize: 4096 });
          await startHydration(overlay, TARGET, options);
          await writeSome(overlay, rng, before);
          fs = fs.crash(seed);

          const again = await WriteOverlay.open(base, { dir: '/ov', fs });
          const h = await startHydration(again, TARGET, { ...options, fs });
          await writeSome(again, rng, 10);
          await h.done;
          let merged: Uint8Array = new Uint8Array(0);
          await h.switchOver(async () => {
            merged = await again.read(0, again.size);
          });
          expectBytes(await readAll(fs, TARGET), merged, 'target');
          await again.close();
          expect(fs.openHandles, 'files left open').toBe(0);
          base.expectUntouched();
        },
      ),
      { numRuns: numRuns(25, 200) },
    );
  });
});
