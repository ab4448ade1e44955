import { inflateSync } from 'node:zlib';
import { type BlockSource, ErrorCode, IvmrError } from '@ivmr/core';
import { formatError } from '../errors.js';
import { LruCache } from '../lru.js';
import { SECTOR } from './header.js';

/** Bytes of a grain marker before its data: u64 lba, u32 size. */
const GRAIN_MARKER = 12;
/** Extra bytes read after a record's expected end, so most records come in one read. */
const READ_AHEAD = 1024;
/** Most grains whose records one file read fetches (bounds the read to a few MiB). */
const MAX_RUN = 64;

/** One piece of a read that lies in a compressed grain. */
export interface GrainCopy {
  readonly grain: number;
  /** Sector of the grain's marker (its grain table entry). */
  readonly sector: number;
  readonly inGrain: number;
  readonly length: number;
  /** Where the bytes go in the read's output. */
  readonly dst: number;
}

/** File bytes from `start`, being read once for several records. */
interface Span {
  readonly start: number;
  readonly bytes: Promise<Uint8Array>;
}

/**
 * The compressed grains of a streamOptimized extent. A grain table entry gives the sector of a
 * grain marker {u64 lba, u32 size} followed by `size` bytes of zlib (RFC 1950) data that inflate
 * to the grain (shorter for the last grain of a disk that is not a whole number of grains).
 *
 * Decompressed grains stay in an LRU, so reads smaller than a grain decompress it once, and
 * concurrent reads of a grain decompress it once. The records of grains that lie one after the
 * other in the file (as a stream writes them) are fetched with one file read.
 */
export class CompressedGrains {
  readonly #file: BlockSource;
  readonly #grainBytes: number;
  readonly #diskBytes: number;
  readonly #what: string;
  readonly #cache: LruCache<number, Uint8Array>;
  /** Largest record accepted: incompressible data deflates to a little more than it was. */
  readonly #maxRecord: number;

  constructor(
    file: BlockSource,
    grainBytes: number,
    diskBytes: number,
    cacheGrains: number,
    what: string,
  ) {
    this.#file = file;
    this.#grainBytes = grainBytes;
    this.#diskBytes = diskBytes;
    this.#what = what;
    this.#cache = new LruCache(cacheGrains);
    this.#maxRecord = GRAIN_MARKER + 2 * grainBytes;
  }

  /**
   * Copies each piece to `out[dst..]`: at once from cached grains, else through loads pushed to
   * `tasks`. Pieces are in disk order.
   */
  copy(pieces: readonly GrainCopy[], out: Uint8Array, tasks: Promise<void>[]): void {
    let run: GrainCopy[] = [];
    const flush = () => {
      if (run.length > 0) this.#load(run, out, tasks);
      run = [];
    };
    for (const p of pieces) {
      const cached = this.#cache.get(p.grain);
      if (cached) {
        out.set(cached.subarray(p.inGrain, p.inGrain + p.length), p.dst);
        continue;
      }
      const last = run[run.length - 1];
      // Adjacent records: the next one starts after this one and at most one record later.
      const adjacent =
        last !== undefined &&
        p.sector > last.sector &&
        (p.sector - last.sector) * SECTOR <= this.#maxRecord + SECTOR &&
        run.length < MAX_RUN;
      if (!adjacent) flush();
      run.push(p);
    }
    flush();
  }

  #load(run: readonly GrainCopy[], out: Uint8Array, tasks: Promise<void>[]): void {
    let span: Span | undefined;
    if (run.length > 1) {
      const start = run[0]!.sector * SECTOR;
      const end = Math.min(
        this.#file.size,
        run[run.length - 1]!.sector * SECTOR + GRAIN_MARKER + this.#grainBytes + READ_AHEAD,
      );
      // A start past the end is reported per grain by #decode.
      if (start < end) span = { start, bytes: this.#file.read(start, end - start) };
    }
    for (const p of run) {
      tasks.push(
        this.#cache
          .load(p.grain, () => this.#decode(p.grain, p.sector, span))
          .then((bytes) => {
            out.set(bytes.subarray(p.inGrain, p.inGrain + p.length), p.dst);
          }),
      );
    }
    // A failed span read is reported through each grain's task.
    span?.bytes.catch(() => undefined);
  }

  /** Reads (from `span` when it holds it) and inflates the record of `grain` at `sector`. */
  async #decode(grain: number, sector: number, span: Span | undefined): Promise<Uint8Array> {
    const fileSize = this.#file.size;
    const at = sector * SECTOR;
    const details = { grain, offset: at };
    if (sector < 1 || at + GRAIN_MARKER > fileSize) {
      throw formatError(
        this.#what,
        `grain ${grain} points at sector ${sector}, outside the ${fileSize}-byte file`,
        details,
      );
    }
    let record: Uint8Array | undefined;
    if (span) {
      const bytes = await span.bytes;
      const from = at - span.start;
      if (from >= 0 && from + GRAIN_MARKER <= bytes.length) record = bytes.subarray(from);
    }
    record ??= await this.#file.read(
      at,
      Math.min(fileSize - at, GRAIN_MARKER + this.#grainBytes + READ_AHEAD),
    );
    const view = new DataView(record.buffer, record.byteOffset, record.byteLength);
    const lba = view.getUint32(0, true) + view.getUint32(4, true) * 2 ** 32;
    const size = view.getUint32(8, true);
    const expectedLba = (grain * this.#grainBytes) / SECTOR;
    if (lba !== expectedLba) {
      throw formatError(
        this.#what,
        `the grain marker at byte ${at} is for sector ${lba}, but the grain table puts grain ${grain} (sector ${expectedLba}) there`,
        details,
      );
    }
    // qemu reads at most two grains' worth for a record; so do we.
    if (
      size === 0 ||
      GRAIN_MARKER + size > this.#maxRecord ||
      at + GRAIN_MARKER + size > fileSize
    ) {
      throw formatError(
        this.#what,
        `grain ${grain}: compressed size ${size} at byte ${at} is 0, more than twice the grain, or past the end of the file`,
        details,
      );
    }
    if (record.length < GRAIN_MARKER + size)
      record = await this.#file.read(at, GRAIN_MARKER + size);
    const expected = Math.min(this.#grainBytes, this.#diskBytes - grain * this.#grainBytes);
    let data: Uint8Array;
    try {
      // One output chunk larger than the grain: zlib then returns it without concatenating.
      data = inflateSync(record.subarray(GRAIN_MARKER, GRAIN_MARKER + size), {
        chunkSize: this.#grainBytes + 1024,
        maxOutputLength: this.#grainBytes,
      });
    } catch (err) {
      throw new IvmrError(
        ErrorCode.CHUNK_CORRUPT,
        `${this.#what}: grain ${grain} at byte ${at} does not inflate to at most one grain: ${(err as Error).message}`,
        { cause: err, details },
      );
    }
    if (data.length < expected) {
      throw new IvmrError(
        ErrorCode.CHUNK_CORRUPT,
        `${this.#what}: grain ${grain} at byte ${at} inflates to ${data.length} bytes, expected ${expected}`,
        { details },
      );
    }
    return data;
  }

  clear(): void {
    this.#cache.clear();
  }
}
