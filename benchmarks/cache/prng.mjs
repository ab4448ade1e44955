/** A small seeded generator (xorshift32), so a run is reproducible from its seed. */
export class Prng {
  #x;

  constructor(seed) {
    this.#x = seed >>> 0 || 0x9e3779b9;
  }

  /** A whole number in `[0, 2^32)`. */
  u32() {
    let x = this.#x;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.#x = x >>> 0;
    return this.#x;
  }

  /** A whole number in `[lo, hi]`. */
  int(lo, hi) {
    return lo + Math.floor((this.u32() / 0x1_0000_0000) * (hi - lo + 1));
  }

  /** Fills `out` with pseudo-random bytes. */
  fill(out) {
    for (let i = 0; i < out.length; i++) out[i] = this.u32() >>> 24;
    return out;
  }
}
