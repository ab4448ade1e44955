import { Prng } from './prng.js';

/** One write of the crash test's child: where, how long, and the seed of its bytes. */
export interface PlannedWrite {
  offset: number;
  length: number;
  seed: number;
}

/**
 * The child's deterministic sequence of write batches: it writes each batch, flushes, and
 * reports. The parent regenerates the same plan from the same seed to know what every reported
 * flush made durable. Writes land anywhere, at any length up to 64 KiB, across grains.
 */
export function* crashPlan(seed: number, diskSize: number): Generator<PlannedWrite[]> {
  const rng = new Prng(seed);
  for (;;) {
    const batch: PlannedWrite[] = [];
    const n = rng.int(1, 8);
    for (let i = 0; i < n; i++) {
      const length = rng.int(0, 3) === 0 ? rng.int(1, 700) : rng.int(1, 64 * 1024);
      const offset = rng.int(0, diskSize - length);
      batch.push({ offset, length, seed: rng.u32() });
    }
    yield batch;
  }
}
