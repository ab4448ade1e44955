import { settleAll } from '../block-source.js';
import { ErrorCode, IvmrError, isIvmrError } from '../errors.js';
import { decodeFrameInto } from '../format/frame.js';
import type { StoreAdapter } from '../store/adapter.js';
import type { BlobIndex, BlobLocation } from './blob-index.js';
import type { DecodeJobFault, DecodePool } from './decode-pool.js';

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
  /** Buffers the store reads packs into, reused: one per fetch in flight. */
  readonly #scratch: Scratch[] = [];

  readonly #relocate: ((pack: string) => Promise<void>) | undefined;
  readonly #pool: DecodePool | undefined;

  /**
   * `relocate` is called when a pack is missing: it may move the pack's blobs in `index` (after a
   * prune rewrote the pack); the read is then tried once more at the blob's new location. With
   * `pool`, packs are read into shared scratch buffers and the frames of large reads into shared
   * memory are decoded by the pool's workers.
   */
  constructor(
    store: StoreAdapter,
    index: BlobIndex,
    options: FrameCacheOptions = {},
    relocate?: (pack: string) => Promise<void>,
    pool?: DecodePool,
  ) {
    this.#store = store;
    this.#index = index;
    this.#maxBytes = options.maxBytes ?? 16 * 1024 * 1024;
    this.#relocate = relocate;
    this.#pool = pool;
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
    const end = offset + length;
    /** Copies this read's part of decoded frame `f` into `out`. */
    const copy = (f: number, frame: Uint8Array): void => {
      const lo = Math.max(offset, f * frameSize);
      const hi = Math.min(end, f * frameSize + frame.length);
      out.set(frame.subarray(lo - f * frameSize, hi - f * frameSize), outOffset + lo - offset);
    };
    const waits: Promise<void>[] = [];
    // Frames neither cached nor loading: fetched with one store request (first..last of them).
    let missFirst = -1;
    let missLast = -1;
    let covered: Set<number> | undefined;
    for (let f = first; f <= last; f++) {
      const key = slot * 1024 + f;
      const cached = this.#cache.get(key);
      if (cached !== undefined) {
        this.#touch(key, cached);
        copy(f, cached);
      } else {
        const loading = this.#loading.get(key);
        if (loading === undefined) {
          if (missFirst < 0) missFirst = f;
          missLast = f;
          continue;
        }
        waits.push(loading.then((frame) => copy(f, frame)));
      }
      if (missFirst >= 0) {
        covered ??= new Set();
        covered.add(f);
      }
    }
    if (missFirst >= 0) {
      // A frame this read uses whole is decoded straight into `out` and not kept: the frame
      // cache is for frames that small reads use piecemeal (each 4 KiB read of a 64 KiB frame
      // would decode it again); a frame used whole was read by a stream, whose next reads go
      // past it (and a read cache above, when there is one, keeps the bytes).
      const used = (f: number): 'whole' | 'part' =>
        (f === first && offset % frameSize !== 0) ||
        (f === last && end % frameSize !== 0 && end !== loc.rawLength)
          ? 'part'
          : 'whole';
      const place = (f: number, rawLength: number): Uint8Array => {
        const at = outOffset + f * frameSize - offset;
        return out.subarray(at, at + rawLength);
      };
      waits.push(this.#fetch(slot, loc, missFirst, missLast, covered, { used, place, copy }));
    }
    await settleAll(waits);
  }

  /**
   * Fetches frames `first..last` of a blob with one store request and decodes each one not in
   * `skip`: a frame the read uses whole straight into the place the read has for it, a frame
   * used in part into a new buffer that concurrent reads of it share while it loads, that the
   * read copies its part from, and that the frame cache keeps.
   */
  async #fetch(
    slot: number,
    loc: BlobLocation,
    first: number,
    last: number,
    skip: Set<number> | undefined,
    to: {
      used(f: number): 'whole' | 'part';
      place(f: number, rawLength: number): Uint8Array;
      copy(f: number, frame: Uint8Array): void;
    },
  ): Promise<void> {
    const frameSize = 2 ** loc.frameShift;
    const id = this.#index.idOf(slot);
    // Loads of frames used in part, so that concurrent reads of them wait for this fetch.
    const parts = new Map<number, Deferred<Uint8Array>>();
    for (let f = first; f <= last; f++) {
      if (skip?.has(f) || to.used(f) === 'whole') continue;
      const d = deferred<Uint8Array>();
      parts.set(f, d);
      this.#loading.set(slot * 1024 + f, d.promise);
    }
    const scratch = this.#takeScratch();
    try {
      const { bytes, loc: at } = await this.#load(slot, loc, first, last, scratch);
      // With a decode pool and both sides in shared memory, frames used whole are gathered for
      // it: quads of (stored offset, stored length, offset in the destination's buffer, raw
      // length), and the frame numbers. Otherwise each is decoded here at once.
      const shared = this.#pool !== undefined && bytes.buffer instanceof SharedArrayBuffer;
      let whole: WholeFrames | undefined;
      let pos = 0;
      for (let f = first; f <= last; f++) {
        const stored = at.frameLengths[f]!;
        const payload = bytes.subarray(pos, pos + stored);
        pos += stored;
        if (skip?.has(f)) continue;
        const rawLength = Math.min(frameSize, at.rawLength - f * frameSize);
        const part = parts.get(f);
        if (part === undefined) {
          const dest = to.place(f, rawLength);
          if (shared && dest.buffer instanceof SharedArrayBuffer) {
            whole ??= { quads: [], frames: [], bytes: 0, dest };
            whole.quads.push(payload.byteOffset, stored, dest.byteOffset, rawLength);
            whole.frames.push(f);
            whole.bytes += rawLength;
          } else {
            decodeStoredFrameInto(payload, dest, id, at.pack, f);
          }
          continue;
        }
        const frame = decodeStoredFrame(payload, rawLength, id, at.pack, f);
        this.#loading.delete(slot * 1024 + f);
        parts.delete(f);
        part.resolve(frame);
        this.#remember(slot * 1024 + f, frame);
        to.copy(f, frame);
      }
      if (whole !== undefined) await this.#decodeWhole(bytes, whole, id, at.pack);
    } catch (err) {
      for (const [f, part] of parts) {
        this.#loading.delete(slot * 1024 + f);
        part.reject(err);
      }
      throw err;
    } finally {
      this.#giveScratch(scratch);
    }
  }

  /**
   * Checks and decodes frames a read uses whole, gathered for the pool (quads as in
   * `DecodePool.decode`, offsets into the buffers under `bytes` and `dest`): in its workers when
   * it takes them, else here.
   */
  async #decodeWhole(
    bytes: Uint8Array,
    whole: WholeFrames,
    id: string,
    pack: string,
  ): Promise<void> {
    const elsewhere = this.#pool?.decode(bytes, whole.dest, whole.quads, whole.bytes);
    if (elsewhere !== undefined) {
      let fault: DecodeJobFault | undefined;
      try {
        fault = await elsewhere;
      } catch {
        // The worker died: its failure is in the pool's stats; these frames decode here.
        return this.#decodeHere(bytes, whole, id, pack);
      }
      if (fault !== undefined) throw corrupt(id, pack, whole.frames[fault.index]!, fault.why);
      return;
    }
    this.#decodeHere(bytes, whole, id, pack);
  }

  #decodeHere(bytes: Uint8Array, whole: WholeFrames, id: string, pack: string): void {
    const input = new Uint8Array(bytes.buffer);
    const output = new Uint8Array(whole.dest.buffer);
    const q = whole.quads;
    for (let i = 0; i < q.length; i += 4) {
      const stored = input.subarray(q[i]!, q[i]! + q[i + 1]!);
      const out = output.subarray(q[i + 2]!, q[i + 2]! + q[i + 3]!);
      decodeStoredFrameInto(stored, out, id, pack, whole.frames[i / 4]!);
    }
  }

  /**
   * The stored bytes of frames `first..last` of a blob (one store request, into `scratch`
   * when the store can), and the blob's location they were read at (a pack a prune rewrote is
   * followed once).
   */
  async #load(
    slot: number,
    loc: BlobLocation,
    first: number,
    last: number,
    scratch: Scratch,
    retried = false,
  ): Promise<{ bytes: Uint8Array; loc: BlobLocation }> {
    let start = loc.offset;
    for (let f = 0; f < first; f++) start += loc.frameLengths[f]!;
    let length = 0;
    for (let f = first; f <= last; f++) length += loc.frameLengths[f]!;
    const id = this.#index.idOf(slot);
    let bytes: Uint8Array;
    try {
      bytes = await this.#store.get('pack', loc.pack, {
        offset: start,
        length,
        into: scratch.take(length),
      });
    } catch (err) {
      if (isIvmrError(err, ErrorCode.NOT_FOUND)) {
        if (this.#relocate && !retried) {
          await this.#relocate(loc.pack);
          const moved = this.#index.location(slot);
          if (moved.pack !== loc.pack) return this.#load(slot, moved, first, last, scratch, true);
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
    return { bytes, loc };
  }

  #takeScratch(): Scratch {
    return this.#scratch.pop() ?? new Scratch(this.#pool !== undefined);
  }

  #giveScratch(scratch: Scratch): void {
    if (this.#scratch.length < MAX_SCRATCH) this.#scratch.push(scratch);
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
 * Checks and decodes one stored frame (header + payload) into a new buffer. Throws
 * `IVMR_CHUNK_CORRUPT` on a short frame, an unknown codec, a checksum mismatch or a wrong
 * decoded length.
 */
export function decodeStoredFrame(
  stored: Uint8Array,
  rawLength: number,
  blob: string,
  pack: string,
  frame: number,
): Uint8Array {
  // Not zeroed: decoding fills every byte or throws.
  const out = new Uint8Array(Buffer.allocUnsafeSlow(rawLength).buffer, 0, rawLength);
  decodeStoredFrameInto(stored, out, blob, pack, frame);
  return out;
}

/**
 * Checks and decodes one stored frame into `out`, whose length is the frame's raw length.
 * Throws like {@link decodeStoredFrame}; the checksum is checked before anything is written.
 */
export function decodeStoredFrameInto(
  stored: Uint8Array,
  out: Uint8Array,
  blob: string,
  pack: string,
  frame: number,
): void {
  const fault = decodeFrameInto(stored, out);
  if (fault !== undefined) throw corrupt(blob, pack, frame, fault.why, fault.cause);
}

/** Frames of one fetch that a read uses whole, gathered for a decode pool. */
interface WholeFrames {
  /** Per frame: stored offset, stored length, offset in `dest`'s buffer, raw length. */
  readonly quads: number[];
  readonly frames: number[];
  /** Raw bytes of them all. */
  bytes: number;
  /** One of the frames' places: its buffer is every one's. */
  readonly dest: Uint8Array;
}

/** Fetches in flight keep at most this many scratch buffers between them. */
const MAX_SCRATCH = 16;
/** A scratch buffer larger than this is not kept for the next fetch. */
const MAX_SCRATCH_BYTES = 4 * 1024 * 1024;

/** A reused buffer that the store reads one fetch's pack bytes into. */
class Scratch {
  #buf: Uint8Array | undefined;
  /** In `SharedArrayBuffer` memory, for a decode pool's workers. */
  readonly #shared: boolean;

  constructor(shared: boolean) {
    this.#shared = shared;
  }

  /** The first `n` bytes of the buffer, grown (to a power of two, at least 64 KiB) if needed. */
  take(n: number): Uint8Array {
    if (this.#buf === undefined || this.#buf.length < n) {
      let size = 64 * 1024;
      while (size < n) size *= 2;
      const buf = new Uint8Array(
        this.#shared ? new SharedArrayBuffer(size) : Buffer.allocUnsafeSlow(size).buffer,
        0,
        size,
      );
      if (size > MAX_SCRATCH_BYTES) return buf.subarray(0, n);
      this.#buf = buf;
    }
    return this.#buf.subarray(0, n);
  }
}

interface Deferred<T> {
  readonly promise: Promise<T>;
  resolve(value: T): void;
  reject(err: unknown): void;
}

/** A promise with its settle functions; a rejection nobody waits for is not reported. */
function deferred<T>(): Deferred<T> {
  let resolve!: (value: T) => void;
  let reject!: (err: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  promise.catch(() => {});
  return { promise, resolve, reject };
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
