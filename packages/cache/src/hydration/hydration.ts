import { setTimeout as sleep } from 'node:timers/promises';
import { type BlockSource, ErrorCode, IvmrError } from '@ivmr/core';
import { closedError } from '../errors.js';
import type { CacheFile, CacheFileSystem } from '../fs/cache-file-system.js';
import { nodeFileSystem } from '../fs/node-file-system.js';
import type { OverlayWatcher } from '../overlay/write-overlay.js';
import { isAllZero } from '../util/binary.js';
import { ChunkSet } from './chunk-set.js';
import { type HydrationState, readProgress, writeProgress } from './progress-file.js';
import { RateLimiter } from './rate-limiter.js';

/**
 * What hydration copies: any block source. A source that changes (the write overlay) also
 * offers the optional members, so that changes are copied again and only durable bytes reach
 * the target.
 */
export interface HydrationSource extends BlockSource {
  /** Registers for change notices (see `WriteOverlay.watch`). */
  watch?(watcher: OverlayWatcher): () => void;
  /** True when some byte of the range was changed since the last flush. */
  hasUnflushed?(offset: number, length: number): boolean;
  /** Flushes, then runs `fn` while no change runs or starts. */
  whileQuiesced?<T>(fn: () => Promise<T>): Promise<T>;
  /** Commits made so far. */
  readonly commitSeq?: number;
}

/** Options of {@link startHydration}. */
export interface HydrationOptions {
  /** Bytes per second read from the source (and written); 0 or absent = no limit. */
  rateBytesPerSec?: number;
  /** Unit of copying and change tracking: a power of two from 4 KiB to 64 MiB; default 1 MiB. */
  chunkSize?: number;
  /**
   * Called after every chunk and at every phase change. The object is fresh each time. Not
   * called at all when absent (no cost).
   */
  onProgress?: (progress: HydrationProgress) => void;
  /** Where progress is saved; default `<targetPath>.hydration.json`. */
  progressPath?: string;
  /** Bytes copied between two periodic saves of progress; default 256 MiB. */
  saveEveryBytes?: number;
  /**
   * How long `switchOver` lets changed chunks be copied while writes go on before it pauses
   * them for the final pass, in milliseconds; default 10000.
   */
  catchUpMs?: number;
  /** File layer; default the real file system. */
  fs?: CacheFileSystem;
}

/**
 * - `copying`: the first pass over the disk.
 * - `mirroring`: the first pass is done; changed chunks are copied again as they are flushed.
 * - `switching`: `switchOver()` runs the final pass with writes paused.
 * - `done`: the target equals the disk as of the switch-over.
 * - `stopped`, `failed`: no longer running.
 */
export type HydrationPhase = 'copying' | 'mirroring' | 'switching' | 'done' | 'stopped' | 'failed';

/** A progress report. */
export interface HydrationProgress {
  /** Where the hydration is (see {@link HydrationPhase}). */
  readonly phase: HydrationPhase;
  /** Size of the disk. */
  readonly totalBytes: number;
  /** Bytes of the disk the first pass has passed. */
  readonly copiedBytes: number;
  /** Bytes in chunks waiting to be copied again (changed after their copy). */
  readonly dirtyBytes: number;
  /** Bytes read from the source in this run. */
  readonly bytesRead: number;
  /** Bytes written to the target in this run (all-zero chunks of the first pass are skipped). */
  readonly bytesWritten: number;
  /** Where this run started: bytes a saved progress let it skip. */
  readonly resumedFromBytes: number;
  /** Bytes per second since this run started. */
  readonly bytesPerSec: number;
  /** `pause()` holds the copy. */
  readonly paused: boolean;
}

/** A running hydration; see {@link startHydration}. */
export interface Hydration {
  /**
   * Resolves when the first pass has copied the whole disk (the target then keeps following
   * changes); rejects when the hydration fails or is stopped first.
   */
  readonly done: Promise<void>;
  /** Stops copying after the chunk in progress; changes are still tracked. */
  pause(): void;
  /** Continues after {@link pause}. */
  resume(): void;
  /** Changes the rate limit (bytes per second; 0 = none). */
  setRate(bytesPerSec: number): void;
  /**
   * Finishes: waits for the first pass, copies changed chunks while writes go on, then pauses
   * the source's writes (`whileQuiesced`), copies the last changed chunks, syncs the target and
   * runs `onSwitched` (still with writes paused: redirect I/O to the target there). Then the
   * target equals the disk, the progress file is deleted and tracking ends.
   */
  switchOver(onSwitched?: () => Promise<void> | void): Promise<void>;
  /**
   * Flushes the source, then stops and saves progress so that a later `startHydration` with the
   * same target resumes. Changes made after `stop` are not tracked: if the source commits any
   * before the resume, the resume compares every copied chunk again (reading the source)
   * instead of trusting it.
   */
  stop(): Promise<void>;
  /** The current progress. */
  progress(): HydrationProgress;
}

