import { randomBytes } from 'node:crypto';
import {
  type BlockSource,
  checkReadRange,
  ErrorCode,
  IvmrError,
  isIvmrError,
  settleAll,
} from '@ivmr/core';
import { closedError, formatError, noSpaceError, readOnlyError } from '../errors.js';
import type { CacheFile, CacheFileSystem } from '../fs/cache-file-system.js';
import { nodeFileSystem } from '../fs/node-file-system.js';
import { RangeLocks } from '../util/range-locks.js';
import { RecentSlots } from '../util/recent-slots.js';
import { RwGate } from '../util/rw-gate.js';
import type { WritableBlockSource } from '../writable-block-source.js';
import { commitBytes, encodeCommit } from './commit-record.js';
import { toRuns } from './grain-run.js';
import { BASE, GrainTable, SparseGrainMap, ZERO } from './grain-table.js';
import { MetadataFile, overlayPaths } from './metadata-file.js';
import { SlotAllocator } from './slot-allocator.js';
import type { Superblock } from './superblock.js';

/**
 * How an overlay keeps writes.
 * - `persistent`: in files that survive restarts and crashes (instant recovery).
 * - `non-persistent`: in a scratch file deleted on close (sandbox, verification); `flush` does
 *   nothing, since the writes never outlive the overlay.
 * - `read-only`: writes, discards and resizes reject; an existing overlay is read as it was.
 */
export type OverlayMode = 'persistent' | 'non-persistent' | 'read-only';

/** Options of {@link WriteOverlay.open}. */
export interface WriteOverlayOptions {
  /** Folder of the overlay's files (created when missing). */
  dir: string;
  /** File name stem: `<name>.data`, `<name>.meta`, `<name>.map`. Default `overlay`. */
  name?: string;
  /** Default `persistent`. */
  mode?: OverlayMode;
  /**
   * Bytes per grain, the unit the overlay tracks: a power of two from 512 to 1 MiB, default
   * 4096. An existing overlay keeps the grain size it was made with; a different value here is
   * `IVMR_INVALID_ARGUMENT`.
   */
  grainSize?: number;
  /**
   * Called when the volume is full, with the bytes the failed operation needs; returns the
   * bytes it freed. The operation is retried once when it freed any. Wire the read cache here
   * (`(n) => readCache.shrink(n)`) so that it shrinks before a write fails.
   */
  reclaimSpace?: (bytes: number) => Promise<number>;
  /**
   * Journal bytes after which a flush writes a checkpoint of the grain table (and empties the
   * journal); at least twice the last checkpoint's size. Default 16 MiB.
   */
  checkpointAfterBytes?: number;
  /**
   * A read of slots written or read lately is done at once on the calling thread
   * (`CacheFile.readNow`, when the file layer has it): their pages are in the page cache, and the
   * thread-pool round trip of an asynchronous read is most of the cost of reading back what the
   * VM wrote. Lately: within the last half of this many milliseconds always, never longer ago
   * than all of it (as the read cache's option). 0 sends every read through the thread pool.
   * Default 30000.
   */
  syncReadWindowMs?: number;
  /** File layer (tests inject faults with it). Default: the real file system. */
  fs?: CacheFileSystem;
}

/**
 * Told about changes of an overlay, for hydration. Hooks run inside the overlay's critical
 * sections: they must be quick and must not call back into the overlay's write methods.
 */
export interface OverlayWatcher {
  /**
   * Bytes `[offset, offset + length)` changed (write, zeroing, discard). Called synchronously
   * before the change is acknowledged; must not throw.
   */
  changed?(offset: number, length: number): void;
  /** The disk's size changed (called before `resize` resolves); must not throw. */
  resized?(size: number): void;
  /**
   * Awaited by every flush after the overlay's data is synced and before its commit is
   * written; a rejection fails the flush (nothing is committed).
   */
  beforeCommit?(): Promise<void>;
  /** A flush committed (called after it is durable); must not throw. */
  committed?(): void;
}

/** Counters and sizes of an overlay. */
export interface OverlayStats {
  /** Bytes per grain. */
  readonly grainSize: number;
  /** Bytes of grains held in the overlay's data file (written and not discarded). */
  readonly usedBytes: number;
  /** Bytes of grains changed since the last flush: what a crash now could lose. */
  readonly dirtyBytes: number;
  /** Size of the data file (slots ever used, including free ones). */
  readonly dataFileBytes: number;
  /** Journal plus checkpoint bytes. */
  readonly metadataBytes: number;
  /** Writes acknowledged. */
  readonly writes: number;
  /** Bytes of the writes acknowledged. */
  readonly bytesWritten: number;
  /** Reads served. */
  readonly reads: number;
  /** Bytes of the reads served. */
  readonly bytesRead: number;
  /** Bytes read from the base source (reads and partial-grain merges). */
  readonly baseBytesRead: number;
  /** Flushes that committed something. */
  readonly flushes: number;
  /** Checkpoints of the grain table written (each empties the journal). */
  readonly checkpoints: number;
  /** Checkpoints that failed (the journal then keeps growing; nothing is lost). */
  readonly checkpointFailures: number;
  /** See `WriteOverlay.epoch`. */
  readonly epoch: number;
}

