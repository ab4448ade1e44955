import { ErrorCode, IvmrError, isIvmrError } from '../errors.js';
import { sha256 } from '../format/codec.js';
import { encodeIndex, type IndexedPack } from '../format/index-file.js';
import type { StoreAdapter } from '../store/adapter.js';
import { LocalStore } from '../store/local-store.js';
import { type BackupOptions, runBackup } from './backup.js';
import type { FrameCacheOptions } from './blob-reader.js';
import {
  newConfig,
  parseConfig,
  type RepositoryConfig,
  type RepositoryInitOptions,
} from './config.js';
import { RepoContext } from './context.js';
import type { DecodePool } from './decode-pool.js';
import { RestoreDisk } from './disk-source.js';
import {
  type ForgetOptions,
  type ForgetReport,
  type PruneReport,
  readPackHeader,
  runForget,
  runPrune,
} from './forget.js';
import { acquireLock, type HeldLock, type LockRequest, readLeases } from './lock.js';
import { checkVmName, type PointDisk, type RestorePointInfo } from './points.js';
import { runVerify, type VerifyOptions, type VerifyReport } from './verify.js';

/** Options of {@link Repository.open}. */
export interface RepositoryOpenOptions {
  /** Decoded-frame cache shared by all open disks. */
  frameCache?: FrameCacheOptions;
  /**
   * Worker threads that decode large reads beside the thread that serves them (see
   * {@link DecodePool}); without one, reads decode on the calling thread. The caller closes it
   * after the repository.
   */
  decodePool?: DecodePool;
  /**
   * How long backup, forget, prune and repair wait for conflicting locks of other processes
   * before `IVMR_LOCKED` (ms, default 0: fail at once).
   */
  lockWait?: number;
}

/** What `Repository.repair` did. */
export interface RepairReport {
  readonly packs: number;
  readonly blobs: number;
  /** Packs whose trailer was unreadable (their blobs are lost). */
  readonly unreadablePacks: readonly string[];
  readonly indexesReplaced: number;
}

/**
 * A deduplicated backup repository on a {@link StoreAdapter}. One object serves many restore
 * points and disks; it is safe to use from concurrent async calls.
 *
 * Many processes may use one repository at once (FORMAT.md, "Locks and leases"): readers (open
 * restore points, verify) hold leases that prune honours; backup and forget lock only their VM;
 * prune and repair wait for writers and exclude them.
 */
export class Repository {
  readonly store: StoreAdapter;
  readonly config: RepositoryConfig;
  #ctx: RepoContext;
  readonly #options: RepositoryOpenOptions;
  #closed = false;

  private constructor(ctx: RepoContext, options: RepositoryOpenOptions) {
    this.store = ctx.store;
    this.config = ctx.config;
    this.#ctx = ctx;
    this.#options = options;
  }

  /** Creates a repository in an empty store. `IVMR_EXISTS` when the store has one already. */
  static async init(
    store: StoreAdapter,
    options: RepositoryInitOptions & RepositoryOpenOptions = {},
  ): Promise<Repository> {
    const config = newConfig(options);
    if (await store.has('config', 'config')) {
      throw new IvmrError(ErrorCode.EXISTS, `${store.location} already holds a repository`);
    }
    await store.put('config', 'config', Buffer.from(`${JSON.stringify(config, null, 2)}\n`));
    return Repository.open(store, options);
  }

  /** Opens the repository in `store` and loads its index. `IVMR_NOT_FOUND` when there is none. */
  static async open(store: StoreAdapter, options: RepositoryOpenOptions = {}): Promise<Repository> {
    let bytes: Uint8Array;
    try {
      bytes = await store.get('config', 'config');
    } catch (err) {
      if (isIvmrError(err, ErrorCode.NOT_FOUND)) {
        throw new IvmrError(
          ErrorCode.NOT_FOUND,
          `${store.location} is not an ivmr repository (no config)`,
          {
            cause: err,
            details: { location: store.location },
          },
        );
      }
      throw err;
    }
    const ctx = new RepoContext(
      store,
      parseConfig(bytes, store.location),
      options.frameCache ?? {},
      options.decodePool,
    );
    await ctx.loadIndex();
    return new Repository(ctx, options);
  }

