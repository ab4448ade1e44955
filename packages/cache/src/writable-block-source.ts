import type { BlockSource } from '@ivmr/core';

/**
 * A `BlockSource` of `@ivmr/core` that can also be written: the write overlay here, the VMDK flat extent
 * elsewhere. Kept structural and minimal so any object of this shape fits.
 *
 * Unlike a plain `BlockSource`, `size` may change, but only through `resize`.
 */
export interface WritableBlockSource extends BlockSource {
  /** Size of the disk in bytes; changes only when `resize` resolves. */
  readonly size: number;
  /**
   * Writes all of `data` at `offset` (any alignment). `offset + data.length` beyond `size` is
   * an `IVMR_RANGE` error. When the promise resolves the write is acknowledged: every later read
   * sees it, but it is durable only after a later `flush()` resolves. `data` must not change
   * until then. A full volume rejects with `IVMR_NOSPC` and writes nothing that a read can see
   * as acknowledged.
   */
  write(offset: number, data: Uint8Array): Promise<void>;
  /** Makes every write acknowledged before the call durable (NFS COMMIT, FILE_SYNC). */
  flush(): Promise<void>;
  /** Grows (or shrinks) the disk; durable when it resolves. Grown bytes read as zeros. */
  resize?(size: number): Promise<void>;
}