const MIN_GRAIN = 512;
const MAX_GRAIN = 1 << 20;
const DEFAULT_CHECKPOINT_AFTER = 16 << 20;
const DEFAULT_SYNC_READ_WINDOW_MS = 30_000;
/** Extra journal room the reclaim hook is asked for on top of a write's data. */
const RECLAIM_SLACK = 1 << 20;

interface Plan {
  grain: number;
  slot: number;
  fresh: boolean;
  pos: number;
  bytes: Uint8Array;
}

/**
 * The copy-on-write overlay of a virtual disk: every write goes to a sparse data file of
 * grain-sized slots, never to the base source; reads merge overlay and base at byte precision.
 * A partial-grain write merges with the grain's current bytes. `flush()` makes every
 * acknowledged write durable: it syncs the data file, then appends one checksummed commit record
 * to a journal and syncs it, so a crash at any moment leaves exactly the state of the last
 * completed flush. A write never overwrites a slot that a completed flush refers to, so nothing
 * flushed can be torn. The on-disk format is in FORMAT.md.
 *
 * The {@link verifier} changes exactly when a run that changed the overlay ended without a clean
 * `close()`, i.e. when a crash may have lost unflushed writes (the NFS COMMIT verifier).
 *
 * Closing the overlay does not close the base.
 */
export class WriteOverlay implements WritableBlockSource {
  readonly #base: BlockSource;
  readonly #fs: CacheFileSystem;
  readonly #mode: OverlayMode;
  #sealed = false;
  readonly #durable: boolean;
  readonly #grain: number;
  readonly #dataPath: string | undefined;
  readonly #reclaim: ((bytes: number) => Promise<number>) | undefined;
  readonly #checkpointAfter: number;
  readonly #table: GrainTable;
  /** Grains changed since the last commit, with their durable (committed) value. */
  readonly #dirty = new SparseGrainMap();
  readonly #slots: SlotAllocator;
  readonly #data: CacheFile | undefined;
  /** Slots of the data file written or read lately (see `syncReadWindowMs`). */
  readonly #recent: RecentSlots | undefined;
  readonly #meta: MetadataFile | undefined;
  readonly #gate = new RwGate();
  readonly #locks = new RangeLocks();
  readonly #watchers = new Set<OverlayWatcher>();
  #size: number;
  #baseLimit: number;
  #seq: number;
  #sizeDirty = false;
  /** Upper bound of the runs the next commit record holds. */
  #runBound = 0;
  #epoch: number;
  #verifier: Uint8Array;
  #dirtyMarked = false;
  #marking: Promise<void> | undefined;
  #broken: IvmrError | undefined;
  #closed = false;
  #liveSlots = 0;
  #activeReads = 0;
  #readsDrained: (() => void) | undefined;
  #writes = 0;
  #bytesWritten = 0;
  #reads = 0;
  #bytesRead = 0;
  #baseBytesRead = 0;
  #flushes = 0;
  #checkpoints = 0;
  #checkpointFailures = 0;

  private constructor(init: {
    base: BlockSource;
    fs: CacheFileSystem;
    mode: OverlayMode;
    grain: number;
    dataPath: string | undefined;
    reclaim: ((bytes: number) => Promise<number>) | undefined;
    checkpointAfter: number;
    syncReadWindowMs: number;
    table: GrainTable;
    slots: SlotAllocator;
    data: CacheFile | undefined;
    meta: MetadataFile | undefined;
    size: number;
    baseLimit: number;
    seq: number;
    epoch: number;
    verifier: Uint8Array;
  }) {
    this.#base = init.base;
    this.#fs = init.fs;
    this.#mode = init.mode;
    this.#durable = init.mode === 'persistent';
    this.#grain = init.grain;
    this.#dataPath = init.dataPath;
    this.#reclaim = init.reclaim;
    this.#checkpointAfter = init.checkpointAfter;
    this.#table = init.table;
    this.#slots = init.slots;
    this.#data = init.data;
    this.#recent =
      init.data?.readNow !== undefined && init.syncReadWindowMs > 0
        ? new RecentSlots(init.syncReadWindowMs)
        : undefined;
    this.#meta = init.meta;
    this.#size = init.size;
    this.#baseLimit = init.baseLimit;
    this.#seq = init.seq;
    this.#epoch = init.epoch;
    this.#verifier = init.verifier;
    for (const [, v] of init.table.entries()) if (v >= 0) this.#liveSlots++;
  }

