import { BASE, ZERO } from './grain-table.js';

/**
 * Consecutive grains with one kind of content: `count` grains from `first` that are all
 * {@link BASE}, all {@link ZERO}, or in slots `value, value + 1, ...` (`value >= 0`).
 */
export interface GrainRun {
  first: number;
  count: number;
  value: number;
}

/** Groups `(grain, value)` pairs given in ascending grain order into runs, lazily. */
export function* toRuns(entries: Iterable<readonly [number, number]>): Generator<GrainRun> {
  let cur: GrainRun | undefined;
  for (const [g, v] of entries) {
    if (
      cur !== undefined &&
      g === cur.first + cur.count &&
      (v < 0 ? v === cur.value : cur.value >= 0 && v === cur.value + cur.count)
    ) {
      cur.count++;
      continue;
    }
    if (cur !== undefined) yield cur;
    cur = { first: g, count: 1, value: v };
  }
  if (cur !== undefined) yield cur;
}

// On disk a run is: first grain u64, grain count u32, value u32 (0 base, 1 zero, s + 2 slot s).

/** Bytes of one encoded run. */
export const RUN_BYTES = 16;

/** The u32 a run's value is stored as. */
export function encodeRunValue(value: number): number {
  return value === BASE ? 0 : value === ZERO ? 1 : value + 2;
}

/** The value of a stored u32 (see {@link encodeRunValue}). */
export function decodeRunValue(stored: number): number {
  return stored === 0 ? BASE : stored === 1 ? ZERO : stored - 2;
}
