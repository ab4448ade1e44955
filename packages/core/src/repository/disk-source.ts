import { type BlockSource, checkReadRange, settleAll } from '../block-source.js';
import { ErrorCode, IvmrError, isIvmrError } from '../errors.js';
import type { BlobReader } from './blob-reader.js';

/** A contiguous byte range of a disk. */
export interface ByteRange {
  readonly offset: number;
  readonly length: number;
}

/**
 * The resolved, flat block map of one disk of one restore point: for block `i`, `slots[i]` is
 * `0` for a zero block, `s + 1` for the blob in index slot `s`, or `-(k + 1)` for the blob
 * `missing[k]` that no index lists. Built once when the point is opened, so a read costs the same
 * whatever the chain length.
 */
export interface FlatBlockMap {
  readonly size: number;
  readonly blockSize: number;
  readonly slots: Int32Array;
  /** Hex ids of blobs the maps name but no index lists. */
  readonly missing: readonly string[];
}

/** Bytes of a disk in blocks that are not all zeros. */
export function allocatedBytesOf(map: FlatBlockMap): number {
  let n = 0;
  for (let b = 0; b < map.slots.length; b++) {
    if (map.slots[b] !== 0) n += Math.min(map.blockSize, map.size - b * map.blockSize);
  }
  return n;
}

/**
 * One disk of an opened restore point as a {@link BlockSource}. Reads decode only the frames
 * that cover the requested range; zero blocks cost nothing. A corrupt or missing blob rejects
 * the read with `IVMR_CHUNK_CORRUPT` / `IVMR_NOT_FOUND` whose `details` name the blob, the
 * disk, the point and the affected byte range; wrong bytes are never returned.
 */
export class RestoreDisk implements BlockSource {
  /** Disk name as recorded at backup. */
  readonly name: string;
  readonly size: number;
  /** Block size of the disk's chain. */
  readonly blockSize: number;
  readonly #map: FlatBlockMap;
  readonly #reader: BlobReader;
  readonly #idOf: (slot: number) => string;
  readonly #context: { vm: string; point: string };
  #closed = false;
  #allocated: number | undefined;

  /** @internal Created by `RestorePoint.openDisk`. */
  constructor(
    name: string,
    map: FlatBlockMap,
    reader: BlobReader,
    idOf: (slot: number) => string,
    context: { vm: string; point: string },
  ) {
    this.name = name;
    this.size = map.size;
    this.blockSize = map.blockSize;
    this.#map = map;
    this.#reader = reader;
    this.#idOf = idOf;
    this.#context = context;
  }

  async read(offset: number, length: number, into?: Uint8Array): Promise<Uint8Array> {
    if (this.#closed) throw new IvmrError(ErrorCode.CLOSED, `disk ${this.name} is closed`);
    checkReadRange(this.size, offset, length, into);
    const out = into ? into.subarray(0, length) : new Uint8Array(length);
    const bs = this.blockSize;
    const pending: Promise<void>[] = [];
    let pos = offset;
    const end = offset + length;
    while (pos < end) {
      const block = Math.floor(pos / bs);
      const inBlock = pos - block * bs;
      const n = Math.min(bs - inBlock, end - pos);
      const dst = pos - offset;
      const entry = this.#map.slots[block]!;
      if (entry === 0) {
        out.fill(0, dst, dst + n);
      } else if (entry < 0) {
        const id = this.#map.missing[-entry - 1]!;
        const missing = new IvmrError(ErrorCode.NOT_FOUND, `blob ${id} is not in any index`, {
          details: { blob: id },
        });
        pending.push(Promise.reject(this.#rangeError(missing, block)));
      } else {
        pending.push(
          this.#reader.read(entry - 1, inBlock, n, out, dst).catch((err: unknown) => {
            throw this.#rangeError(err, block);
          }),
        );
      }
      pos += n;
    }
    await settleAll(pending);
    return out;
  }

  /** Adds the disk, point and byte range of `block` to a blob error. */
  #rangeError(err: unknown, block: number): unknown {
    if (
      !isIvmrError(err) ||
      (err.code !== ErrorCode.CHUNK_CORRUPT && err.code !== ErrorCode.NOT_FOUND)
    )
      return err;
    const start = block * this.blockSize;
    const end = Math.min(start + this.blockSize, this.size);
    return new IvmrError(
      err.code,
      `${err.message}; it holds bytes ${start}..${end} of disk ${this.name} of ${this.#context.vm}@${this.#context.point}`,
      {
        cause: err,
        details: {
          ...err.details,
          disk: this.name,
          ...this.#context,
          offset: start,
          length: end - start,
        },
      },
    );
  }

  /** True when block `i` is all zeros (no blob). */
  isZeroBlock(i: number): boolean {
    return this.#map.slots[i] === 0;
  }

  /** Number of blocks (the last one may be short). */
  get blockCount(): number {
    return this.#map.slots.length;
  }

  /**
   * Bytes in blocks that are not all zeros (what a thin copy of the disk allocates). Computed
   * once: NFS GETATTR reads it on every call.
   */
  get allocatedBytes(): number {
    this.#allocated ??= allocatedBytesOf(this.#map);
    return this.#allocated;
  }

  /** The byte ranges not known to be zero, merged, in order. */
  allocatedRanges(): ByteRange[] {
    const ranges: ByteRange[] = [];
    const { slots } = this.#map;
    const bs = this.blockSize;
    let i = 0;
    while (i < slots.length) {
      if (slots[i] === 0) {
        i++;
        continue;
      }
      const start = i;
      while (i < slots.length && slots[i] !== 0) i++;
      const offset = start * bs;
      ranges.push({ offset, length: Math.min(i * bs, this.size) - offset });
    }
    return ranges;
  }

  /** Hex id of the blob holding block `i`, or null for a zero block. */
  blobOf(i: number): string | null {
    const entry = this.#map.slots[i];
    if (entry === undefined)
      throw new IvmrError(ErrorCode.RANGE, `disk ${this.name} has no block ${i}`);
    if (entry === 0) return null;
    return entry < 0 ? this.#map.missing[-entry - 1]! : this.#idOf(entry - 1);
  }

  async close(): Promise<void> {
    this.#closed = true;
  }
}
