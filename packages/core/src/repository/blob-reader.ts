import { ErrorCode, IvmrError, isIvmrError } from '../errors.js';
import { codecById, decompressFrame, frameChecksum } from '../format/codec.js';
import { FRAME_HEADER_SIZE } from '../format/pack.js';
import type { StoreAdapter } from '../store/adapter.js';
import type { BlobIndex, BlobLocation } from './blob-index.js';

/** Options of the decoded-frame cache every repository keeps. */
export interface FrameCacheOptions {
  /**
   * Bytes of decoded frames kept (default 16 MiB). 0 disables the cache. Only frames that a read
   * used in part are kept (small reads use a frame piecemeal); a frame a read used whole is not.
   */
  maxBytes?: number;
}

/**
 * Reads byte ranges of blobs: fetches only the frames that cover the range (one store request
 * per read), checks each frame's checksum before decoding it, and keeps recently decoded frames
 * in a small LRU so that neighbouring small reads decode a frame once. Concurrent misses on one
 * frame load it once.
 */
export class BlobReader {
  readonly #store: StoreAdapter;
  readonly #index: BlobIndex;
  readonly #maxBytes: number;
  readonly #cache = new Map<number, Uint8Array>();
  #cachedBytes = 0;
  readonly #loading = new Map<number, Promise<Uint8Array>>();

  readonly #relocate: ((pack: string) => Promise<void>) | undefined;

  /**
   * `relocate` is called when a pack is missing: it may move the pack's blobs in `index` (after a
   * prune rewrote the pack); the read is then tried once more at the blob's new location.
   */
  constructor(
    store: StoreAdapter,
    index: BlobIndex,
    options: FrameCacheOptions = {},
    relocate?: (pack: string) => Promise<void>,
  ) {
    this.#store = store;
    this.#index = index;
    this.#maxBytes = options.maxBytes ?? 16 * 1024 * 1024;
    this.#relocate = relocate;
  }