  /** Restore points, oldest first per VM, VMs by name. */
  async listPoints(vm?: string): Promise<RestorePointInfo[]> {
    this.#checkOpen();
    const all = await this.#ctx.points();
    return vm === undefined ? all : all.filter((p) => p.vm === vm);
  }

  /** Names of the VMs that have restore points. */
  async listVms(): Promise<string[]> {
    return [...new Set((await this.listPoints()).map((p) => p.vm))];
  }

  /**
   * Finds a point of `vm` by id or unique id prefix; the newest when `id` is omitted.
   * `IVMR_NOT_FOUND` when none matches, `IVMR_INVALID_ARGUMENT` for an ambiguous prefix.
   */
  async findPoint(vm: string, id?: string): Promise<RestorePointInfo> {
    checkVmName(vm);
    const points = await this.listPoints(vm);
    if (points.length === 0) {
      throw new IvmrError(ErrorCode.NOT_FOUND, `no restore points of VM ${vm}`, {
        details: { vm },
      });
    }
    if (id === undefined) return points.at(-1)!;
    const hits = points.filter((p) => p.id.startsWith(id.toLowerCase()));
    if (hits.length === 0 || id.length === 0) {
      const damaged = this.#ctx.damaged.find(
        (d) => d.kind === 'point' && d.name === id.toLowerCase(),
      );
      if (damaged) {
        throw new IvmrError(
          ErrorCode.FORMAT,
          `restore point ${id} is unreadable: ${damaged.message}`,
          { details: { vm, point: id } },
        );
      }
      throw new IvmrError(ErrorCode.NOT_FOUND, `VM ${vm} has no restore point ${id}`, {
        details: { vm, point: id },
      });
    }
    if (hits.length > 1) {
      throw new IvmrError(
        ErrorCode.INVALID_ARGUMENT,
        `point id ${id} is ambiguous for VM ${vm}: give more digits`,
      );
    }
    return hits[0]!;
  }

  /**
   * Opens a restore point for reading (the newest of `vm` when `id` is omitted). Every disk's
   * chain is resolved now, so reads cost the same whatever the chain length. Holds a read lease on
   * the chain's block maps until {@link RestorePoint.close}: no prune deletes what it reads, even
   * after a forget removed the point. Sees points other processes committed since `open`.
   */
  async openPoint(vm: string, id?: string): Promise<RestorePoint> {
    this.#checkOpen();
    for (let attempt = 1; ; attempt++) {
      const ctx = this.#ctx;
      // Points committed by other processes name blobs of index objects written since.
      await ctx.loadIndex();
      const info = await this.findPoint(vm, id);
      const byId = new Map((await ctx.points()).map((p) => [p.id, p]));
      const chain = ctx.chain(info, byId);
      const lock = await acquireLock(this.store, {
        mode: 'read',
        operation: `read ${vm}@${info.id}`,
        maps: [...new Set(chain.flatMap((p) => p.disks.map((d) => d.map)))],
      });
      try {
        // A forget or rebase between reading the points and the lease: read them again.
        if (!(await ctx.unchanged(chain))) {
          await lock.release();
          if (attempt < 5) continue;
          throw new IvmrError(
            ErrorCode.LOCKED,
            `restore point ${vm}@${info.id} kept changing while it was opened; try again`,
            { details: { vm, point: info.id } },
          );
        }
        const disks = new Map<string, RestoreDisk>();
        const chains: string[][] = [];
        for (const d of info.disks) {
          const used: string[] = [];
          const flat = await ctx.resolve(info, d.name, byId, used);
          chains.push(used);
          disks.set(
            d.name,
            new RestoreDisk(d.name, flat, ctx.reader, (s) => ctx.index.idOf(s), {
              vm,
              point: info.id,
            }),
          );
        }
        // Narrow the lease to what the disks read: blobs later maps replaced may be pruned.
        await lock.update({ chains });
        return new RestorePoint(info, disks, lock);
      } catch (err) {
        await lock.release();
        throw err;
      }
    }
  }

  /**
   * Backs up disks into a new restore point of `options.vm`: full when the VM has no point yet,
   * else an increment of its newest point (forward, or with `reverse` a new full point whose
   * predecessor becomes a reverse delta). Reads each source once, in order, a block at a time.
   */
  async backup(options: BackupOptions): Promise<RestorePointInfo> {
    return this.#locked(
      { mode: 'write', vm: options.vm, operation: `backup ${options.vm}` },
      (ctx) => runBackup(ctx, options),
    );
  }

  /**
   * Removes old points of a VM and (by default) prunes what nothing needs any more. Blobs that
   * readers hold leases on (open restore points of any process, removed ones included) are kept
   * until a later prune. When other writers keep the prune's exclusive lock past `lockWait`, the
   * points are still removed, `prune` is null and `pruneSkipped` says why.
   */
  async forget(options: ForgetOptions): Promise<ForgetReport> {
    const { removed, rebased } = await this.#locked(
      { mode: 'write', vm: options.vm, operation: `forget ${options.vm}` },
      (ctx) => runForget(ctx, options),
    );
    await this.#reload();
    if (options.prune === false) return { removed, rebased, prune: null };
    try {
      return { removed, rebased, prune: await this.prune() };
    } catch (err) {
      if (!isIvmrError(err, ErrorCode.LOCKED)) throw err;
      return { removed, rebased, prune: null, pruneSkipped: err.message };
    }
  }

  /**
   * Deletes blobs, packs and maps that neither a restore point nor a reader's lease needs (what
   * `forget` does after removing points). Takes the exclusive lock: waits for running backups
   * and forgets up to `lockWait`, then `IVMR_LOCKED`.
   */
  async prune(): Promise<PruneReport> {
    const report = await this.#locked({ mode: 'exclusive', operation: 'prune' }, async (ctx) =>
      runPrune(ctx, await ctx.points(), await readLeases(this.store)),
    );
    await this.#reload();
    return report;
  }

  /** Re-reads and checks every blob (of the selected points); see {@link VerifyReport}. */
  async verify(options: VerifyOptions = {}): Promise<VerifyReport> {
    this.#checkOpen();
    if (options.point !== undefined && options.vm === undefined) {
      throw new IvmrError(ErrorCode.INVALID_ARGUMENT, 'verify of a point needs its VM');
    }
    const point =
      options.vm !== undefined && options.point !== undefined
        ? (await this.findPoint(options.vm, options.point)).id
        : undefined;
    await this.#reload();
    const points = await this.#ctx.points();
    const byId = new Map(points.map((p) => [p.id, p]));
    const maps = new Set<string>();
    for (const p of points)
      for (const c of this.#ctx.chain(p, byId)) for (const d of c.disks) maps.add(d.map);
    const lock = await acquireLock(this.store, {
      mode: 'read',
      operation: 'verify',
      maps: [...maps],
    });
    try {
      return await runVerify(this.#ctx, { ...options, point });
    } finally {
      await lock.release();
    }
  }

  /**
   * Rebuilds the index from the trailers of all packs (after an index object was lost or
   * damaged) and replaces every index object with one new one.
   */
  async repair(): Promise<RepairReport> {
    return this.#locked({ mode: 'exclusive', operation: 'repair' }, async (ctx) => {
      const packs: IndexedPack[] = [];
      const unreadablePacks: string[] = [];
      let blobs = 0;
      for await (const { name, size } of ctx.store.list('pack')) {
        try {
          const entries = await readPackHeader(ctx, name, size);
          packs.push({ pack: name, size, blobs: entries });
          blobs += entries.length;
        } catch (err) {
          if (!isIvmrError(err)) throw err;
          unreadablePacks.push(name);
        }
      }
      const bytes = encodeIndex(packs);
      const name = Buffer.from(sha256(bytes)).toString('hex');
      await ctx.store.put('index', name, bytes);
      let indexesReplaced = 0;
      for await (const old of ctx.store.list('index')) {
        if (old.name === name) continue;
        await ctx.store.delete('index', old.name);
        indexesReplaced++;
      }
      await this.#reload();
      return { packs: packs.length, blobs, unreadablePacks, indexesReplaced };
    });
  }

  /** Closes the store. Open restore points stop working. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.store.close?.();
  }

  async #locked<T>(
    request: Omit<LockRequest, 'waitMs'>,
    fn: (ctx: RepoContext) => Promise<T>,
  ): Promise<T> {
    this.#checkOpen();
    const lock: HeldLock = await acquireLock(this.store, {
      ...request,
      waitMs: this.#options.lockWait ?? 0,
    });
    try {
      // Start from the store as it is now: another process may have pruned since our last look.
      await this.#reload();
      return await fn(this.#ctx);
    } finally {
      await lock.release();
    }
  }

  /** Starts over from the store's objects (after pruning, or to see other writers' work). */
  async #reload(): Promise<void> {
    const ctx = new RepoContext(
      this.store,
      this.config,
      this.#options.frameCache ?? {},
      this.#options.decodePool,
    );
    await ctx.loadIndex();
    this.#ctx = ctx;
  }

  #checkOpen(): void {
    if (this.#closed)
      throw new IvmrError(ErrorCode.CLOSED, `repository ${this.store.location} is closed`);
  }
}

