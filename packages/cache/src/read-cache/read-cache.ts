import { dirname } from 'node:path';
import {
  type BlockSource,
  checkReadRange,
  ErrorCode,
  IvmrError,
  isIvmrError,
  settleAll,
} from '@ivmr/core';
import { closedError } from '../errors.js';
import type { CacheFile, CacheFileSystem, StatFs } from '../fs/cache-file-system.js';
import { nodeFileSystem } from '../fs/node-file-system.js';
import { blockChecksum } from '../util/binary.js';
import { RecentSlots } from '../util/recent-slots.js';
import { SingleFlight } from '../util/single-flight.js';
import {
  type CacheHeader,
  dataStart,
  decodeEntry,
  decodeHeader,
  ENTRY_BYTES,
  encodeEntry,
  encodeHeader,
  HEADER_BYTES,
  MAX_SOURCE_ID,
} from './cache-file-format.js';
import { LoadBuffers } from './load-buffers.js';
import { SequentialDetector } from './sequential-detector.js';
import { type FloorOptions, SpaceGuard } from './space-guard.js';

/** Options of {@link ReadCache.open}. */
export interface ReadCacheOptions extends FloorOptions {
  /** The cache file (its folder is created when missing). */
  path: string;
  /** Bytes per cached block: a power of two from 512 to 4 MiB; default 64 KiB. */
  blockSize?: number;
  /** The most data the cache file holds; default 2 GiB. */
  maxBytes?: number;
  /**
   * Names the source: a cache file made for another source id, block size or capacity is
   * emptied on open. Default `size:<source size>`; give the repository, point and disk.
   */
  sourceId?: string;
  /** Keep a block that was hit since the ring last passed it for one more round. Default true. */
  secondChance?: boolean;
  /**
   * A hit on a slot stored or read lately is read at once on the calling thread
   * (`CacheFile.readNow`, when the file layer has it): its pages are in the page cache, and the
   * thread-pool round trip of an asynchronous read is most of a warm hit's cost. Lately: within
   * the last half of this many milliseconds always, never longer ago than all of it. 0 sends
   * every read through the thread pool. Default 30000.
   */
  syncReadWindowMs?: number;
  /** Blocks read ahead of a sequential stream; 0 turns read-ahead off. Default 32. */
  readAhead?: number;
  /** Reads in a row that make a stream sequential. Default 2. */
  readAheadTrigger?: number;
  /**
   * When blocks a sequential stream loads (read ahead, or missed by the stream's own reads) go
   * into the cache file. `second-read` (default): the first time a stream loads a block it is
   * only held in memory until the stream has read it; the next time a stream loads it, it is
   * stored. A stream that reads the disk once (a migration, a scan, a guest copying a big file)
   * then costs the cache file nothing and evicts nothing, and it runs at the source's speed
   * instead of the cache file's write speed; read again, its blocks are cached. `first-read`
   * stores them at once. Blocks missed by other reads, and prefetched ones, are always stored.
   */
  streamAdmission?: 'first-read' | 'second-read';
  /**
   * Bytes of loaded blocks that may wait to be stored (reads do not wait for stores, so a source
   * faster than the cache file piles them up); beyond, a loaded block is served but not stored
   * (`storesSkipped`). Default 256 MiB.
   */
  maxPendingStoreBytes?: number;
  /**
   * Read-ahead loads running at once, at most; each load is one source read of a run of
   * consecutive missing blocks. Default 4.
   */
  maxReadAheadLoads?: number;
  /** File layer; default the real file system. */
  fs?: CacheFileSystem;
  /** Volume space; default `fs.statfs` of the file layer. Inject a fake in tests. */
  statfs?: StatFs;
  /** Least milliseconds between two statfs calls while the cache grows. Default 1000. */
  statfsIntervalMs?: number;
}

/** Counters and sizes of a read cache. */
export interface ReadCacheStats {
  /** Block reads served from the cache file. */
  readonly hits: number;
  /** Block reads that waited for the source (one load serves all concurrent misses). */
  readonly misses: number;
  /** Loads from the source (misses and read-ahead). */
  readonly sourceReads: number;
  /** Bytes read from the source. */
  readonly bytesFromSource: number;
  /** Bytes of reads served from the cache file (hits). */
  readonly bytesFromCache: number;
  /** Loads started by read-ahead. */
  readonly readAheadLoads: number;
  /**
   * Blocks a sequential stream loaded (read ahead, or missed by its reads) and held in memory
   * only, not stored: their first load by a stream (see `streamAdmission`).
   */
  readonly streamedBlocks: number;
  /**
   * Loaded blocks not stored because `maxPendingStoreBytes` of blocks already waited to be
   * stored (the cache file could not keep up); a later miss stores them.
   */
  readonly storesSkipped: number;
  /** Blocks known to be zero (`isZeroBlock`), served without the cache or the source. */
  readonly zeroReads: number;
  /** Blocks dropped to make room (circular reuse and shrinking). */
  readonly blocksPruned: number;
  /** Bytes of the blocks dropped to make room. */
  readonly bytesPruned: number;
  /** Bytes of blocks in the cache now. */
  readonly cachedBytes: number;
  /** Size of the cache file's data area now. */
  readonly fileBytes: number;
  /** Bytes the cache may use now (shrinks when the floor or the overlay needs room). */
  readonly capacityBytes: number;
  /** The most the cache may ever hold (`maxBytes`, capped at the source's size). */
  readonly maxBytes: number;
  /** Free bytes of the volume at the last statfs (NaN before the first). */
  readonly freeBytes: number;
  /** The floor in bytes at the last statfs (NaN before the first). */
  readonly floorBytes: number;
  /** Bytes given back by `shrink`. */
  readonly shrunkBytes: number;
}