  /**
   * Copies raw bytes `[offset, offset + length)` of the blob in `slot` into `out` at `outOffset`.
   * Rejects with `IVMR_CHUNK_CORRUPT` (checksum, codec or length mismatch, short pack) or
   * `IVMR_NOT_FOUND` (pack missing); `details.blob` names the blob.
   */
  async read(
    slot: number,
    offset: number,
    length: number,
    out: Uint8Array,
    outOffset: number,
  ): Promise<void> {
    const loc = this.#index.location(slot);
    if (offset + length > loc.rawLength) {
      throw new IvmrError(ErrorCode.RANGE, `read past the end of blob ${this.#index.idOf(slot)}`);
    }
    const frameSize = 2 ** loc.frameShift;
    const first = Math.floor(offset / frameSize);
    const last = Math.floor((offset + length - 1) / frameSize);
    // A frame this read uses whole is not kept in the frame cache: the cache is for frames that
    // small reads use piecemeal (each 4 KiB read of a 64 KiB frame would decode it again); a
    // frame used whole was read by a stream, whose next reads go past it (and a read cache
    // above, when there is one, keeps the bytes). Keeping such frames only churned the cache
    // and the garbage collector.
    const partFirst = offset % frameSize !== 0;
    const end = offset + length;
    const partLast = end % frameSize !== 0 && end !== loc.rawLength;
    const frames = await this.#frames(
      slot,
      loc,
      first,
      last,
      (f) => (f === first && partFirst) || (f === last && partLast),
    );
    let pos = offset;
    let dst = outOffset;
    for (let f = first; f <= last; f++) {
      const frame = frames[f - first]!;
      const start = pos - f * frameSize;
      const n = Math.min(frame.length - start, offset + length - pos);
      out.set(frame.subarray(start, start + n), dst);
      pos += n;
      dst += n;
    }
  }

  /** Decoded frames `first..last` of a blob, from the cache or from one store request. */
  async #frames(
    slot: number,
    loc: BlobLocation,
    first: number,
    last: number,
    keep: (frame: number) => boolean,
  ): Promise<Uint8Array[]> {
    const result: (Uint8Array | Promise<Uint8Array>)[] = [];
    let missFirst = -1;
    let missLast = -1;
    for (let f = first; f <= last; f++) {
      const key = slot * 1024 + f;
      const hit = this.#cache.get(key) ?? this.#loading.get(key);
      if (hit) {
        if (hit instanceof Uint8Array) this.#touch(key, hit);
        result.push(hit);
      } else {
        if (missFirst < 0) missFirst = f;
        missLast = f;
        result.push(undefined as unknown as Uint8Array);
      }
    }
    if (missFirst >= 0) {
      const batch = this.#load(slot, loc, missFirst, missLast);
      for (let f = missFirst; f <= missLast; f++) {
        const key = slot * 1024 + f;
        if (result[f - first] !== undefined) continue;
        const one = batch.then((frames) => frames[f - missFirst]!);
        this.#loading.set(key, one);
        one.then(
          (frame) => {
            this.#loading.delete(key);
            if (keep(f)) this.#remember(key, frame);
          },
          () => this.#loading.delete(key),
        );
        result[f - first] = one;
      }
    }
    return Promise.all(result);
  }

  async #load(
    slot: number,
    loc: BlobLocation,
    first: number,
    last: number,
    retried = false,
  ): Promise<Uint8Array[]> {
    let start = loc.offset;
    for (let f = 0; f < first; f++) start += loc.frameLengths[f]!;
    let length = 0;
    for (let f = first; f <= last; f++) length += loc.frameLengths[f]!;
    const id = this.#index.idOf(slot);
    let bytes: Uint8Array;
    try {
      bytes = await this.#store.get('pack', loc.pack, { offset: start, length });
    } catch (err) {
      if (isIvmrError(err, ErrorCode.NOT_FOUND)) {
        if (this.#relocate && !retried) {
          await this.#relocate(loc.pack);
          const moved = this.#index.location(slot);
          if (moved.pack !== loc.pack) return this.#load(slot, moved, first, last, true);
        }
        throw new IvmrError(ErrorCode.NOT_FOUND, `blob ${id}: its pack ${loc.pack} is missing`, {
          cause: err,
          details: { blob: id, pack: loc.pack },
        });
      }
      throw err;
    }
    if (bytes.length !== length) {
      throw corrupt(id, loc.pack, first, `pack ends early (${bytes.length} of ${length} bytes)`);
    }
    const frameSize = 2 ** loc.frameShift;
    const frames: Uint8Array[] = [];
    let pos = 0;
    for (let f = first; f <= last; f++) {
      const stored = loc.frameLengths[f]!;
      const rawLength = Math.min(frameSize, loc.rawLength - f * frameSize);
      frames.push(decodeStoredFrame(bytes.subarray(pos, pos + stored), rawLength, id, loc.pack, f));
      pos += stored;
    }
    return frames;
  }

  #touch(key: number, frame: Uint8Array): void {
    this.#cache.delete(key);
    this.#cache.set(key, frame);
  }

  #remember(key: number, frame: Uint8Array): void {
    if (frame.length > this.#maxBytes || this.#cache.has(key)) return;
    this.#cache.set(key, frame);
    this.#cachedBytes += frame.length;
    while (this.#cachedBytes > this.#maxBytes) {
      const [oldKey, old] = this.#cache.entries().next().value as [number, Uint8Array];
      this.#cache.delete(oldKey);
      this.#cachedBytes -= old.length;
    }
  }

  /** Drops every cached frame. */
  clear(): void {
    this.#cache.clear();
    this.#cachedBytes = 0;
  }
}

/**
 * Checks and decodes one stored frame (header + payload). Throws `IVMR_CHUNK_CORRUPT` on a
 * short frame, an unknown codec, a checksum mismatch or a wrong decoded length.
 */
export function decodeStoredFrame(
  stored: Uint8Array,
  rawLength: number,
  blob: string,
  pack: string,
  frame: number,
): Uint8Array {
  if (stored.length < FRAME_HEADER_SIZE) {
    throw corrupt(blob, pack, frame, `${stored.length} bytes cannot hold a frame header`);
  }
  const codecId = stored[0]!;
  const codec = codecById(codecId);
  if (codec === undefined) throw corrupt(blob, pack, frame, `unknown codec id ${codecId}`);
  const view = Buffer.from(stored.buffer, stored.byteOffset, stored.byteLength);
  const sum = view.readBigUInt64BE(1);
  const payload = view.subarray(FRAME_HEADER_SIZE);
  if (frameChecksum(codecId, payload) !== sum)
    throw corrupt(blob, pack, frame, 'checksum mismatch');
  try {
    return decompressFrame(codec, payload, rawLength);
  } catch (err) {
    throw corrupt(blob, pack, frame, (err as Error).message, err);
  }
}

function corrupt(
  blob: string,
  pack: string,
  frame: number,
  why: string,
  cause?: unknown,
): IvmrError {
  return new IvmrError(
    ErrorCode.CHUNK_CORRUPT,
    `blob ${blob} (pack ${pack}, frame ${frame}) is corrupt: ${why}`,
    {
      cause,
      details: { blob, pack, frame },
    },
  );
}