  /**
   * Opens the overlay `options.name` in `options.dir` over `base`, creating it when missing
   * (persistent), starting an empty scratch one (non-persistent), or reading an existing one or
   * none (read-only). A persistent overlay left by a crash is replayed to its last completed
   * flush and gets a new verifier. Its base must have the size the overlay was made with.
   */
  static async open(base: BlockSource, options: WriteOverlayOptions): Promise<WriteOverlay> {
    const fs = options.fs ?? nodeFileSystem;
    const mode = options.mode ?? 'persistent';
    const name = options.name ?? 'overlay';
    const grainOption = options.grainSize;
    if (
      grainOption !== undefined &&
      (!Number.isInteger(grainOption) ||
        grainOption < MIN_GRAIN ||
        grainOption > MAX_GRAIN ||
        (grainOption & (grainOption - 1)) !== 0)
    ) {
      throw new IvmrError(
        ErrorCode.INVALID_ARGUMENT,
        `grain size must be a power of two from ${MIN_GRAIN} to ${MAX_GRAIN}, got ${grainOption}`,
      );
    }
    if (!['persistent', 'non-persistent', 'read-only'].includes(mode)) {
      throw new IvmrError(ErrorCode.INVALID_ARGUMENT, `unknown overlay mode ${String(mode)}`);
    }
    const paths = overlayPaths(options.dir, name);
    const table = new GrainTable();
    const common = {
      base,
      fs,
      mode,
      reclaim: options.reclaimSpace,
      checkpointAfter: options.checkpointAfterBytes ?? DEFAULT_CHECKPOINT_AFTER,
      syncReadWindowMs: options.syncReadWindowMs ?? DEFAULT_SYNC_READ_WINDOW_MS,
      table,
    };

    if (mode === 'non-persistent') {
      await fs.mkdir(options.dir);
      const dataPath = `${options.dir}/${name}.sandbox.data`;
      await fs.unlink(dataPath);
      const data = await fs.open(dataPath, 'create');
      return new WriteOverlay({
        ...common,
        grain: grainOption ?? 4096,
        dataPath,
        slots: new SlotAllocator(),
        data,
        meta: undefined,
        size: base.size,
        baseLimit: base.size,
        seq: 0,
        epoch: 1,
        verifier: randomBytes(8),
      });
    }

    const exists = await fs.exists(paths.meta);
    if (!exists && mode === 'read-only') {
      return new WriteOverlay({
        ...common,
        grain: grainOption ?? 4096,
        dataPath: undefined,
        slots: new SlotAllocator(),
        data: undefined,
        meta: undefined,
        size: base.size,
        baseLimit: base.size,
        seq: 0,
        epoch: 1,
        verifier: new Uint8Array(8),
      });
    }

    if (!exists) {
      await fs.mkdir(options.dir);
      const grain = grainOption ?? 4096;
      const data = await fs.open(paths.data, 'create');
      try {
        await data.truncate(0);
        const sb: Superblock = {
          generation: 1,
          dirty: false,
          grainSize: grain,
          baseSize: base.size,
          epoch: 1,
          verifier: randomBytes(8),
          id: randomBytes(16),
        };
        const meta = await MetadataFile.create(fs, paths, sb);
        return new WriteOverlay({
          ...common,
          grain,
          dataPath: paths.data,
          slots: new SlotAllocator(),
          data,
          meta,
          size: base.size,
          baseLimit: base.size,
          seq: 0,
          epoch: sb.epoch,
          verifier: sb.verifier,
        });
      } catch (err) {
        await data.close();
        throw err;
      }
    }

    const readOnly = mode === 'read-only';
    const { meta, state } = await MetadataFile.open(fs, paths, table, readOnly);
    let data: CacheFile | undefined;
    try {
      const sb = meta.superblock;
      if (grainOption !== undefined && grainOption !== sb.grainSize) {
        throw new IvmrError(
          ErrorCode.INVALID_ARGUMENT,
          `overlay ${paths.meta} has ${sb.grainSize}-byte grains, not ${grainOption}`,
          { details: { path: paths.meta } },
        );
      }
      if (sb.baseSize !== base.size) {
        throw new IvmrError(
          ErrorCode.INVALID_ARGUMENT,
          `overlay ${paths.meta} was made over a ${sb.baseSize}-byte base, this base has ${base.size} bytes`,
          { details: { path: paths.meta, expected: sb.baseSize, actual: base.size } },
        );
      }
      const slots = slotsOf(table);
      if (slots.hwm > 0 && !(await fs.exists(paths.data))) {
        throw formatError(`${paths.data}: missing, yet the overlay holds data`, {
          path: paths.data,
        });
      }
      data = await fs.open(paths.data, readOnly ? 'read' : 'create');
      let { epoch, verifier } = sb;
      if (sb.dirty) {
        // The last run changed the overlay and did not close cleanly: unflushed writes may
        // be lost, so clients must resend what they did not see committed.
        epoch++;
        verifier = randomBytes(8);
      }
      if (!readOnly) {
        // Slots past the last one in use hold only writes no flush committed.
        await data.truncate(slots.hwm * sb.grainSize);
        if (sb.dirty) await meta.writeSuperblock({ ...sb, dirty: false, epoch, verifier });
      }
      return new WriteOverlay({
        ...common,
        grain: sb.grainSize,
        dataPath: paths.data,
        slots,
        data,
        meta,
        size: state.size,
        baseLimit: state.baseLimit,
        seq: state.seq,
        epoch,
        verifier,
      });
    } catch (err) {
      await data?.close();
      await meta.close();
      throw err;
    }
  }

