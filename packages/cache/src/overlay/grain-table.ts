/**
 * A grain's value: {@link BASE} (read the base source), {@link ZERO} (reads as zeros, no slot),
 * or a slot number `>= 0` of the overlay data file.
 */
export const BASE = -1;
/** The grain reads as zeros (`writeZeroes`), without a slot. */
export const ZERO = -2;

const PAGE_BITS = 12;
const PAGE = 1 << PAGE_BITS;

/**
 * A sparse map from grain number to a value `>= -2`, as a two-level table: pages of 4096 grains
 * (16 MiB of disk with 4 KiB grains) as Int32Arrays holding `value + 3` (0 = absent), allocated
 * only where some grain has a value. 4 bytes per grain of a touched page, and no limit on the
 * number of entries (a `Map` stops at 2^24).
 */
export class SparseGrainMap {
  readonly #pages = new Map<number, { cells: Int32Array; used: number }>();
  #size = 0;

  /** The value of grain `g`, or `undefined`. */
  get(g: number): number | undefined {
    const page = this.#pages.get(Math.floor(g / PAGE));
    if (page === undefined) return undefined;
    const c = page.cells[g % PAGE]!;
    return c === 0 ? undefined : c - 3;
  }

  /** True when grain `g` has a value. */
  has(g: number): boolean {
    return this.get(g) !== undefined;
  }

  /** Sets grain `g` to `value` (`>= -2`). */
  set(g: number, value: number): void {
    const p = Math.floor(g / PAGE);
    let page = this.#pages.get(p);
    if (page === undefined) {
      page = { cells: new Int32Array(PAGE), used: 0 };
      this.#pages.set(p, page);
    }
    const i = g % PAGE;
    if (page.cells[i] === 0) {
      page.used++;
      this.#size++;
    }
    page.cells[i] = value + 3;
  }

  /** Removes grain `g`'s value. */
  delete(g: number): void {
    const p = Math.floor(g / PAGE);
    const page = this.#pages.get(p);
    if (page === undefined) return;
    const i = g % PAGE;
    if (page.cells[i] === 0) return;
    page.cells[i] = 0;
    this.#size--;
    if (--page.used === 0) this.#pages.delete(p);
  }

  /** Removes every value. */
  clear(): void {
    this.#pages.clear();
    this.#size = 0;
  }

  /** Number of grains with a value. */
  get size(): number {
    return this.#size;
  }

  /**
   * Every grain with a value, with it, in ascending grain order, from grain `from` on. The map
   * must not change during the iteration.
   */
  *entries(from = 0): Generator<[number, number]> {
    const pages = [...this.#pages.keys()].filter((p) => (p + 1) * PAGE > from);
    pages.sort((a, b) => a - b);
    for (const p of pages) {
      const { cells } = this.#pages.get(p)!;
      for (let i = Math.max(0, from - p * PAGE); i < PAGE; i++) {
        const c = cells[i]!;
        if (c !== 0) yield [p * PAGE + i, c - 3];
      }
    }
  }

  /** True when some grain in `first..last` (inclusive) has a value. */
  anyIn(first: number, last: number): boolean {
    for (let p = Math.floor(first / PAGE); p <= Math.floor(last / PAGE); p++) {
      const page = this.#pages.get(p);
      if (page === undefined) continue;
      const lo = Math.max(first - p * PAGE, 0);
      const hi = Math.min(last - p * PAGE, PAGE - 1);
      for (let i = lo; i <= hi; i++) if (page.cells[i] !== 0) return true;
    }
    return false;
  }
}

/** Where each grain of the virtual disk lives: a {@link SparseGrainMap} in which absent is BASE. */
export class GrainTable {
  readonly #map = new SparseGrainMap();

  /** The value of grain `g`. */
  get(g: number): number {
    return this.#map.get(g) ?? BASE;
  }

  /** Sets grain `g` to `value` and returns the value it had. */
  set(g: number, value: number): number {
    const old = this.get(g);
    if (value === BASE) this.#map.delete(g);
    else this.#map.set(g, value);
    return old;
  }

  /** Grains that are not BASE, in ascending order, from `from` on (see `SparseGrainMap`). */
  entries(from = 0): Generator<[number, number]> {
    return this.#map.entries(from);
  }

  /** Number of grains that are not BASE. */
  get size(): number {
    return this.#map.size;
  }
}
