import type { StatFs } from '../fs/cache-file-system.js';
import { DEFAULT_FLOOR_FRACTION } from '../space/free-space.js';

/** The free space a cache leaves on its volume. */
export interface FloorOptions {
  /** Share of the volume to keep free; default 0.05 (5%). */
  minFreeFraction?: number;
  /** Bytes to keep free; when set, wins over `minFreeFraction`. */
  minFreeBytes?: number;
}

/**
 * Decides whether a cache may grow: it asks the volume (statfs) and allows growth only while
 * the volume keeps at least the floor free. Between checks it spends a budget (free space minus
 * floor at the last check), so growing costs one statfs per budget or per `recheckMs`.
 *
 * It also keeps `slack` bytes back beyond the floor: space the volume spends that the cache's own
 * accounting cannot see (the file's header page, file-system metadata, page rounding). Without
 * it a full volume ended up to a few pages below the floor (seen on tmpfs: 20 KiB).
 */
export class SpaceGuard {
  readonly #dir: string;
  readonly #statfs: StatFs;
  readonly #floor: FloorOptions;
  readonly #recheckMs: number;
  #budget = 0;
  /** Bytes allowed whose writes have not reached the volume yet: a statfs cannot see them. */
  #inFlight = 0;
  #checkedAt = Number.NEGATIVE_INFINITY;
  #checking: Promise<void> | undefined;
  /** Free bytes at the last check. */
  freeBytes = Number.NaN;
  /** The floor in bytes at the last check. */
  floorBytes = Number.NaN;

  readonly #slack: number;

  constructor(dir: string, statfs: StatFs, floor: FloorOptions, recheckMs = 1000, slack = 0) {
    this.#dir = dir;
    this.#slack = slack;
    this.#statfs = statfs;
    this.#floor = floor;
    this.#recheckMs = recheckMs;
  }

  /** True when the last check is older than the recheck interval. */
  get stale(): boolean {
    return performance.now() - this.#checkedAt > this.#recheckMs;
  }

  /** Asks the volume now (one statfs at a time). */
  check(): Promise<void> {
    this.#checking ??= (async () => {
      try {
        const s = await this.#statfs(this.#dir);
        const floor =
          this.#floor.minFreeBytes ??
          Math.ceil(s.totalBytes * (this.#floor.minFreeFraction ?? DEFAULT_FLOOR_FRACTION));
        this.freeBytes = s.freeBytes;
        this.floorBytes = floor;
        this.#budget = s.freeBytes - floor - this.#slack - this.#inFlight;
        this.#checkedAt = performance.now();
      } finally {
        this.#checking = undefined;
      }
    })();
    return this.#checking;
  }

  /**
   * Takes `bytes` of growth from the budget, checking the volume first when the budget is short
   * or stale; false when growing by `bytes` would break the floor.
   */
  async allow(bytes: number): Promise<boolean> {
    if (this.#budget < bytes || this.stale) await this.check();
    if (this.#budget < bytes) return false;
    this.#budget -= bytes;
    this.#inFlight += bytes;
    return true;
  }

  /** Gives back budget taken by {@link allow} and not used. */
  refund(bytes: number): void {
    this.#budget += bytes;
    this.#inFlight -= bytes;
  }

  /**
   * Says that `bytes` taken by {@link allow} were written (or failed to be): the next check
   * sees them in the volume's free space, so they are no longer held back from it.
   */
  landed(bytes: number): void {
    this.#inFlight -= bytes;
  }

  /** Bytes the volume is below the floor at the last check (0 when it is not). */
  get deficit(): number {
    return Number.isNaN(this.freeBytes) ? 0 : Math.max(0, this.floorBytes - this.freeBytes);
  }
}