const DEFAULT_BLOCK = 64 * 1024;
const DEFAULT_MAX_BYTES = 2 * 1024 ** 3;
const TABLE_CHUNK = 1 << 20;
/** Bytes the space guard keeps back beyond the floor for what it cannot count (see SpaceGuard). */
const GUARD_SLACK = 64 * 1024;
/** How long a table entry waits for others to be written with it (see #queueEntry). */
const ENTRY_BATCH_MS = 2;

interface ZeroProbe {
  readonly blockSize: number;
  isZeroBlock(i: number): boolean;
}

function zeroProbeOf(source: BlockSource): ZeroProbe | undefined {
  const s = source as Partial<ZeroProbe>;
  return typeof s.isZeroBlock === 'function' && typeof s.blockSize === 'number'
    ? (s as ZeroProbe)
    : undefined;
}

/** A block waiting to be written into its slot (see `ReadCache.#writeBlock`). */
interface BlockWrite {
  readonly slot: number;
  readonly buf: Uint8Array;
  readonly resolve: () => void;
  readonly reject: (err: unknown) => void;
}

/**
 * A circular cache of a slow source's blocks (decoded backup blocks) in one local file, itself a
 * `BlockSource` of `@ivmr/core`. A miss loads the whole block once, however many reads want it at the same
 * time, stores it in the next slot of the ring and serves it; when the ring is full the oldest
 * slot is reused (a block hit since the ring last passed it gets one more round). Sequential
 * streams are read ahead in the background. The file grows only while its volume keeps the free
 * space floor, and {@link shrink} gives space back (the write overlay calls it before a write
 * fails for lack of space). It sits beneath a write overlay, so it only ever holds source
 * (backup) bytes, never the VM's writes.
 *
 * Its slot table is written along with the data (without fsync): after a restart the index is
 * reloaded, and each block is checked against its checksum on its first hit, so a torn slot is
 * dropped, never served. Closing the cache does not close the source.
 */
export class ReadCache implements BlockSource {
  readonly size: number;
  readonly #source: BlockSource;
  readonly #file: CacheFile;
  readonly #bs: number;
  readonly #maxSlots: number;
  readonly #dataStart: number;
  readonly #guard: SpaceGuard;
  readonly #zeroProbe: ZeroProbe | undefined;
  readonly #secondChance: boolean;
  readonly #readAhead: number;
  readonly #maxReadAheadLoads: number;
  readonly #detector: SequentialDetector;
  readonly #flight = new SingleFlight<number, Uint8Array>();
  /** Blocks loaded from the source whose store into the cache file is in flight. */
  readonly #storing = new Map<number, Uint8Array>();
  /**
   * Blocks a stream loaded and did not store (their first load, see `streamAdmission`), until
   * the stream has read them; the oldest are dropped beyond {@link #streamedCap}.
   */
  readonly #streamed = new Map<number, Uint8Array>();
  readonly #streamedCap: number;
  /** Bytes of blocks waiting to be stored, at most (see #storeBehind). */
  readonly #maxPendingStoreBytes: number;
  #storingBytes = 0;
  readonly #loadBuffers: LoadBuffers;
  /** One bit per block: loaded by a stream before (`second-read` admission). Undefined: store all. */
  readonly #streamedBefore: Uint8Array | undefined;
  readonly #prefetching = new Set<Promise<void>>();
  readonly #background = new Set<Promise<unknown>>();
  /** Table entries of stored slots not written yet (see #queueEntry). */
  readonly #pendingEntries = new Map<number, Uint8Array>();
  /** The batch of table entries being written, if any. */
  #entryWrites: Promise<void> | undefined;
  /** Blocks ready to be written this turn of the event loop (see #writeBlock). */
  #blockWrites: BlockWrite[] = [];
  readonly #index = new Map<number, number>();
  readonly #slotBlock: Float64Array;
  readonly #slotLen: Uint32Array;
  readonly #slotCrc: Uint32Array;
  readonly #verified: Uint8Array;
  readonly #ref: Uint8Array;
  readonly #pins: Int32Array;
  /** Slots stored or read lately, read at once (see `syncReadWindowMs`); none without readNow. */
  readonly #recent: RecentSlots | undefined;
  #unpinWaiters: (() => void)[] = [];
  #seq: number;
  #head: number;
  /** Slots the file's data area covers. */
  #fileSlots: number;
  /** Slots the ring may use now (`<= maxSlots`). */
  #limit: number;
  #closed = false;
  /** Shrinks running: the ring must not grow back meanwhile. */
  #shrinking = 0;
  #rechecking = false;
  /** close() has begun: no new reads, stores in flight finish. */
  #closing = false;
  #closeDone: Promise<void> | undefined;
  /** Slots the file grows by whose writes are in flight, and what the guard charged for each. */
  readonly #growing = new Map<number, number>();
  #hits = 0;
  #misses = 0;
  #sourceReads = 0;
  #bytesFromSource = 0;
  #bytesFromCache = 0;
  #readAheadLoads = 0;
  #streamedBlocks = 0;
  #storesSkipped = 0;
  #zeroReads = 0;
  #blocksPruned = 0;
  #bytesPruned = 0;
  #cachedBytes = 0;
  #shrunkBytes = 0;

