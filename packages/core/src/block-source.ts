import { type FileHandle, open, stat } from 'node:fs/promises';
import { ErrorCode, fromSystemError, IvmrError } from './errors.js';

/**
 * A read-only virtual disk: a byte size and random reads.
 *
 * Offsets and sizes are plain numbers holding whole bytes; they are exact up to 2^53 - 1 (8 PiB),
 * far above the 64 TiB disks ivmr targets. Implementations must not use 32-bit bitwise operators
 * on them.
 */
export interface BlockSource {
  /** Size of the disk in bytes. Constant for the life of the source. */
  readonly size: number;
  /**
   * Reads exactly `length` bytes starting at `offset`. Any alignment is allowed, and a read may
   * span many blocks. `offset + length` beyond `size` is an `IVMR_RANGE` error (nothing is read).
   *
   * When `into` is given the bytes are written to `into[0..length)` and `into` (or a view of it
   * of exactly `length` bytes) is returned; it must hold at least `length` bytes. Without `into`
   * a new buffer is returned. A failed read rejects with an {@link IvmrError}; it never returns
   * partly wrong bytes. A read that settles has stopped writing into `into`: callers reuse the
   * buffer at once, also after a failure (a read in parts waits for all of them, see
   * {@link settleAll}).
   */
  read(offset: number, length: number, into?: Uint8Array): Promise<Uint8Array>;
  /** Releases resources (file handles, caches). Reads after close reject with `IVMR_CLOSED`. */
  close?(): Promise<void>;
}

/**
 * Waits until every promise has settled, then rejects with the first failure (in array order),
 * if any. A read made of parts that write into one buffer awaits them with this, never with
 * `Promise.all`: that rejects at the first failure while other parts may still be writing, and
 * the caller, who reuses the buffer once the read settles, would see their bytes land later.
 */
export async function settleAll(parts: readonly Promise<unknown>[]): Promise<void> {
  if (parts.length === 1) {
    await parts[0];
    return;
  }
  if (parts.length === 0) return;
  const failed = (await Promise.allSettled(parts)).find((r) => r.status === 'rejected');
  if (failed !== undefined) throw (failed as PromiseRejectedResult).reason;
}

/** Checks a read request against a source size; throws `IVMR_RANGE` / `IVMR_INVALID_ARGUMENT`. */
export function checkReadRange(
  size: number,
  offset: number,
  length: number,
  into?: Uint8Array,
): void {
  if (!Number.isSafeInteger(offset) || offset < 0) {
    throw new IvmrError(
      ErrorCode.INVALID_ARGUMENT,
      `read offset must be a whole number >= 0, got ${offset}`,
    );
  }
  if (!Number.isSafeInteger(length) || length < 0) {
    throw new IvmrError(
      ErrorCode.INVALID_ARGUMENT,
      `read length must be a whole number >= 0, got ${length}`,
    );
  }
  if (offset + length > size) {
    throw new IvmrError(
      ErrorCode.RANGE,
      `read of ${length} bytes at offset ${offset} passes the end of the ${size}-byte source`,
      { details: { offset, length, size } },
    );
  }
  if (into !== undefined && into.length < length) {
    throw new IvmrError(
      ErrorCode.INVALID_ARGUMENT,
      `target buffer holds ${into.length} bytes, read needs ${length}`,
    );
  }
}

/** A block source over bytes in memory (tests, small synthetic disks). The bytes are not copied. */
export class MemoryBlockSource implements BlockSource {
  readonly size: number;
  readonly #bytes: Uint8Array;

  constructor(bytes: Uint8Array) {
    this.#bytes = bytes;
    this.size = bytes.length;
  }

  async read(offset: number, length: number, into?: Uint8Array): Promise<Uint8Array> {
    checkReadRange(this.size, offset, length, into);
    const out = into ? into.subarray(0, length) : new Uint8Array(length);
    out.set(this.#bytes.subarray(offset, offset + length));
    return out;
  }
}

/** A block source over a raw disk image file opened read-only. */
export class FileBlockSource implements BlockSource {
  readonly size: number;
  readonly path: string;
  #fh: FileHandle | undefined;

  private constructor(path: string, fh: FileHandle, size: number) {
    this.path = path;
    this.#fh = fh;
    this.size = size;
  }

  /** Opens `path` read-only. A missing file is `IVMR_NOT_FOUND`; a directory is `IVMR_INVALID_ARGUMENT`. */
  static async open(path: string): Promise<FileBlockSource> {
    let fh: FileHandle;
    try {
      const st = await stat(path);
      if (!st.isFile()) {
        throw new IvmrError(ErrorCode.INVALID_ARGUMENT, `${path}: not a regular file`, {
          details: { path },
        });
      }
      fh = await open(path, 'r');
    } catch (err) {
      throw fromSystemError(err, `disk image ${path}`, { path });
    }
    const { size } = await fh.stat();
    return new FileBlockSource(path, fh, size);
  }

  async read(offset: number, length: number, into?: Uint8Array): Promise<Uint8Array> {
    checkReadRange(this.size, offset, length, into);
    const fh = this.#fh;
    if (!fh) throw new IvmrError(ErrorCode.CLOSED, `${this.path}: source is closed`);
    const out = into ? into.subarray(0, length) : new Uint8Array(length);
    let done = 0;
    while (done < length) {
      const { bytesRead } = await fh.read(out, done, length - done, offset + done);
      if (bytesRead === 0) {
        throw new IvmrError(
          ErrorCode.IO,
          `${this.path}: file shrank while reading at ${offset + done}`,
        );
      }
      done += bytesRead;
    }
    return out;
  }

  async close(): Promise<void> {
    const fh = this.#fh;
    this.#fh = undefined;
    await fh?.close();
  }
}