  /** Commits made so far (the journal's sequence number); unchanged by a flush with nothing to do. */
  get commitSeq(): number {
    return this.#seq;
  }

  /** Size of the virtual disk in bytes. */
  get size(): number {
    return this.#size;
  }

  /** Bytes per grain, fixed when the overlay was made. */
  get grainSize(): number {
    return this.#grain;
  }

  /** The mode the overlay was opened in. */
  get mode(): OverlayMode {
    return this.#mode;
  }

  /**
   * +1 every time {@link verifier} changes (a crash of a run that had changed the overlay).
   * Starts at 1.
   */
  get epoch(): number {
    return this.#epoch;
  }

  /**
   * The 8-byte write verifier (a copy): it changes exactly when the previous run changed the
   * overlay and did not close cleanly, so unflushed writes may have been lost. An NFS server
   * returns it from WRITE and COMMIT.
   */
  get verifier(): Uint8Array {
    return this.#verifier.slice();
  }

  /**
   * Reads `length` bytes at `offset` (any alignment): the overlay's bytes where the VM wrote,
   * zeros where it zeroed, the base's elsewhere. `into` as in the `BlockSource` contract; a read
   * past `size` is `IVMR_RANGE`.
   */
  async read(offset: number, length: number, into?: Uint8Array): Promise<Uint8Array> {
    if (this.#closed) throw closedError('overlay');
    checkReadRange(this.#size, offset, length, into);
    const out = into ? into.subarray(0, length) : new Uint8Array(length);
    if (length === 0) return out;
    const g = this.#grain;
    this.#activeReads++;
    try {
      const release = await this.#locks.lock(
        Math.floor(offset / g),
        Math.floor((offset + length - 1) / g),
        false,
      );
      try {
        await this.#readLocked(offset, out);
      } finally {
        release();
      }
    } finally {
      if (--this.#activeReads === 0) this.#readsDrained?.();
    }
    this.#reads++;
    this.#bytesRead += length;
    return out;
  }

  /**
   * Writes `data` at `offset`. Resolves when the write is acknowledged (visible to reads, and
   * durable after the next `flush()`). `IVMR_NOSPC` when the volume is full even after the
   * `reclaimSpace` hook ran: nothing of this write is acknowledged, nothing earlier is lost.
   */
  async write(offset: number, data: Uint8Array): Promise<void> {
    this.#checkMutable('write', offset, data.length);
    if (data.length === 0) return;
    await this.#gate.shared(async () => {
      this.#checkMutable('write', offset, data.length);
      await this.#markDirty();
      await this.#lockedChange('write', offset, data.length, () => this.#put(offset, data));
    });
    this.#writes++;
    this.#bytesWritten += data.length;
  }

  /**
   * Makes `[offset, offset + length)` read as the base again (trim, UNMAP). Grains wholly inside
   * the range leave the overlay; the bytes of partly covered grains are rewritten with the base's.
   * Durable after the next flush.
   */
  async discard(offset: number, length: number): Promise<void> {
    await this.#clear(offset, length, BASE);
  }

  /**
   * Makes `[offset, offset + length)` read as zeros. Grains wholly inside the range take no data
   * slot. Durable after the next flush.
   */
  async writeZeroes(offset: number, length: number): Promise<void> {
    await this.#clear(offset, length, ZERO);
  }