  private constructor(
    source: BlockSource,
    file: CacheFile,
    header: CacheHeader,
    options: ReadCacheOptions,
    guard: SpaceGuard,
  ) {
    this.#source = source;
    this.size = source.size;
    this.#file = file;
    this.#bs = header.blockSize;
    this.#maxSlots = header.slotCount;
    this.#dataStart = dataStart(header.slotCount);
    this.#guard = guard;
    this.#zeroProbe = zeroProbeOf(source);
    this.#secondChance = options.secondChance ?? true;
    this.#readAhead = options.readAhead ?? 32;
    this.#maxReadAheadLoads = options.maxReadAheadLoads ?? 4;
    this.#detector = new SequentialDetector(options.readAheadTrigger ?? 2);
    this.#maxPendingStoreBytes = options.maxPendingStoreBytes ?? 256 * 1024 * 1024;
    // Room for a few streams to have a window read ahead each.
    this.#streamedCap = 4 * Math.max(this.#readAhead, 1);
    // A run is at most half a window (see #startReadAhead); a few spare for the next runs. Blocks
    // loaded one by one (random misses): enough for a queue of them.
    this.#loadBuffers = new LoadBuffers([
      { size: Math.ceil(this.#readAhead / 2) * header.blockSize, keep: 8 },
      { size: header.blockSize, keep: 64 },
    ]);
    this.#streamedBefore =
      (options.streamAdmission ?? 'second-read') === 'second-read' && this.#readAhead > 0
        ? new Uint8Array(Math.ceil(Math.ceil(source.size / header.blockSize) / 8))
        : undefined;
    const n = header.slotCount;
    this.#slotBlock = new Float64Array(n).fill(-1);
    this.#slotLen = new Uint32Array(n);
    this.#slotCrc = new Uint32Array(n);
    this.#verified = new Uint8Array(n);
    this.#ref = new Uint8Array(n);
    this.#pins = new Int32Array(n);
    const window = options.syncReadWindowMs ?? 30_000;
    this.#recent = file.readNow !== undefined && window > 0 ? new RecentSlots(window) : undefined;
    this.#seq = 0;
    this.#head = 0;
    this.#fileSlots = 0;
    this.#limit = n;
  }

  /**
   * Opens (or creates) the cache file at `options.path` for `source`. A file made for another
   * source id, block size or capacity, or a damaged one, is emptied; otherwise its index is
   * reloaded.
   */
  static async open(source: BlockSource, options: ReadCacheOptions): Promise<ReadCache> {
    const bs = options.blockSize ?? DEFAULT_BLOCK;
    if (!Number.isInteger(bs) || bs < 512 || bs > 4 << 20 || (bs & (bs - 1)) !== 0) {
      throw new IvmrError(
        ErrorCode.INVALID_ARGUMENT,
        `read cache block size must be a power of two from 512 to 4 MiB, got ${bs}`,
      );
    }
    const maxBytes = options.maxBytes ?? DEFAULT_MAX_BYTES;
    if (!Number.isSafeInteger(maxBytes) || maxBytes < 0) {
      throw new IvmrError(
        ErrorCode.INVALID_ARGUMENT,
        `read cache maxBytes must be a whole number >= 0, got ${maxBytes}`,
      );
    }
    const sourceId = options.sourceId ?? `size:${source.size}`;
    if (new TextEncoder().encode(sourceId).length > MAX_SOURCE_ID) {
      throw new IvmrError(
        ErrorCode.INVALID_ARGUMENT,
        `read cache sourceId is longer than ${MAX_SOURCE_ID} bytes`,
      );
    }
    const fs = options.fs ?? nodeFileSystem;
    const header: CacheHeader = {
      blockSize: bs,
      slotCount: Math.min(Math.floor(maxBytes / bs), Math.ceil(source.size / bs)),
      sourceSize: source.size,
      sourceId,
    };
    const dir = dirname(options.path);
    await fs.mkdir(dir);
    const file = await fs.open(options.path, 'create');
    const guard = new SpaceGuard(
      dir,
      options.statfs ?? fs.statfs,
      options,
      options.statfsIntervalMs ?? 1000,
      GUARD_SLACK,
    );
    const cache = new ReadCache(source, file, header, options, guard);
    try {
      await cache.#load(header);
    } catch (err) {
      await file.close();
      throw err;
    }
    return cache;
  }

