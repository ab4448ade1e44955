/**
 * Which slots of a file were written or read lately, so that reads of them can skip the thread
 * pool (`CacheFile.readNow`): their pages are in the page cache.
 *
 * One bit per slot in each of two generations of half the window each: memory stays a bit per
 * slot however many accesses there are, and nothing runs on a timer. A slot marked within the
 * last half window is always recent; one marked up to a whole window ago may still be; one
 * marked longer ago never is.
 */
export class RecentSlots {
  #current = new Uint8Array(0);
  #previous = new Uint8Array(0);
  #since: number;
  readonly #half: number;
  readonly #now: () => number;

  /** `now` is the clock in milliseconds (tests pass their own). */
  constructor(windowMs: number, now: () => number = () => performance.now()) {
    this.#half = windowMs / 2;
    this.#now = now;
    this.#since = now();
  }

  /** Marks slots `first..first + count - 1` as used now. */
  mark(first: number, count = 1): void {
    if (count <= 0) return;
    this.#rotate();
    const need = (first + count + 7) >> 3;
    if (need > this.#current.length) {
      const grown = new Uint8Array(Math.max(need, this.#current.length * 2));
      grown.set(this.#current);
      this.#current = grown;
    }
    for (let s = first; s < first + count; s++) this.#current[s >> 3]! |= 1 << (s & 7);
  }

  /** True when each of slots `first..first + count - 1` was marked lately. */
  has(first: number, count = 1): boolean {
    this.#rotate();
    for (let s = first; s < first + count; s++) {
      const bit = 1 << (s & 7);
      if (((this.#current[s >> 3] ?? 0) & bit) === 0 && ((this.#previous[s >> 3] ?? 0) & bit) === 0)
        return false;
    }
    return true;
  }

  /** Starts a new generation each half window; after a whole window unused, forgets both. */
  #rotate(): void {
    const now = this.#now();
    const age = now - this.#since;
    if (age < this.#half) return;
    if (age >= 2 * this.#half) {
      this.#previous.fill(0);
    } else {
      const old = this.#previous;
      this.#previous = this.#current;
      this.#current = old;
    }
    this.#current.fill(0);
    this.#since = now;
  }
}