  /**
   * Makes every change acknowledged before the call durable. Concurrent writes wait while the
   * flush runs. Does nothing in non-persistent mode. A watcher's `beforeCommit` rejection fails
   * the flush; an I/O failure while committing leaves the overlay failed (every later change and
   * flush rejects with it; reopening replays the last good state).
   */
  async flush(): Promise<void> {
    if (this.#closed) throw closedError('overlay');
    if (!this.#durable) return;
    await this.#gate.exclusive(() => this.#commit());
  }

  /**
   * Sets the disk's size; durable when it resolves (it flushes). Bytes past the old size read as
   * zeros after growing; shrinking drops the overlay's grains past the new size and hides the
   * base's bytes there for good.
   */
  async resize(size: number): Promise<void> {
    this.#checkMutable('resize', 0, 0);
    if (!Number.isSafeInteger(size) || size < 0) {
      throw new IvmrError(
        ErrorCode.INVALID_ARGUMENT,
        `disk size must be a whole number >= 0, got ${size}`,
      );
    }
    await this.#gate.exclusive(async () => {
      this.#checkMutable('resize', 0, 0);
      if (size === this.#size) return;
      await this.#markDirty();
      await this.#withReclaim(0, () => this.#resizeLocked(size));
      for (const w of this.#watchers) w.resized?.(size);
      await this.#commit();
    });
  }

  /** Registers a watcher; returns the function that removes it. */
  watch(watcher: OverlayWatcher): () => void {
    this.#watchers.add(watcher);
    return () => this.#watchers.delete(watcher);
  }

  /** True when some byte of `[offset, offset + length)` was changed since the last flush. */
  hasUnflushed(offset: number, length: number): boolean {
    if (!this.#durable || length <= 0 || this.#dirty.size === 0) return false;
    const g = this.#grain;
    return this.#dirty.anyIn(Math.floor(offset / g), Math.floor((offset + length - 1) / g));
  }

  /**
   * Flushes, then runs `fn` while no write, discard or resize runs or starts (reads go on).
   * For a switch-over: whatever `fn` reads is the final, durable state.
   */
  async whileQuiesced<T>(fn: () => Promise<T>): Promise<T> {
    if (this.#closed) throw closedError('overlay');
    return this.#gate.exclusive(async () => {
      await this.#commit();
      return fn();
    });
  }

  /**
   * Refuses every later write, discard and resize, as a `read-only` overlay does; reads, flush
   * and close go on. Call it inside {@link whileQuiesced} to end writing at a switch-over: the
   * writes that wait for the pause are then refused (never acknowledged), so none is lost.
   */
  seal(): void {
    this.#sealed = true;
  }

  /** True after {@link seal}. */
  get sealed(): boolean {
    return this.#sealed;
  }

  /** Current counters and sizes. */
  stats(): OverlayStats {
    return {
      grainSize: this.#grain,
      usedBytes: this.#liveSlots * this.#grain,
      dirtyBytes: this.#dirty.size * this.#grain,
      dataFileBytes: this.#slots.hwm * this.#grain,
      metadataBytes: this.#meta ? this.#meta.journalBytes + this.#meta.mapBytes : 0,
      writes: this.#writes,
      bytesWritten: this.#bytesWritten,
      reads: this.#reads,
      bytesRead: this.#bytesRead,
      baseBytesRead: this.#baseBytesRead,
      flushes: this.#flushes,
      checkpoints: this.#checkpoints,
      checkpointFailures: this.#checkpointFailures,
      epoch: this.#epoch,
    };
  }

  /**
   * Flushes (persistent mode), records a clean shutdown so the verifier stays, and closes the
   * files; a non-persistent overlay deletes its scratch file. Waits for running calls. Calls
   * after close reject with `IVMR_CLOSED`; a second close does nothing.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    await this.#gate.exclusive(async () => {
      if (this.#closed) return;
      this.#closed = true;
      let failure: unknown;
      try {
        if (this.#durable && this.#broken === undefined) {
          await this.#commit();
          if (this.#dirtyMarked) {
            await this.#meta!.writeSuperblock({ ...this.#meta!.superblock, dirty: false });
          }
        }
      } catch (err) {
        failure = err;
      }
      if (this.#activeReads > 0) {
        await new Promise<void>((resolve) => {
          this.#readsDrained = resolve;
        });
      }
      await this.#data?.close();
      await this.#meta?.close();
      if (this.#mode === 'non-persistent' && this.#dataPath) await this.#fs.unlink(this.#dataPath);
      if (failure !== undefined) throw failure;
    });
  }

  #checkMutable(what: string, offset: number, length: number): void {
    if (this.#closed) throw closedError('overlay');
    if (this.#mode === 'read-only' || this.#sealed) throw readOnlyError(what);
    if (this.#broken) throw this.#broken;
    if (!Number.isSafeInteger(offset) || offset < 0) {
      throw new IvmrError(
        ErrorCode.INVALID_ARGUMENT,
        `${what} offset must be a whole number >= 0, got ${offset}`,
      );
    }
    if (!Number.isSafeInteger(length) || length < 0) {
      throw new IvmrError(
        ErrorCode.INVALID_ARGUMENT,
        `${what} length must be a whole number >= 0, got ${length}`,
      );
    }
    if (offset + length > this.#size) {
      throw new IvmrError(
        ErrorCode.RANGE,
        `${what} of ${length} bytes at offset ${offset} passes the end of the ${this.#size}-byte disk`,
        { details: { offset, length, size: this.#size } },
      );
    }
  }

  /** Records durably, once per run, that this run changes the overlay (see `verifier`). */
  #markDirty(): Promise<void> | undefined {
    if (!this.#durable || this.#dirtyMarked) return undefined;
    this.#marking ??= this.#meta!.writeSuperblock({ ...this.#meta!.superblock, dirty: true }).then(
      () => {
        this.#dirtyMarked = true;
      },
      (err: unknown) => {
        this.#marking = undefined;
        throw err;
      },
    );
    return this.#marking;
  }

  /** Runs change `what` of `[offset, offset + length)` holding its grains exclusively. */
  async #lockedChange(
    what: string,
    offset: number,
    length: number,
    fn: () => Promise<void>,
  ): Promise<void> {
    const g = this.#grain;
    const release = await this.#locks.lock(
      Math.floor(offset / g),
      Math.floor((offset + length - 1) / g),
      true,
    );
    try {
      await this.#withReclaim(length, fn);
      for (const w of this.#watchers) w.changed?.(offset, length);
    } catch (err) {
      if (!isIvmrError(err, ErrorCode.NO_SPACE)) throw err;
      throw noSpaceError(
        `${what} of ${length} bytes at offset ${offset}: the cache volume is full; nothing of it was acknowledged`,
        { ...err.details, offset, length },
        err,
      );
    } finally {
      release();
    }
  }

