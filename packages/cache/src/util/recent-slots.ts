/**
 * Which slots of a file were written or read lately, so that reads of them can skip the thread
 * pool (`CacheFile.readNow`): their pages are in the page cache.
 *
 * One bit per slot in each of two generations: memory stays a bit per slot however many
 * accesses there are, and nothing runs on a timer. Generations are fixed spans of the clock,
 * half a window each (the current one and the one before), so a slot marked within the last
 * half window is always recent, one marked up to a whole window ago may still be, and one
 * marked longer ago never is, however long the clock went unread.
 */
export class RecentSlots {
  #current = new Uint8Array(0);
  #previous = new Uint8Array(0);
  /** Which half window of the clock the current generation is. */
  #generation: number;
  readonly #half: number;
  readonly #now: () => number;

  /** `now` is the clock in milliseconds (tests pass their own). */
  constructor(windowMs: number, now: () => number = () => performance.now()) {
    this.#half = windowMs / 2;
    this.#now = now;
    this.#generation = Math.floor(now() / this.#half);
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

  /** Takes back the marks of slots `first..first + count - 1` (their pages are gone). */
  forget(first: number, count = 1): void {
    for (let s = first; s < first + count; s++) {
      const keep = ~(1 << (s & 7));
      if (s >> 3 < this.#current.length) this.#current[s >> 3]! &= keep;
      if (s >> 3 < this.#previous.length) this.#previous[s >> 3]! &= keep;
    }
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

  /**
   * Moves to the clock's half window: the next one makes the current generation the previous;
   * any later one forgets both.
   */
  #rotate(): void {
    const generation = Math.floor(this.#now() / this.#half);
    const passed = generation - this.#generation;
    if (passed <= 0) return;
    if (passed === 1) {
      const old = this.#previous;
      this.#previous = this.#current;
      this.#current = old;
    } else {
      this.#previous.fill(0);
    }
    this.#current.fill(0);
    this.#generation = generation;
  }
}
