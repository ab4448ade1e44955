import { expect } from 'vitest';

/**
 * A small seeded generator (xorshift32): test data must be reproducible from the seed fast-check
 * reports, so nothing here uses `Math.random` or `crypto`.
 */
export class Prng {
  #x: number;

  constructor(seed: number) {
    this.#x = seed >>> 0 || 0x9e3779b9;
  }

  /** A whole number in `[0, 2^32)`. */
  u32(): number {
    let x = this.#x;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.#x = x >>> 0;
    return this.#x;
  }

  /** A whole number in `[lo, hi]`. */
  int(lo: number, hi: number): number {
    return lo + Math.floor((this.u32() / 0x1_0000_0000) * (hi - lo + 1));
  }

  /** Fills `out` with pseudo-random bytes (incompressible). */
  fill(out: Uint8Array): Uint8Array {
    let i = 0;
    for (; i + 4 <= out.length; i += 4) {
      const v = this.u32();
      out[i] = v;
      out[i + 1] = v >>> 8;
      out[i + 2] = v >>> 16;
      out[i + 3] = v >>> 24;
    }
    for (; i < out.length; i++) out[i] = this.u32();
    return out;
  }
}

/** `n` pseudo-random bytes from `seed`. */
export function randomBytesFrom(seed: number, n: number): Uint8Array {
  return new Prng(seed).fill(new Uint8Array(n));
}

/**
 * Asserts two byte arrays are equal. Unlike `toEqual` on megabytes it fails fast and names the
 * first differing offset instead of printing both buffers.
 */
export function expectBytes(actual: Uint8Array, expected: Uint8Array, label = 'bytes'): void {
  expect(actual.length, `${label}: length`).toBe(expected.length);
  const a = Buffer.from(actual.buffer, actual.byteOffset, actual.byteLength);
  const e = Buffer.from(expected.buffer, expected.byteOffset, expected.byteLength);
  if (a.equals(e)) return;
  let i = 0;
  while (a[i] === e[i]) i++;
  expect.fail(`${label}: first difference at byte ${i} (got ${a[i]}, want ${e[i]})`);
}