const DEFAULT_CHUNK = 1 << 20;
const DEFAULT_SAVE_EVERY = 256 << 20;

/**
 * Copies the merged disk (`disk`: typically a `WriteOverlay` over the backup) into the raw file
 * `targetPath` in the background, rate-limited, while the VM keeps running, and keeps the target
 * following later changes until {@link Hydration.switchOver}: the library half of "migrate to
 * production".
 *
 * Crash safety: only bytes the source has flushed are copied (a chunk with unflushed changes
 * waits), and before each of the source's commits the hydration syncs the target and saves its
 * progress (how far the first pass got, which copied chunks changed since). So after a crash
 * or restart, `startHydration` with the same target resumes where the saved progress says and
 * the result is still byte-identical. One hydration per target at a time.
 */
export async function startHydration(
  disk: HydrationSource,
  targetPath: string,
  options: HydrationOptions = {},
): Promise<Hydration> {
  const chunk = options.chunkSize ?? DEFAULT_CHUNK;
  if (!Number.isInteger(chunk) || chunk < 4096 || chunk > 64 << 20 || (chunk & (chunk - 1)) !== 0) {
    throw new IvmrError(
      ErrorCode.INVALID_ARGUMENT,
      `hydration chunk size must be a power of two from 4 KiB to 64 MiB, got ${chunk}`,
    );
  }
  const fs = options.fs ?? nodeFileSystem;
  const progressPath = options.progressPath ?? `${targetPath}.hydration.json`;
  const saved = await readProgress(fs, progressPath);
  const targetExisted = await fs.exists(targetPath);
  const target = await fs.open(targetPath, 'create');
  const task = new HydrationTask(disk, fs, target, progressPath, chunk, options);
  try {
    await task.init(targetExisted ? saved : undefined);
  } catch (err) {
    await task.abandon();
    throw err;
  }
  task.start();
  return task.handle();
}

class HydrationTask {
  readonly #disk: HydrationSource;
  readonly #fs: CacheFileSystem;
  readonly #target: CacheFile;
  readonly #progressPath: string;
  readonly #chunk: number;
  readonly #limiter: RateLimiter;
  readonly #onProgress: ((p: HydrationProgress) => void) | undefined;
  readonly #saveEvery: number;
  readonly #catchUpMs: number;
  readonly #buf: Uint8Array;
  readonly #cmp: Uint8Array;
  readonly #dirty: ChunkSet;
  readonly #startedAt = performance.now();
  #size: number;
  #cursor = 0;
  #copying = -1;
  #resumedFrom = 0;
  #phase: HydrationPhase = 'copying';
  #paused = false;
  #halt = false;
  #unwatch: (() => void) | undefined;
  #loop: Promise<void> | undefined;
  #wake: (() => void) | undefined;
  #idleWaiters: (() => void)[] = [];
  #pendingTruncate = false;
  #targetUnsynced = false;
  #dirtyChanged = false;
  #sinceSave = 0;
  #saving: Promise<void> = Promise.resolve();
  #bytesRead = 0;
  #bytesWritten = 0;
  #failure: unknown;
  readonly done: Promise<void>;
  #resolveDone!: () => void;
  #rejectDone!: (err: unknown) => void;
  #doneSettled = false;

  constructor(
    disk: HydrationSource,
    fs: CacheFileSystem,
    target: CacheFile,
    progressPath: string,
    chunk: number,
    options: HydrationOptions,
  ) {
    this.#disk = disk;
    this.#fs = fs;
    this.#target = target;
    this.#progressPath = progressPath;
    this.#chunk = chunk;
    this.#limiter = new RateLimiter(options.rateBytesPerSec ?? 0, chunk);
    this.#onProgress = options.onProgress;
    this.#saveEvery = options.saveEveryBytes ?? DEFAULT_SAVE_EVERY;
    this.#catchUpMs = options.catchUpMs ?? 10_000;
    this.#buf = new Uint8Array(chunk);
    this.#cmp = new Uint8Array(chunk);
    this.#size = disk.size;
    this.#dirty = new ChunkSet(this.#chunks);
    this.done = new Promise<void>((resolve, reject) => {
      this.#resolveDone = resolve;
      this.#rejectDone = reject;
    });
    // Whoever does not await `done` must not get an unhandled rejection from it.
    this.done.catch(() => {});
  }

