import { type ChildProcess, spawn } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { MemoryBlockSource } from '@ivmr/core';
import { describe, expect, it } from 'vitest';
import { bundleForNode } from '../../../scripts/testing/bundle.js';
import { WriteOverlay } from '../src/index.js';
import { crashPlan } from './support/crash-plan.js';
import { Prng, randomBytesFrom } from './support/prng.js';
import { useTempDirs } from './support/temp-dir.js';

const tempDir = useTempDirs('crash');
const SIZE = 8 << 20;
const BASE_SEED = 11;

/** Lines of a child's stdout, as they come. */
function lines(child: ChildProcess): AsyncIterableIterator<string> {
  return createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
}

/** The disk after the first `batches` batches of plan `seed`, applied to `from`. */
function applyPlan(from: Uint8Array, seed: number, batches: number): Uint8Array {
  const disk = from.slice();
  let i = 0;
  for (const batch of crashPlan(seed, SIZE)) {
    if (i++ === batches) break;
    for (const w of batch) disk.set(randomBytesFrom(w.seed, w.length), w.offset);
  }
  return disk;
}

describe('kill -9 of a process writing to an overlay', () => {
  it('gives back every flushed write after reopening, and no torn or half-committed batch', async () => {
    const dir = await tempDir();
    const script = join(dir, 'crash-writer.mjs');
    await bundleForNode('packages/cache/test/fixtures/crash-writer.ts', script, 'cache');
    const overlayDir = join(dir, 'overlay');
    const baseBytes = randomBytesFrom(BASE_SEED, SIZE);
    const rng = new Prng(20_251_122);
    let model: Uint8Array = baseBytes.slice();
    let epoch = 1;
    let killedAfterFlushes = 0;
    for (let iter = 0; iter < 5; iter++) {
      const planSeed = 1000 + iter;
      const child = spawn(
        process.execPath,
        [script, overlayDir, String(BASE_SEED), String(SIZE), String(planSeed)],
        { stdio: ['ignore', 'pipe', 'inherit'] },
      );
      const exited = new Promise((resolve) => child.once('exit', resolve));
      const out = lines(child);
      const ready = (await out.next()).value as string;
      expect(ready, 'child started').toMatch(/^ready \d+$/);
      expect(Number(ready.split(' ')[1]), 'epoch the child found').toBe(epoch);
      let reported = 0;
      const reading = (async () => {
        for await (const line of out) {
          const m = /^flushed (\d+)$/.exec(line);
          if (m) reported = Number(m[1]);
        }
      })();
      // Kill at a random moment: in a write, in a flush, between the two.
      await new Promise((resolve) => setTimeout(resolve, rng.int(40, 400)));
      child.kill('SIGKILL');
      await exited;
      await reading;
      if (reported > 0) killedAfterFlushes++;

      const flushed = applyPlan(model, planSeed, reported);
      const inFlight = applyPlan(model, planSeed, reported + 1);
      const overlay = await WriteOverlay.open(new MemoryBlockSource(baseBytes), {
        dir: overlayDir,
      });
      const got = await overlay.read(0, SIZE);
      const isFlushed = Buffer.compare(got, flushed) === 0;
      const isInFlight = Buffer.compare(got, inFlight) === 0;
      expect(
        isFlushed || isInFlight,
        `iteration ${iter}: after ${reported} reported flushes the disk is neither that state nor the next one`,
      ).toBe(true);
      model = isFlushed ? flushed : inFlight;
      // The child wrote before it was killed, so unflushed writes may be lost: new verifier.
      expect(overlay.epoch, 'epoch after kill -9').toBe(epoch + 1);
      epoch = overlay.epoch;
      await overlay.close();
    }
    expect(killedAfterFlushes, 'kills that came after some flushes').toBeGreaterThan(2);
  });
});