/** An opened restore point: its metadata and one {@link RestoreDisk} per disk. */
export class RestorePoint {
  readonly info: RestorePointInfo;
  readonly #disks: Map<string, RestoreDisk>;
  readonly #lock: HeldLock;

  /** @internal Created by {@link Repository.openPoint}. */
  constructor(info: RestorePointInfo, disks: Map<string, RestoreDisk>, lock: HeldLock) {
    this.info = info;
    this.#disks = disks;
    this.#lock = lock;
  }

  /** The point's disks as recorded at backup. */
  get disks(): readonly PointDisk[] {
    return this.info.disks;
  }

  /** A disk as a block source, by name (the first disk when omitted). */
  disk(name?: string): RestoreDisk {
    const disk = name === undefined ? this.#disks.values().next().value : this.#disks.get(name);
    if (!disk) {
      throw new IvmrError(
        ErrorCode.NOT_FOUND,
        `restore point ${this.info.vm}@${this.info.id} has no disk ${name}`,
        {
          details: { disk: name },
        },
      );
    }
    return disk;
  }

  /** Closes the disks and releases the read lease. */
  async close(): Promise<void> {
    for (const d of this.#disks.values()) await d.close();
    await this.#lock.release();
  }
}

/** Options of {@link openLocalRepository}. */
export interface LocalRepositoryOptions extends RepositoryInitOptions, RepositoryOpenOptions {
  /** Create the repository when the directory holds none (default false). */
  create?: boolean;
}

/**
 * Opens the repository in a local directory (the embedded default store); with `create`, makes
 * the directory and the repository when they do not exist yet.
 */
export async function openLocalRepository(
  dir: string,
  options: LocalRepositoryOptions = {},
): Promise<Repository> {
  const store = await LocalStore.open(dir, { create: options.create === true });
  try {
    if (options.create && !(await store.has('config', 'config')))
      return await Repository.init(store, options);
    return await Repository.open(store, options);
  } catch (err) {
    await store.close();
    throw err;
  }
}
