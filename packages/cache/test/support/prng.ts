/**
 * A small seeded generator (xorshift32): test data must be reproducible from the seed fast-check
 * reports, so nothing here uses `Math.random`.
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

  /** Fills `out` with pseudo-random bytes. */
  fill(out: Uint8Array): Uint8Array {
    for (let i = 0; i < out.length; i++) out[i] = this.u32() >>> 24;
    return out;
  }
}

/** `n` pseudo-random bytes from `seed`. */
export function randomBytesFrom(seed: number, n: number): Uint8Array {
  return new Prng(seed).fill(new Uint8Array(n));
}
