import { type BlockSource, checkReadRange, ErrorCode, IvmrError } from '@ivmr/core';
import { SECTOR } from './descriptor/model.js';

/**
 * A `BlockSource` that also takes writes: the copy-on-write layer over a restore point's
 * disk (`@ivmr/cache` implements it). Same offset rules as `read`.
 */
export interface WritableBlockSource extends BlockSource {
  /** Reads as `BlockSource.read` does, returning the bytes written last. */
  read(offset: number, length: number, into?: Uint8Array): Promise<Uint8Array>;
  /**
   * Writes `data` at `offset`. `offset + data.length` beyond `size` is `IVMR_RANGE` and nothing
   * is written. Once the promise resolves, reads see the bytes; they are durable only after
   * {@link WritableBlockSource.flush}. `data` is only read during the call.
   */
  write(offset: number, data: Uint8Array): Promise<void>;
  /** Makes every acknowledged write durable (NFS COMMIT, FILE_SYNC). Idempotent. */
  flush(): Promise<void>;
}

/** A source that knows how many of its bytes are allocated (stored and not known to be zero). */
export interface AllocationInfo {
  /** Bytes allocated, 0..size. May change as writes land; read it when needed, it must be fast. */
  readonly allocatedBytes: number;
}

/** A plain Uint8Array over memory that is not zeroed first (never from Buffer's shared pool). */
function uninitialized(length: number): Uint8Array {
  const b = Buffer.allocUnsafeSlow(length);
  return new Uint8Array(b.buffer, b.byteOffset, length);
}

/**
 * The `-flat.vmdk` file of a disk as a virtual file over a block source: what the NFS datastore
 * serves for it. Also a `BlockSource` itself.
 *
 * Its `size` is the source's size rounded up to whole 512-byte sectors (what the descriptor
 * declares). When the disk's size is not a multiple of 512, the bytes between the real end and
 * `size` read as zeros, and writes there are accepted only when they are zeros (they cannot be
 * stored); give the writable layer the rounded size to store them.
 */
export class FlatExtent implements BlockSource {
  /** Size in bytes: the source's size rounded up to a multiple of 512. */
  readonly size: number;
  /** The source's own size: bytes past it read as zeros. */
  readonly sourceSize: number;
  readonly #source: BlockSource;
  readonly #writable: WritableBlockSource | undefined;

  constructor(source: BlockSource | WritableBlockSource) {
    this.#source = source;
    this.sourceSize = source.size;
    this.size = Math.ceil(source.size / SECTOR) * SECTOR;
    this.#writable = isWritable(source) ? source : undefined;
  }

  /** True when the source takes writes (it implements {@link WritableBlockSource}). */
  get writable(): boolean {
    return this.#writable !== undefined;
  }

  /**
   * Bytes the file really uses, for the NFS `used` attribute: the source's `allocatedBytes`
   * ({@link AllocationInfo}) rounded up to a sector and capped at `size`, or `size` when the
   * source does not say (a thick file).
   */
  get used(): number {
    const allocated = (this.#source as Partial<AllocationInfo>).allocatedBytes;
    if (typeof allocated !== 'number' || !Number.isFinite(allocated)) return this.size;
    return Math.min(this.size, Math.ceil(Math.max(0, allocated) / SECTOR) * SECTOR);
  }

  /** Reads like `BlockSource.read`: bytes from the source, zeros past its real end. */
  async read(offset: number, length: number, into?: Uint8Array): Promise<Uint8Array> {
    checkReadRange(this.size, offset, length, into);
    // Every byte of `out` is written below (source bytes, then zeros), so it need not start zeroed.
    const out = into ? into.subarray(0, length) : uninitialized(length);
    const inSource = Math.max(0, Math.min(length, this.sourceSize - offset));
    if (inSource > 0) await this.#source.read(offset, inSource, out);
    if (inSource < length) out.fill(0, inSource, length);
    return out;
  }

  /**
   * Passes a write to the writable layer.
   *
   * @throws IvmrError `IVMR_UNSUPPORTED` when the source is read-only; `IVMR_RANGE` past `size`,
   *   or for non-zero bytes past the source's real end (nothing is written then).
   */
  async write(offset: number, data: Uint8Array): Promise<void> {
    const layer = this.#writable;
    if (!layer) {
      throw new IvmrError(
        ErrorCode.UNSUPPORTED,
        'this flat extent is read-only: its source takes no writes',
      );
    }
    checkReadRange(this.size, offset, data.length);
    const inSource = Math.max(0, Math.min(data.length, this.sourceSize - offset));
    const padding = data.subarray(inSource);
    if (padding.some((b) => b !== 0)) {
      throw new IvmrError(
        ErrorCode.RANGE,
        `write of non-zero bytes past the disk's real end (${this.sourceSize}); only zeros fit in the padding to ${this.size}`,
        { details: { offset, length: data.length, sourceSize: this.sourceSize } },
      );
    }
    if (inSource > 0) await layer.write(offset, data.subarray(0, inSource));
  }

  /** Makes acknowledged writes durable; a no-op on a read-only extent. */
  async flush(): Promise<void> {
    await this.#writable?.flush();
  }
}

function isWritable(source: BlockSource): source is WritableBlockSource {
  const s = source as Partial<WritableBlockSource>;
  return typeof s.write === 'function' && typeof s.flush === 'function';
}
