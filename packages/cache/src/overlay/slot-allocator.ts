import { noSpaceError } from '../errors.js';

/** The most slots an overlay data file can have (grain maps store `slot + 3` in an Int32). */
export const MAX_SLOTS = 0x7fff_fffc;

/**
 * Hands out grain-sized slots of the overlay data file: freed slots first (last freed, first
 * reused, which keeps the file small), then new ones past the high-water mark.
 */
export class SlotAllocator {
  /** Slots ever handed out: the data file holds `hwm` slots. */
  hwm: number;
  readonly #free: number[];

  constructor(hwm = 0, free: number[] = []) {
    this.hwm = hwm;
    this.#free = free;
  }

  /** A free slot; `IVMR_NOSPC` when the data file has reached {@link MAX_SLOTS}. */
  alloc(): number {
    const s = this.#free.pop();
    if (s !== undefined) return s;
    if (this.hwm >= MAX_SLOTS) {
      throw noSpaceError(`the overlay holds its maximum of ${MAX_SLOTS} grains`, {
        slots: MAX_SLOTS,
      });
    }
    return this.hwm++;
  }

  /** Returns slot `s` for reuse. */
  release(s: number): void {
    this.#free.push(s);
  }

  /** Slots in use. */
  get inUse(): number {
    return this.hwm - this.#free.length;
  }
}