  /** Runs `fn`; on `IVMR_NOSPC` asks the reclaim hook for room and runs it once more. */
  async #withReclaim(bytes: number, fn: () => Promise<void>): Promise<void> {
    try {
      await fn();
    } catch (err) {
      if (!isIvmrError(err, ErrorCode.NO_SPACE) || this.#reclaim === undefined) throw err;
      const freed = await this.#reclaim(bytes + RECLAIM_SLACK);
      if (freed <= 0) throw err;
      await fn();
    }
  }

  async #readLocked(offset: number, out: Uint8Array): Promise<void> {
    const g = this.#grain;
    const end = offset + out.length;
    const pending: Promise<void>[] = [];
    let pos = offset;
    while (pos < end) {
      const first = Math.floor(pos / g);
      const v = this.#table.get(first);
      let k = 1;
      let runEnd = Math.min((first + 1) * g, end);
      while (runEnd < end) {
        const next = this.#table.get(first + k);
        if (v < 0 ? next !== v : next !== v + k) break;
        k++;
        runEnd = Math.min((first + k) * g, end);
      }
      const dst = out.subarray(pos - offset, runEnd - offset);
      if (v === ZERO) dst.fill(0);
      else if (v === BASE) pending.push(this.#readBase(pos, dst));
      else pending.push(this.#readSlot(v * g + (pos - first * g), dst));
      pos = runEnd;
    }
    await settleAll(pending);
  }

  /** Base bytes at `offset`; zeros past the base's end or the base limit (set by shrinking). */
  async #readBase(offset: number, out: Uint8Array): Promise<void> {
    const limit = Math.min(this.#baseLimit, this.#base.size);
    const n = Math.max(0, Math.min(out.length, limit - offset));
    if (n > 0) {
      await this.#base.read(offset, n, out.subarray(0, n));
      this.#baseBytesRead += n;
    }
    if (n < out.length) out.fill(0, n);
  }

  /**
   * Bytes of the data file at `position`: at once when every slot they lie in was written or
   * read lately, else through the thread pool. A full read makes its whole slots recent.
   */
  async #readSlot(position: number, out: Uint8Array): Promise<void> {
    const g = this.#grain;
    const first = Math.floor(position / g);
    const count = Math.floor((position + out.length - 1) / g) - first + 1;
    const n = this.#recent?.has(first, count)
      ? this.#data!.readNow!(out, position)
      : await this.#data!.read(out, position);
    if (n === out.length) this.#markWhole(position, n);
    else out.fill(0, n);
  }

  /** Marks the slots wholly inside `[position, position + length)` of the data file recent. */
  #markWhole(position: number, length: number): void {
    if (this.#recent === undefined) return;
    const g = this.#grain;
    const first = Math.ceil(position / g);
    const end = Math.floor((position + length) / g);
    this.#recent.mark(first, end - first);
  }