  get #chunks(): number {
    return Math.ceil(this.#size / this.#chunk);
  }

  /** Resumes from `saved` when it fits this disk, else starts over; then starts tracking. */
  async init(saved: HydrationState | undefined): Promise<void> {
    this.#unwatch = this.#disk.watch?.({
      changed: (offset, length) => this.#changed(offset, length),
      resized: (size) => this.#resized(size),
      beforeCommit: () => this.#beforeCommit(),
      committed: () => this.#kick(),
    });
    const fits = saved && saved.size === this.#size && saved.chunkSize === this.#chunk;
    if (fits) {
      this.#cursor = Math.min(saved.cursor, this.#chunks);
      for (const [first, count] of saved.dirty) {
        for (let c = first; c < first + count && c < this.#cursor; c++) this.#dirty.add(c);
      }
      const seq = this.#disk.commitSeq ?? null;
      if (saved.state === 'stopped' && seq !== saved.commitSeq) {
        // The source committed changes nobody tracked: compare every copied chunk again.
        for (let c = 0; c < this.#cursor; c++) this.#dirty.add(c);
      }
      const copied = Math.min(this.#cursor * this.#chunk, this.#size);
      if (this.#disk.hasUnflushed?.(0, copied)) {
        for (let c = 0; c < this.#cursor; c++) {
          if (this.#disk.hasUnflushed(c * this.#chunk, this.#chunk)) this.#dirty.add(c);
        }
      }
      this.#resumedFrom = copied;
      // Past the cursor the target must read as zeros, whatever an unsaved copy left there.
      await this.#target.truncate(copied);
    } else {
      await this.#target.truncate(0);
    }
    await this.#target.truncate(this.#size);
    this.#targetUnsynced = true;
    this.#dirtyChanged = true;
    await this.#save('running');
  }

  start(): void {
    this.#loop = this.#run();
  }

  handle(): Hydration {
    return {
      done: this.done,
      pause: () => {
        this.#paused = true;
        this.#emit();
      },
      resume: () => {
        this.#paused = false;
        this.#kick();
        this.#emit();
      },
      setRate: (bytesPerSec) => {
        this.#limiter.rate = bytesPerSec;
      },
      switchOver: (onSwitched) => this.#switchOver(onSwitched),
      stop: () => this.#stop(),
      progress: () => this.#progress(),
    };
  }

  #changed(offset: number, length: number): void {
    const c0 = Math.floor(offset / this.#chunk);
    const c1 = Math.floor((offset + Math.max(length, 1) - 1) / this.#chunk);
    for (let c = c0; c <= c1; c++) {
      if (c < this.#cursor || c === this.#copying) {
        this.#dirty.add(c);
        this.#dirtyChanged = true;
      }
    }
    this.#kick();
  }

  #resized(size: number): void {
    this.#size = size;
    this.#dirty.truncate(this.#chunks);
    if (this.#copying >= this.#chunks) this.#copying = -1;
    this.#cursor = Math.min(this.#cursor, this.#chunks);
    this.#pendingTruncate = true;
    this.#dirtyChanged = true;
    this.#kick();
  }

  #kick(): void {
    const w = this.#wake;
    this.#wake = undefined;
    w?.();
  }

  async #run(): Promise<void> {
    try {
      while (!this.#halt) {
        if (this.#pendingTruncate) {
          this.#pendingTruncate = false;
          await this.#target.truncate(this.#size);
          this.#targetUnsynced = true;
          continue;
        }
        if (!this.#paused) {
          if (this.#cursor < this.#chunks) {
            await this.#copyNext();
            continue;
          }
          // The first pass is over: `done` resolves now, even while a busy source keeps
          // changing chunks faster than they are copied again (the switch-over copies the
          // rest with writes paused).
          if (!this.#doneSettled) {
            this.#doneSettled = true;
            this.#phase = 'mirroring';
            this.#resolveDone();
            this.#emit();
          }
          const c = this.#nextDirty();
          if (c >= 0) {
            await this.#copyAgain(c);
            continue;
          }
          for (const w of this.#idleWaiters.splice(0)) w();
        }
        await new Promise<void>((resolve) => {
          this.#wake = resolve;
        });
      }
    } catch (err) {
      await this.#fail(err);
    }
  }

  /** A changed chunk whose changes are all flushed, or -1. */
  #nextDirty(): number {
    for (const c of this.#dirty.values()) {
      if (!this.#disk.hasUnflushed?.(c * this.#chunk, this.#chunk)) return c;
    }
    return -1;
  }

  #range(c: number): [number, number] {
    const offset = c * this.#chunk;
    return [offset, Math.min(this.#chunk, this.#size - offset)];
  }

  /** The first pass's next chunk (`final`: in the switch-over, unlimited and unstoppable). */
  async #copyNext(final = false): Promise<void> {
    const c = this.#cursor;
    const [offset, len] = this.#range(c);
    if (this.#disk.hasUnflushed?.(offset, len)) {
      // Not durable yet: copy it once the source flushes it.
      this.#dirty.add(c);
      this.#dirtyChanged = true;
      this.#cursor = c + 1;
      return;
    }
    if (!final) {
      await this.#limiter.take(len);
      if (this.#halt || this.#cursor !== c) return;
    }
    this.#copying = c;
    const data = await this.#disk.read(offset, len, this.#buf);
    this.#bytesRead += len;
    // Past the cursor the target is all zeros, so zeros need not be written.
    if (this.#copying === c && !isAllZero(data)) {
      await this.#target.write(data, offset);
      this.#bytesWritten += len;
      this.#targetUnsynced = true;
    }
    this.#copying = -1;
    if (this.#cursor === c) this.#cursor = c + 1;
    await this.#afterChunk(len);
  }

  /** Copies a changed chunk again (comparing first: only differing chunks are written). */
  async #copyAgain(c: number, final = false): Promise<void> {
    const [offset, len] = this.#range(c);
    if (!final) {
      await this.#limiter.take(len);
      if (this.#halt) return;
    }
    if (!this.#dirty.has(c) || this.#disk.hasUnflushed?.(offset, len)) return;
    this.#dirty.delete(c);
    this.#copying = c;
    const data = await this.#disk.read(offset, len, this.#buf);
    this.#bytesRead += len;
    const old = this.#cmp.subarray(0, len);
    const n = await this.#target.read(old, offset);
    if (n < len) old.fill(0, n);
    if (Buffer.compare(data, old) !== 0) {
      await this.#target.write(data, offset);
      this.#bytesWritten += len;
      this.#targetUnsynced = true;
    }
    this.#copying = -1;
    await this.#afterChunk(len);
  }

  async #afterChunk(len: number): Promise<void> {
    this.#sinceSave += len;
    if (this.#sinceSave >= this.#saveEvery) await this.#save('running');
    this.#emit();
  }

  /**
   * Saves progress: syncs the target, then writes the state. A chunk being copied is saved as
   * changed, so a crash in the middle of its copy cannot leave it trusted.
   */
  #save(state: HydrationState['state']): Promise<void> {
    const run = async () => {
      const dirty = new ChunkSet(this.#chunks);
      for (const c of this.#dirty.values()) dirty.add(c);
      if (this.#copying >= 0) dirty.add(this.#copying);
      const snapshot: HydrationState = {
        version: 1,
        size: this.#size,
        chunkSize: this.#chunk,
        cursor: this.#cursor,
        dirty: dirty.toRuns(),
        state,
        commitSeq: this.#disk.commitSeq ?? null,
      };
      this.#dirtyChanged = false;
      this.#sinceSave = 0;
      if (this.#targetUnsynced) {
        this.#targetUnsynced = false;
        try {
          await this.#target.sync();
        } catch (err) {
          this.#targetUnsynced = true;
          throw err;
        }
      }
      await writeProgress(this.#fs, this.#progressPath, snapshot);
    };
    const p = this.#saving.then(run, run);
    this.#saving = p.catch(() => {});
    return p;
  }

  /** Stops the copy loop and waits for the chunk in progress. */
  async #halted(): Promise<void> {
    this.#halt = true;
    this.#kick();
    await this.#loop;
  }

  async #switchOver(onSwitched?: () => Promise<void> | void): Promise<void> {
    if (this.#phase === 'done' || this.#phase === 'stopped') throw closedError('hydration');
    this.#paused = false;
    this.#kick();
    await this.done;
    // Let the background loop catch up while writes go on, so the paused part stays short.
    if (this.#dirty.count > 0) {
      const ac = new AbortController();
      const idle = new Promise<void>((resolve) => this.#idleWaiters.push(resolve));
      this.#kick();
      await Promise.race([
        idle,
        sleep(this.#catchUpMs, undefined, { signal: ac.signal }).catch(() => {}),
      ]);
      ac.abort();
    }
    await this.#halted();
    if (this.#failure !== undefined) throw this.#failure;
    this.#phase = 'switching';
    this.#emit();
    const final = async () => {
      while (this.#cursor < this.#chunks) await this.#copyNext(true);
      for (const c of [...this.#dirty.values()]) await this.#copyAgain(c, true);
      await this.#target.truncate(this.#size);
      await this.#target.sync();
      this.#targetUnsynced = false;
      await onSwitched?.();
    };
    try {
      if (this.#disk.whileQuiesced) await this.#disk.whileQuiesced(final);
      else await final();
    } catch (err) {
      await this.#fail(err);
      throw err;
    }
    this.#unwatch?.();
    this.#unwatch = undefined;
    await this.#saving;
    await this.#fs.unlink(this.#progressPath);
    await this.#target.close();
    this.#phase = 'done';
    this.#emit();
  }

  async #stop(): Promise<void> {
    if (this.#phase === 'done' || this.#phase === 'stopped' || this.#phase === 'failed') return;
    await this.#halted();
    try {
      if (this.#failure === undefined) {
        // Flush first, so that the source has nothing uncommitted that a later close would
        // commit behind the saved state's back (which would force a full compare on resume).
        const save = async () => {
          await this.#save('stopped');
          this.#unwatch?.();
          this.#unwatch = undefined;
        };
        if (this.#disk.whileQuiesced) await this.#disk.whileQuiesced(save);
        else await save();
      }
    } finally {
      this.#unwatch?.();
      this.#unwatch = undefined;
      await this.#target.close();
      this.#phase = 'stopped';
      if (!this.#doneSettled) {
        this.#doneSettled = true;
        this.#rejectDone(
          new IvmrError(ErrorCode.ABORTED, 'hydration stopped before its first pass'),
        );
      }
      this.#emit();
    }
  }

  /**
   * Before the source commits, the saved progress must name every copied chunk that changed.
   * When saving fails, the hydration fails (and deletes its progress) rather than the source's
   * flush; only if even that deletion fails does the flush fail, since a stale progress file
   * could later be trusted.
   */
  async #beforeCommit(): Promise<void> {
    if (!this.#dirtyChanged) return;
    try {
      await this.#save('running');
    } catch (err) {
      if (!(await this.#fail(err))) throw err;
    }
  }

  /**
   * Gives up: tracking ends, so the saved progress would go stale; it is deleted so that a
   * later start copies everything again instead of trusting it. Resolves to whether it is gone.
   */
  async #fail(err: unknown): Promise<boolean> {
    if (this.#failure !== undefined) return true;
    this.#failure = err;
    this.#phase = 'failed';
    this.#halt = true;
    this.#kick();
    this.#unwatch?.();
    this.#unwatch = undefined;
    await this.#saving;
    const removed = await this.#fs.unlink(this.#progressPath).then(
      () => true,
      () => false,
    );
    await this.#target.close().catch(() => {});
    if (!this.#doneSettled) {
      this.#doneSettled = true;
      this.#rejectDone(err);
    }
    for (const w of this.#idleWaiters.splice(0)) w();
    this.#emit();
    return removed;
  }

  /** Undoes a failed start. */
  async abandon(): Promise<void> {
    this.#unwatch?.();
    await this.#target.close();
  }

  #emit(): void {
    if (this.#onProgress === undefined) return;
    this.#onProgress(this.#progress());
  }

  #progress(): HydrationProgress {
    const secs = (performance.now() - this.#startedAt) / 1000;
    return {
      phase: this.#phase,
      totalBytes: this.#size,
      copiedBytes: Math.min(this.#cursor * this.#chunk, this.#size),
      dirtyBytes: this.#dirty.count * this.#chunk,
      bytesRead: this.#bytesRead,
      bytesWritten: this.#bytesWritten,
      resumedFromBytes: this.#resumedFrom,
      bytesPerSec: secs > 0 ? this.#bytesRead / secs : 0,
      paused: this.#paused,
    };
  }
}