  /** Reloads the index from the file, or empties a file made for something else. */
  async #load(want: CacheHeader): Promise<void> {
    const fileSize = await this.#file.size();
    const headBytes = new Uint8Array(HEADER_BYTES);
    await this.#file.read(headBytes, 0);
    const h = decodeHeader(headBytes);
    const same =
      h !== undefined &&
      h.blockSize === want.blockSize &&
      h.slotCount === want.slotCount &&
      h.sourceSize === want.sourceSize &&
      h.sourceId === want.sourceId;
    if (!same) {
      await this.#file.truncate(0);
      await this.#file.write(encodeHeader(want), 0);
      await this.#file.truncate(this.#dataStart);
      return;
    }
    const bs = this.#bs;
    this.#fileSlots = Math.min(
      this.#maxSlots,
      Math.max(0, Math.floor((fileSize - this.#dataStart) / bs)),
    );
    const blocks = Math.ceil(this.size / bs);
    let newest = -1;
    const seqs = new Map<number, number>();
    const perChunk = TABLE_CHUNK / ENTRY_BYTES;
    const buf = new Uint8Array(TABLE_CHUNK);
    for (let first = 0; first < this.#fileSlots; first += perChunk) {
      const n = Math.min(perChunk, this.#fileSlots - first);
      const bytes = buf.subarray(0, n * ENTRY_BYTES);
      await this.#file.read(bytes, HEADER_BYTES + first * ENTRY_BYTES);
      for (let i = 0; i < n; i++) {
        const e = decodeEntry(bytes.subarray(i * ENTRY_BYTES, (i + 1) * ENTRY_BYTES));
        if (e === undefined || e.block >= blocks) continue;
        if (e.length !== Math.min(bs, this.size - e.block * bs)) continue;
        const s = first + i;
        const other = this.#index.get(e.block);
        if (other !== undefined) {
          if (e.seq < (seqs.get(other) ?? 0)) continue;
          this.#forget(other);
        }
        this.#slotBlock[s] = e.block;
        this.#slotLen[s] = e.length;
        this.#slotCrc[s] = e.crc;
        this.#index.set(e.block, s);
        this.#cachedBytes += e.length;
        seqs.set(s, e.seq);
        if (e.seq > this.#seq) {
          this.#seq = e.seq;
          newest = s;
        }
      }
    }
    // The ring goes on after the newest block, unless the file can still grow: then it grows
    // first, as before the restart. (Stores finish out of slot order, so the newest block need
    // not be in the last slot: going on after it would evict blocks while the file has room.)
    this.#head = this.#fileSlots < this.#maxSlots ? this.#fileSlots : newest + 1;
  }

  /**
   * Reads `length` bytes at `offset` (any alignment), from the cache file where the blocks are
   * cached and from the source (once per block, then cached) where not. A failing cache file
   * never fails a read: the source is asked instead. `into` as in the `BlockSource` contract.
   */
  async read(offset: number, length: number, into?: Uint8Array): Promise<Uint8Array> {
    if (this.#closed || this.#closing) throw closedError('read cache');
    checkReadRange(this.size, offset, length, into);
    const out = into ? into.subarray(0, length) : new Uint8Array(length);
    if (length === 0) return out;
    const bs = this.#bs;
    const end = offset + length;
    const parts: Promise<void>[] = [];
    const last = Math.floor((end - 1) / bs);
    // A read that continues a sequential stream loads its missing blocks as the stream's, like
    // its read-ahead (see streamAdmission); the window grows with the reads' size, so that it
    // stays ahead of a client that has several large reads out at once.
    let ahead: [number, number] = [0, 0];
    let stream = false;
    if (this.#readAhead > 0) {
      const window = Math.max(this.#readAhead, 4 * Math.ceil(length / bs));
      ahead = this.#detector.note(offset, length, bs, window);
      stream = this.#detector.streaming;
    }
    for (let b = Math.floor(offset / bs); b <= last; ) {
      const run = this.#cachedRun(b, last);
      if (run > 1) {
        parts.push(this.#readRun(b, run, offset, end, out));
        b += run;
        continue;
      }
      const missing = this.#missingRun(b, last + 1);
      if (missing > 1) {
        parts.push(this.#readMissingRun(b, missing, offset, end, out, stream));
        b += missing;
        continue;
      }
      const lo = Math.max(offset, b * bs);
      const hi = Math.min(end, (b + 1) * bs);
      parts.push(this.#readPart(b, lo - b * bs, out.subarray(lo - offset, hi - offset), stream));
      b++;
    }
    if (ahead[1] > ahead[0]) this.#startReadAhead(ahead[0], ahead[1]);
    await settleAll(parts);
    return out;
  }

  /**
   * Loads the blocks of `[offset, offset + length)` that are not cached into the cache without
   * serving a read: boot prefetch warms the cache in the order a recorded boot read the disk.
   * Blocks cached, loading or known zero are skipped; each run of missing blocks (at most
   * `maxRun` blocks) is one source read, and at most `parallel` run out at once. Resolves with
   * the bytes read from the source once every block is loaded (stores finish behind, see
   * {@link ReadCache.settle}); rejects with the first block's error after the others settled, so a
   * damaged block costs only itself.
   */
  async prefetch(
    offset: number,
    length: number,
    options: { maxRun?: number; parallel?: number } = {},
  ): Promise<number> {
    if (this.#closed || this.#closing) throw closedError('read cache');
    checkReadRange(this.size, offset, length);
    if (length === 0) return 0;
    const maxRun = Math.max(1, options.maxRun ?? 32);
    const parallel = Math.max(1, options.parallel ?? 4);
    const bs = this.#bs;
    const end = Math.floor((offset + length - 1) / bs) + 1;
    const running = new Set<Promise<void>>();
    let bytes = 0;
    let failure: unknown;
    for (let b = Math.floor(offset / bs); b < end; ) {
      const n = Math.min(maxRun, this.#missingRun(b, end));
      if (n === 0) {
        // A block a stream holds in memory only is stored: prefetched blocks are kept.
        const held = this.#streamed.get(b);
        if (held !== undefined) {
          this.#storeBehind(b, held);
          this.#unstream(b);
        }
        b++;
        continue;
      }
      if (this.#closed || this.#closing) break;
      const loads = this.#loadRun(b, n);
      const p: Promise<void> = Promise.allSettled(loads).then((settled) => {
        running.delete(p);
        for (const r of settled) {
          if (r.status === 'fulfilled') bytes += r.value.length;
          else failure ??= r.reason;
        }
      });
      running.add(p);
      b += n;
      if (running.size >= parallel) await Promise.race(running);
    }
    await Promise.all(running);
    if (failure !== undefined) throw failure;
    return bytes;
  }

  /**
   * How many blocks from `b` (up to `last`) sit in consecutive, verified slots, so that one file
   * read serves them all; 0 when `b` itself is not cached that way.
   */
  #cachedRun(b: number, last: number): number {
    const s = this.#index.get(b);
    if (s === undefined || this.#verified[s] !== 1) return 0;
    let n = 1;
    while (b + n <= last && this.#index.get(b + n) === s + n && this.#verified[s + n] === 1) n++;
    return n;
  }

  /**
   * Reads the part of `[offset, end)` in blocks `b..b + n - 1`, cached in consecutive slots, with
   * one file read into `out` (which starts at `offset`). A short or failing read falls back to
   * block by block.
   */
  async #readRun(
    b: number,
    n: number,
    offset: number,
    end: number,
    out: Uint8Array,
  ): Promise<void> {
    const bs = this.#bs;
    const s = this.#index.get(b)!;
    const lo = Math.max(offset, b * bs);
    const hi = Math.min(end, (b + n) * bs);
    for (let i = 0; i < n; i++) this.#pins[s + i]!++;
    let served = false;
    try {
      const at = this.#dataStart + s * bs + (lo - b * bs);
      served =
        (await this.#readSlots(s, n, out.subarray(lo - offset, hi - offset), at)) === hi - lo;
    } catch {
      // A failing cache file must not fail the read: block by block asks the source instead.
    } finally {
      for (let i = 0; i < n; i++) this.#unpin(s + i);
    }
    if (served) {
      this.#hits += n;
      this.#bytesFromCache += hi - lo;
      this.#ref.fill(1, s, s + n);
      return;
    }
    const parts: Promise<void>[] = [];
    for (let k = b; k < b + n; k++) {
      const from = Math.max(lo, k * bs);
      const to = Math.min(hi, (k + 1) * bs);
      parts.push(this.#readPart(k, from - k * bs, out.subarray(from - offset, to - offset)));
    }
    await settleAll(parts);
  }

  /**
   * How many blocks from `b` (below `end`) are neither cached, nor loading, nor being stored,
   * nor known zero: those are loaded with one source read.
   */
  #missingRun(b: number, end: number): number {
    let n = 0;
    while (
      b + n < end &&
      !this.#index.has(b + n) &&
      this.#flight.get(b + n) === undefined &&
      !this.#storing.has(b + n) &&
      !this.#streamed.has(b + n) &&
      !this.#isZero(b + n)
    ) {
      n++;
    }
    return n;
  }

  /**
   * Loads blocks `b..b + n - 1` with one source read and copies their part of the read; a
   * stream's blocks are admitted as the stream's (see streamAdmission).
   */
  async #readMissingRun(
    b: number,
    n: number,
    offset: number,
    end: number,
    out: Uint8Array,
    stream: boolean,
  ): Promise<void> {
    this.#misses += n;
    const blocks = await Promise.all(this.#loadRun(b, n, stream));
    const bs = this.#bs;
    for (let k = 0; k < n; k++) {
      const at = (b + k) * bs;
      const lo = Math.max(offset, at);
      const hi = Math.min(end, at + blocks[k]!.length);
      out.set(blocks[k]!.subarray(lo - at, hi - at), lo - offset);
      if (stream && hi === at + blocks[k]!.length) this.#unstream(b + k);
    }
  }

  /**
   * Loads blocks `b..b + n - 1` from the source with one read: a source such as a backup chain
   * then fetches and decodes its frames in one request instead of one per block. Each block is
   * in flight meanwhile (other reads of it wait for this load), then stored behind. When the run's
   * read fails, each block is loaded alone, so that a damaged block fails only the reads that
   * need it, never its neighbours in the run. Returns each block's load. The run is read into a
   * reused buffer (see {@link LoadBuffers}).
   */
  #loadRun(b: number, n: number, stream = false): Promise<Uint8Array>[] {
    const bs = this.#bs;
    const start = b * bs;
    const len = Math.min(n * bs, this.size - start);
    const buf = this.#loadBuffers.take(len);
    const whole = this.#source.read(start, len, buf).then(() => {
      this.#sourceReads++;
      this.#bytesFromSource += len;
      for (let k = 0; k < n; k++) {
        const block = buf.subarray(k * bs, Math.min((k + 1) * bs, len));
        if (stream) this.#admitStreamed(b + k, block);
        else this.#storeBehind(b + k, block);
      }
    });
    this.#releaseAfterReaders(whole, buf);
    const blocks: Promise<Uint8Array>[] = [];
    for (let k = 0; k < n; k++) {
      blocks.push(
        this.#flight.run(b + k, () =>
          whole.then(
            () => buf.subarray(k * bs, Math.min((k + 1) * bs, len)),
            () => this.#loadBlock(b + k, stream),
          ),
        ),
      );
    }
    return blocks;
  }

  /**
   * Ends a load's own hold of its buffer once the reads waiting for the load have copied its
   * blocks: they resume in microtasks once it settles, all before the next turn of the event
   * loop. Whatever keeps a block longer (a store, a stream's holding area) holds it itself.
   */
  #releaseAfterReaders(load: Promise<unknown>, buf: Uint8Array): void {
    const release = () => setImmediate(() => this.#loadBuffers.release(buf));
    load.then(release, release);
  }

  /**
   * Reads bytes `[inBlock, inBlock + dst.length)` of block `b` into `dst`; a miss of a `stream`
   * read is admitted as the stream's (see streamAdmission).
   */
  async #readPart(b: number, inBlock: number, dst: Uint8Array, stream = false): Promise<void> {
    if (this.#isZero(b)) {
      dst.fill(0);
      this.#zeroReads++;
      return;
    }
    const s = this.#index.get(b);
    if (s !== undefined) {
      this.#pins[s]!++;
      let served = false;
      try {
        served = await this.#readSlot(s, inBlock, dst);
      } catch {
        // A failing cache file must not fail the read: the source still has the block.
      } finally {
        this.#unpin(s);
      }
      if (served) {
        this.#hits++;
        this.#bytesFromCache += dst.length;
        this.#ref[s] = 1;
        return;
      }
      if (this.#index.get(b) === s) this.#forget(s);
    }
    let block = this.#storing.get(b) ?? this.#streamed.get(b);
    if (block !== undefined) {
      this.#hits++;
      this.#bytesFromCache += dst.length;
    } else {
      this.#misses++;
      block = await this.#flight.run(b, () => this.#loadBlock(b, stream));
    }
    dst.set(block.subarray(inBlock, inBlock + dst.length));
    // A stream is done with a block held for it (read ahead, or loaded by this read) once it
    // has read the block's end: the next time the block is wanted a stream loads it again, and
    // then it is stored.
    if (inBlock + dst.length === block.length) this.#unstream(b);
  }

  /** Serves a part of slot `s`; false when the slot turned out short or damaged. */
  async #readSlot(s: number, inBlock: number, dst: Uint8Array): Promise<boolean> {
    const at = this.#dataStart + s * this.#bs;
    if (this.#verified[s] === 1) {
      return (await this.#readSlots(s, 1, dst, at + inBlock)) === dst.length;
    }
    // First hit since the file was reopened: check the whole block against its checksum.
    const len = this.#slotLen[s]!;
    const block = new Uint8Array(len);
    if ((await this.#file.read(block, at)) !== len || blockChecksum(block) !== this.#slotCrc[s]) {
      return false;
    }
    this.#verified[s] = 1;
    this.#recent?.mark(s);
    dst.set(block.subarray(inBlock, inBlock + dst.length));
    return true;
  }

  /**
   * Reads `into` at file position `at`, which lies in verified slots `s..s + n - 1`: at once when
   * they are all hot, else through the thread pool. A full read makes them hot.
   */
  async #readSlots(s: number, n: number, into: Uint8Array, at: number): Promise<number> {
    const got = this.#recent?.has(s, n)
      ? this.#file.readNow!(into, at)
      : await this.#file.read(into, at);
    if (got === into.length) this.#recent?.mark(s, n);
    return got;
  }

  #isZero(b: number): boolean {
    const p = this.#zeroProbe;
    if (p === undefined) return false;
    const start = b * this.#bs;
    const last = Math.min(start + this.#bs, this.size) - 1;
    for (let i = Math.floor(start / p.blockSize); i <= Math.floor(last / p.blockSize); i++) {
      if (!p.isZeroBlock(i)) return false;
    }
    return true;
  }

  /**
   * Loads block `b` from the source and stores it (storing is best effort), or admits it as a
   * stream's block.
   */
  async #loadBlock(b: number, stream = false): Promise<Uint8Array> {
    const bs = this.#bs;
    const len = Math.min(bs, this.size - b * bs);
    const buf = this.#loadBuffers.take(len);
    const read = this.#source.read(b * bs, len, buf);
    this.#releaseAfterReaders(read, buf);
    await read;
    this.#sourceReads++;
    this.#bytesFromSource += len;
    if (stream) this.#admitStreamed(b, buf);
    else this.#storeBehind(b, buf);
    return buf;
  }

  /**
   * A block loaded for a sequential stream (read ahead, or missed by a read of the stream):
   * stored when a stream loaded it before (or when `streamAdmission` is `first-read`), else held
   * in memory until the stream has read it, and marked as loaded by a stream once.
   */
  #admitStreamed(b: number, buf: Uint8Array): void {
    this.#unstream(b);
    const before = this.#streamedBefore;
    const bit = 1 << (b & 7);
    if (before === undefined || (before[b >>> 3]! & bit) !== 0) {
      this.#storeBehind(b, buf);
      return;
    }
    before[b >>> 3]! |= bit;
    if (this.#closed || this.#closing) return;
    this.#loadBuffers.hold(buf);
    this.#streamed.set(b, buf);
    this.#streamedBlocks++;
    if (this.#streamed.size > this.#streamedCap) {
      this.#unstream(this.#streamed.keys().next().value as number);
    }
  }

  /** Drops block `b` from the blocks held for a stream. */
  #unstream(b: number): void {
    const buf = this.#streamed.get(b);
    if (buf === undefined) return;
    this.#streamed.delete(b);
    this.#loadBuffers.release(buf);
  }

  /** Stores a loaded block in the cache file without making the reader wait for it. */
  #storeBehind(b: number, buf: Uint8Array): void {
    if (!this.#closed && !this.#closing && !this.#storing.has(b)) {
      // Readers need not wait for the cache file: until the block is stored, reads of it are
      // served from this buffer. So a source faster than the cache file (a prefetch, a stream
      // read a second time) would pile blocks up without bound: beyond maxPendingStoreBytes a
      // block is not stored. It is a cache; a later miss stores it.
      if (this.#storingBytes + buf.length > this.#maxPendingStoreBytes) {
        this.#storesSkipped++;
        return;
      }
      this.#storing.set(b, buf);
      this.#storingBytes += buf.length;
      this.#loadBuffers.hold(buf);
      this.#track(
        this.#store(b, buf).finally(() => {
          this.#storing.delete(b);
          this.#storingBytes -= buf.length;
          this.#loadBuffers.release(buf);
        }),
      );
    }
  }

  async #store(b: number, buf: Uint8Array): Promise<void> {
    if (this.#index.has(b)) return;
    const s = await this.#claimSlot();
    if (s < 0) return;
    try {
      const crc = blockChecksum(buf);
      await this.#writeBlock(s, buf);
      // A shrink may have cut the slot off while it was written.
      if (s >= this.#fileSlots || this.#index.has(b)) return;
      const seq = ++this.#seq;
      this.#queueEntry(s, encodeEntry({ block: b, length: buf.length, crc, seq }));
      this.#slotBlock[s] = b;
      this.#slotLen[s] = buf.length;
      this.#slotCrc[s] = crc;
      this.#verified[s] = 1;
      this.#ref[s] = 0;
      this.#recent?.mark(s);
      this.#index.set(b, s);
      this.#cachedBytes += buf.length;
    } catch (err) {
      if (isIvmrError(err, ErrorCode.NO_SPACE) && s === this.#fileSlots - 1) {
        // The volume filled up under the cache: stop growing here.
        this.#fileSlots = s;
        this.#limit = s;
        if (this.#head > s) this.#head = 0;
      }
    } finally {
      const cost = this.#growing.get(s);
      if (cost !== undefined) {
        // The growth has reached the volume (or failed): a statfs from now on counts it.
        this.#growing.delete(s);
        this.#guard.landed(cost);
      }
      this.#unpin(s);
    }
  }

  /**
   * Writes block `buf` into slot `s`. Stores that are ready in the same turn of the event loop are
   * written together, one `writev` per run of neighbouring slots: stores claim slots in ring
   * order, so concurrent misses mostly land side by side, and each write handed to libuv's
   * pool costs the serving thread about as much as decoding a block.
   */
  #writeBlock(s: number, buf: Uint8Array): Promise<void> {
    if (this.#file.writev === undefined)
      return this.#file.write(buf, this.#dataStart + s * this.#bs);
    return new Promise((resolve, reject) => {
      if (this.#blockWrites.length === 0) setImmediate(() => this.#writeBlocks());
      this.#blockWrites.push({ slot: s, buf, resolve, reject });
    });
  }

  #writeBlocks(): void {
    const ready = this.#blockWrites.sort((a, b) => a.slot - b.slot);
    this.#blockWrites = [];
    let i = 0;
    while (i < ready.length) {
      let j = i + 1;
      // A short block (the disk's last) ends a run: the next slot does not follow its bytes.
      while (
        j < ready.length &&
        ready[j]!.slot === ready[j - 1]!.slot + 1 &&
        ready[j - 1]!.buf.length === this.#bs
      ) {
        j++;
      }
      const run = ready.slice(i, j);
      const at = this.#dataStart + run[0]!.slot * this.#bs;
      const write =
        run.length === 1
          ? this.#file.write(run[0]!.buf, at)
          : this.#file.writev!(
              run.map((w) => w.buf),
              at,
            );
      write.then(
        () => {
          for (const w of run) w.resolve();
        },
        (err: unknown) => {
          for (const w of run) w.reject(err);
        },
      );
      i = j;
    }
  }

  /**
   * Picks the slot for a new block and pins it: the next one of the ring past its end while the
   * file may grow, else the oldest one not pinned (a block hit since the last pass gets one more
   * round). -1 when none is free.
   */
  async #claimSlot(): Promise<number> {
    if (!this.#rechecking && this.#guard.stale) this.#track(this.#recheck());
    for (let steps = 0; steps <= 2 * this.#maxSlots + 1; steps++) {
      if (this.#head >= this.#limit) {
        this.#head = 0;
        // A full turn of the ring: look again whether the volume lets the file grow.
        if (this.#limit < this.#maxSlots && this.#shrinking === 0 && this.#guard.stale) {
          this.#limit = this.#maxSlots;
        }
        if (this.#limit === 0) return -1;
      }
      const s = this.#head;
      if (s === this.#fileSlots) {
        if (this.#pins[s]! > 0) {
          // A store cut off by a shrink is still writing there: do not grow over it yet.
          this.#limit = this.#fileSlots;
          continue;
        }
        // Growing costs the block and, every 128th slot, a new page of the slot table.
        const cost = this.#bs + (s % (4096 / ENTRY_BYTES) === 0 ? 4096 : 0);
        const ok = await this.#guard.allow(cost);
        if (this.#closed) {
          if (ok) this.#guard.refund(cost);
          return -1;
        }
        if (s !== this.#fileSlots || this.#head !== s || s >= this.#limit) {
          if (ok) this.#guard.refund(cost);
          continue;
        }
        if (ok) {
          this.#fileSlots++;
          this.#head++;
          this.#pins[s]!++;
          this.#growing.set(s, cost);
          return s;
        }
        this.#limit = this.#fileSlots;
        const deficit = this.#guard.deficit;
        if (deficit > 0) this.#track(this.shrink(deficit));
        continue;
      }
      this.#head++;
      if (this.#pins[s]! > 0) continue;
      if (this.#secondChance && this.#ref[s] === 1) {
        this.#ref[s] = 0;
        continue;
      }
      if (this.#slotBlock[s]! >= 0) {
        this.#blocksPruned++;
        this.#bytesPruned += this.#slotLen[s]!;
        this.#forget(s);
      }
      this.#pins[s]!++;
      return s;
    }
    return -1;
  }

  /** Removes slot `s`'s block from the index. */
  #forget(s: number): void {
    const b = this.#slotBlock[s]!;
    if (b < 0) return;
    if (this.#index.get(b) === s) this.#index.delete(b);
    this.#cachedBytes -= this.#slotLen[s]!;
    this.#slotBlock[s] = -1;
    this.#verified[s] = 0;
    this.#ref[s] = 0;
    this.#recent?.forget(s);
  }

  #unpin(s: number): void {
    if (--this.#pins[s]! === 0 && this.#unpinWaiters.length > 0) {
      const waiters = this.#unpinWaiters;
      this.#unpinWaiters = [];
      for (const w of waiters) w();
    }
  }

  /** Loads the missing blocks of `[from, to)` for a stream, in runs, in the background. */
  #startReadAhead(from: number, to: number): void {
    const end = Math.min(to, Math.ceil(this.size / this.#bs));
    for (let b = from; b < end; ) {
      if (this.#prefetching.size >= this.#maxReadAheadLoads) break;
      // Runs of at most half a window: the first window after a stream is found is two loads in
      // parallel, so the read that follows waits for the first half only.
      const n = Math.min(this.#missingRun(b, end), Math.ceil(this.#readAhead / 2));
      if (n === 0) {
        b++;
        continue;
      }
      // Each run of missing blocks is one source read.
      this.#readAheadLoads += n;
      // A failed read-ahead costs nothing: the read that wants the block loads it again.
      const p: Promise<void> = Promise.allSettled(this.#loadRun(b, n, true))
        .then(() => {})
        .finally(() => this.#prefetching.delete(p));
      this.#prefetching.add(p);
      b += n;
    }
  }

  /** Asks the volume again, and gives space back when it is below the floor. */
  async #recheck(): Promise<void> {
    this.#rechecking = true;
    try {
      await this.#guard.check();
      const deficit = this.#guard.deficit;
      if (deficit > 0) await this.shrink(deficit);
    } finally {
      this.#rechecking = false;
    }
  }

  /**
   * Writes slot `s`'s table entry soon, together with the entries of other stores: stores claim
   * slots in ring order, so their entries mostly lie side by side and a batch of them is one
   * write (a write per store was a fifth of the cost of a cold random read). The block is
   * served from its slot at once; the entry only matters to a restart, which checks every
   * block against its checksum on the first hit anyway, so an entry lost in a crash loses that block
   * from the cache and nothing else. One batch is written at a time, so that an older entry of
   * a slot never lands after a newer one.
   */
  #queueEntry(s: number, entry: Uint8Array): void {
    this.#pendingEntries.set(s, entry);
    if (this.#entryWrites !== undefined) return;
    const run = this.#writeEntries().finally(() => {
      this.#entryWrites = undefined;
    });
    this.#entryWrites = run;
    this.#track(run);
  }

  async #writeEntries(): Promise<void> {
    // Let the stores finishing about now join the batch.
    await new Promise<void>((resolve) => setTimeout(resolve, ENTRY_BATCH_MS));
    while (this.#pendingEntries.size > 0) {
      const slots = [...this.#pendingEntries.keys()].sort((a, b) => a - b);
      let i = 0;
      while (i < slots.length) {
        let j = i + 1;
        while (j < slots.length && slots[j] === slots[j - 1]! + 1) j++;
        const run = new Uint8Array((j - i) * ENTRY_BYTES);
        for (let k = i; k < j; k++) {
          run.set(this.#pendingEntries.get(slots[k]!)!, (k - i) * ENTRY_BYTES);
          this.#pendingEntries.delete(slots[k]!);
        }
        await this.#file.write(run, HEADER_BYTES + slots[i]! * ENTRY_BYTES);
        i = j;
      }
    }
  }

  #track(p: Promise<unknown>): void {
    const q = p.catch(() => {}).finally(() => this.#background.delete(q));
    this.#background.add(q);
  }

  /**
   * Gives back at least `bytes` of the volume (or all the cache has): drops the blocks of the
   * highest slots, waits for reads of them to finish, and truncates the file. The cache grows
   * again only while the volume keeps its floor. Resolves to the bytes freed.
   */
  async shrink(bytes: number): Promise<number> {
    if (this.#closed || bytes <= 0) return 0;
    const before = this.#fileSlots;
    const keep = Math.max(0, before - Math.ceil(bytes / this.#bs));
    if (keep >= before) return 0;
    this.#shrinking++;
    try {
      return await this.#shrinkTo(keep, before);
    } finally {
      this.#shrinking--;
    }
  }

  async #shrinkTo(keep: number, before: number): Promise<number> {
    this.#fileSlots = keep;
    this.#limit = Math.min(this.#limit, keep);
    if (this.#head > keep) this.#head = 0;
    for (let s = keep; s < before; s++) {
      if (this.#slotBlock[s]! >= 0) {
        this.#blocksPruned++;
        this.#bytesPruned += this.#slotLen[s]!;
        this.#forget(s);
      }
    }
    const busy = () => {
      for (let s = keep; s < before; s++) if (this.#pins[s]! > 0) return true;
      return false;
    };
    while (busy()) await new Promise<void>((resolve) => this.#unpinWaiters.push(resolve));
    // Slots cut off are emptied in the table too, so a restart does not look for them; after
    // any batch of entries being written, and without the entries waiting for those slots.
    while (this.#entryWrites !== undefined) await this.#entryWrites.catch(() => {});
    for (let s = keep; s < before; s++) this.#pendingEntries.delete(s);
    await this.#file.write(
      new Uint8Array((before - keep) * ENTRY_BYTES),
      HEADER_BYTES + keep * ENTRY_BYTES,
    );
    // No growth while shrinking; a concurrent shrink may have cut further.
    await this.#file.truncate(this.#dataStart + Math.min(this.#fileSlots, keep) * this.#bs);
    const freed = (before - keep) * this.#bs;
    this.#shrunkBytes += freed;
    return freed;
  }

  /** Current counters and sizes. */
  stats(): ReadCacheStats {
    return {
      hits: this.#hits,
      misses: this.#misses,
      sourceReads: this.#sourceReads,
      bytesFromSource: this.#bytesFromSource,
      bytesFromCache: this.#bytesFromCache,
      readAheadLoads: this.#readAheadLoads,
      streamedBlocks: this.#streamedBlocks,
      storesSkipped: this.#storesSkipped,
      zeroReads: this.#zeroReads,
      blocksPruned: this.#blocksPruned,
      bytesPruned: this.#bytesPruned,
      cachedBytes: this.#cachedBytes,
      fileBytes: this.#fileSlots * this.#bs,
      capacityBytes: this.#limit * this.#bs,
      maxBytes: this.#maxSlots * this.#bs,
      freeBytes: this.#guard.freeBytes,
      floorBytes: this.#guard.floorBytes,
      shrunkBytes: this.#shrunkBytes,
    };
  }

  /**
   * Resolves once every block loaded so far is stored in the cache file, or given up on (a full
   * volume, a failing file). Reads do not wait for their blocks to be stored; call this before
   * looking at the file or at {@link ReadCache.stats}' file figures.
   */
  async settle(): Promise<void> {
    while (
      this.#storing.size > 0 ||
      this.#prefetching.size > 0 ||
      this.#entryWrites !== undefined
    ) {
      await Promise.allSettled([...this.#prefetching, ...this.#background]);
    }
  }

  /**
   * Closes the cache file. Reads stop at once; blocks already loaded are stored first, so a
   * reopened cache has them. Calling it again returns the same promise.
   */
  close(): Promise<void> {
    this.#closeDone ??= this.#close();
    return this.#closeDone;
  }

  async #close(): Promise<void> {
    // Reads stop now; stores already started finish, so that the blocks read are kept.
    this.#closing = true;
    await this.settle();
    this.#closed = true;
    await Promise.allSettled([...this.#prefetching, ...this.#background]);
    await this.#flight.idle();
    for (const b of [...this.#streamed.keys()]) this.#unstream(b);
    await this.#file.close();
  }
}