  /** The whole content of grain `g` (value `v`) into `out` (one grain long). */
  async #readGrain(g: number, v: number, out: Uint8Array): Promise<void> {
    if (v === ZERO) out.fill(0);
    else if (v === BASE) await this.#readBase(g * this.#grain, out);
    else await this.#readSlot(v * this.#grain, out);
  }

  /** True when slot `v` of grain `g` is referred to by no commit, so it may be overwritten. */
  #isOpen(g: number, v: number): boolean {
    if (v < 0) return false;
    if (!this.#durable) return true;
    const durable = this.#dirty.get(g);
    return durable !== undefined && durable !== v;
  }

  /** Writes `data` at `offset` (grains locked by the caller). */
  #put(offset: number, data: Uint8Array): Promise<void> {
    return this.#putPieces([[offset, data]], 0);
  }

  /**
   * Writes pieces `[offset, bytes]` (each in grains of its own: no two pieces may share a grain)
   * in grains the caller locked, as one change: journal room for
   * their commit (plus `extraRuns` runs the caller will add) is reserved and every new slot is
   * written before anything becomes visible, so running out of space changes nothing.
   */
  async #putPieces(pieces: [number, Uint8Array][], extraRuns: number): Promise<void> {
    const g = this.#grain;
    const plans: Plan[] = [];
    const fresh: number[] = [];
    let bound = extraRuns;
    try {
      for (const [offset, data] of pieces) {
        const end = offset + data.length;
        for (let grain = Math.floor(offset / g); grain * g < end; grain++) {
          const start = grain * g;
          const lo = Math.max(offset, start);
          const hi = Math.min(end, start + g);
          const piece = data.subarray(lo - offset, hi - offset);
          const v = this.#table.get(grain);
          if (this.#isOpen(grain, v)) {
            plans.push({ grain, slot: v, fresh: false, pos: v * g + (lo - start), bytes: piece });
            continue;
          }
          const slot = this.#slots.alloc();
          fresh.push(slot);
          let bytes = piece;
          if (lo !== start || (hi !== start + g && hi < this.#size)) {
            bytes = new Uint8Array(g);
            await this.#readGrain(grain, v, bytes);
            bytes.set(piece, lo - start);
          }
          plans.push({ grain, slot, fresh: true, pos: slot * g, bytes });
        }
      }
      bound += fresh.length;
      this.#runBound += bound;
      if (this.#durable) await this.#meta!.reserve(commitBytes(this.#runBound, true));
      await this.#writePlans(plans);
    } catch (err) {
      this.#runBound -= bound;
      for (const s of fresh) this.#slots.release(s);
      throw err;
    }
    for (const p of plans) if (p.fresh) this.#setGrain(p.grain, p.slot);
  }

  /**
   * Writes the planned pieces: fresh slots first, since only they can need new space, then the
   * pieces that overwrite open slots in place; so a write that fails for lack of space has
   * changed nothing a read can see.
   */
  async #writePlans(plans: Plan[]): Promise<void> {
    await this.#writeRuns(plans.filter((p) => p.fresh));
    await this.#writeRuns(plans.filter((p) => !p.fresh));
  }

  /** Writes pieces, one system call per run of adjacent file and memory bytes. */
  async #writeRuns(plans: Plan[]): Promise<void> {
    const writes: Promise<void>[] = [];
    let i = 0;
    while (i < plans.length) {
      const head = plans[i]!.bytes;
      let len = head.length;
      let j = i + 1;
      while (j < plans.length) {
        const b = plans[j]!.bytes;
        if (
          plans[j]!.pos !== plans[i]!.pos + len ||
          b.buffer !== head.buffer ||
          b.byteOffset !== head.byteOffset + len
        ) {
          break;
        }
        len += b.length;
        j++;
      }
      const bytes = new Uint8Array(head.buffer, head.byteOffset, len);
      const pos = plans[i]!.pos;
      const write = this.#data!.write(bytes, pos);
      writes.push(this.#recent ? write.then(() => this.#markWhole(pos, len)) : write);
      i = j;
    }
    // Every write settles before a failure is reported: the caller then frees the fresh slots
    // and may retry into them, so a write of this attempt still in flight would land over the
    // retry's bytes (or another grain's) later.
    await settleAll(writes);
  }

  /** Sets grain `g` to `v`, keeping slot accounting: a slot no commit refers to is freed now. */
  #setGrain(g: number, v: number): void {
    const old = this.#table.set(g, v);
    if (old >= 0) this.#liveSlots--;
    if (v >= 0) this.#liveSlots++;
    if (!this.#durable) {
      if (old >= 0) this.#slots.release(old);
      return;
    }
    const durable = this.#dirty.get(g);
    if (durable === undefined) this.#dirty.set(g, old);
    else if (old >= 0 && old !== durable) this.#slots.release(old);
  }

  async #clear(offset: number, length: number, kind: number): Promise<void> {
    const what = kind === BASE ? 'discard' : 'write-zeroes';
    this.#checkMutable(what, offset, length);
    if (length === 0) return;
    await this.#gate.shared(async () => {
      this.#checkMutable(what, offset, length);
      await this.#markDirty();
      await this.#lockedChange(what, offset, length, () => this.#clearLocked(offset, length, kind));
    });
  }

  async #clearLocked(offset: number, length: number, kind: number): Promise<void> {
    const g = this.#grain;
    const end = offset + length;
    // Whole grains: from the first grain starting at or after `offset` to the last one ending
    // at or before `end` (the disk's short last grain counts as whole when `end` is the size).
    const wholeFirst = Math.ceil(offset / g);
    const wholeLast = (end >= this.#size ? Math.ceil(end / g) : Math.floor(end / g)) - 1;
    const edges: [number, number][] = [];
    if (wholeFirst > wholeLast) {
      // No whole grain: the range is inside one grain or spans the boundary of two.
      const boundary = (Math.floor(offset / g) + 1) * g;
      if (end <= boundary) edges.push([offset, end]);
      else edges.push([offset, boundary], [boundary, end]);
    } else {
      if (offset < wholeFirst * g) edges.push([offset, wholeFirst * g]);
      if (end > (wholeLast + 1) * g) edges.push([(wholeLast + 1) * g, end]);
    }
    // The whole grains that change, and how many separate runs they can add to the commit.
    const changing = (grain: number) => this.#table.get(grain) !== kind;
    const held: number[] = [];
    let segments = 0;
    if (kind === BASE) {
      for (const [grain] of this.#table.entries(wholeFirst)) {
        if (grain > wholeLast) break;
        if (held.length === 0 || held.at(-1) !== grain - 1) segments++;
        held.push(grain);
      }
    } else {
      for (let grain = wholeFirst; grain <= wholeLast; grain++) {
        if (changing(grain) && (grain === wholeFirst || !changing(grain - 1))) segments++;
      }
    }
    const pieces: [number, Uint8Array][] = [];
    for (const [lo, hi] of edges) {
      if (!changing(Math.floor(lo / g))) continue;
      const bytes = new Uint8Array(hi - lo);
      if (kind === BASE) await this.#readBase(lo, bytes);
      pieces.push([lo, bytes]);
    }
    await this.#putPieces(pieces, segments > 0 ? segments + 2 : 0);
    if (kind === ZERO) {
      for (let grain = wholeFirst; grain <= wholeLast; grain++) {
        if (changing(grain)) this.#setGrain(grain, ZERO);
      }
    } else {
      for (const grain of held) this.#setGrain(grain, BASE);
    }
  }

  /** Changes the size (the gate is held exclusively). */
  async #resizeLocked(size: number): Promise<void> {
    const g = this.#grain;
    const old = this.#size;
    const cut: number[] = [];
    if (size < old) for (const [grain] of this.#table.entries(Math.ceil(size / g))) cut.push(grain);
    // Room for the commit that ends the resize, before anything changes.
    if (this.#durable) {
      await this.#meta!.reserve(commitBytes(this.#runBound + cut.length + 2, true));
    }
    if (size < old) {
      this.#runBound += cut.length;
      for (const grain of cut) {
        const release = await this.#locks.lock(grain, grain, true);
        this.#setGrain(grain, BASE);
        release();
      }
      this.#baseLimit = Math.min(this.#baseLimit, size);
      this.#size = size;
    } else {
      this.#size = size;
      // The grain holding the old end may keep bytes past it (stale ones, or ones hidden by an
      // earlier shrink): zero them, so that grown bytes read as zeros. Base bytes past the old
      // end are hidden by the base limit, which never exceeds the size.
      const straddler = Math.floor(old / g);
      if (old % g !== 0 && this.#table.get(straddler) >= 0) {
        const end = Math.min((straddler + 1) * g, size);
        const release = await this.#locks.lock(straddler, straddler, true);
        try {
          await this.#put(old, new Uint8Array(end - old));
        } catch (err) {
          this.#size = old;
          throw err;
        } finally {
          release();
        }
      }
    }
    this.#sizeDirty = true;
  }

  /** Commits every change made so far (the gate is held exclusively). */
  async #commit(): Promise<void> {
    if (!this.#durable) return;
    if (this.#broken) throw this.#broken;
    if (this.#dirty.size === 0 && !this.#sizeDirty) return;
    const changed: [number, number][] = [];
    for (const [grain, durable] of this.#dirty.entries()) {
      const v = this.#table.get(grain);
      if (v !== durable) changed.push([grain, v]);
    }
    const record = encodeCommit({
      seq: this.#seq + 1,
      runs: [...toRuns(changed)],
      size: this.#sizeDirty ? { size: this.#size, baseLimit: this.#baseLimit } : undefined,
    });
    const meta = this.#meta!;
    await this.#withReclaim(record.length, () => meta.reserve(record.length));
    try {
      await this.#data!.sync();
    } catch (err) {
      throw this.#fail(err);
    }
    for (const w of this.#watchers) await w.beforeCommit?.();
    try {
      await meta.append(record);
    } catch (err) {
      throw this.#fail(err);
    }
    this.#seq++;
    for (const [grain, durable] of this.#dirty.entries()) {
      if (durable >= 0 && durable !== this.#table.get(grain)) this.#slots.release(durable);
    }
    this.#dirty.clear();
    this.#sizeDirty = false;
    this.#runBound = 0;
    this.#flushes++;
    for (const w of this.#watchers) w.committed?.();
    if (meta.journalBytes > Math.max(this.#checkpointAfter, 2 * meta.mapBytes)) {
      try {
        await meta.checkpoint(this.#table, {
          seq: this.#seq,
          size: this.#size,
          baseLimit: this.#baseLimit,
        });
        this.#checkpoints++;
      } catch {
        // The commit itself is durable; the journal simply keeps growing until a checkpoint
        // succeeds (a full volume is the usual cause).
        this.#checkpointFailures++;
      }
    }
  }

  /** Puts the overlay in the failed state after a sync or commit write failed. */
  #fail(err: unknown): IvmrError {
    const cause = isIvmrError(err) ? err : undefined;
    this.#broken = new IvmrError(
      cause?.code === ErrorCode.NO_SPACE ? ErrorCode.NO_SPACE : ErrorCode.IO,
      `overlay commit failed; reopen the overlay to continue from its last flush: ${
        err instanceof Error ? err.message : String(err)
      }`,
      { cause: err, details: cause?.details ? { ...cause.details } : {} },
    );
    return this.#broken;
  }
}

/** The slot allocator of a replayed table: every slot up to the highest in use; the rest free. */
function slotsOf(table: GrainTable): SlotAllocator {
  let hwm = 0;
  for (const [, v] of table.entries()) if (v >= hwm) hwm = v + 1;
  const used = new Uint8Array(hwm);
  for (const [, v] of table.entries()) if (v >= 0) used[v] = 1;
  const free: number[] = [];
  for (let s = hwm - 1; s >= 0; s--) if (used[s] === 0) free.push(s);
  return new SlotAllocator(hwm, free);
}
