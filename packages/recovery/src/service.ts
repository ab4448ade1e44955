import type { StatFs } from '@ivmr/cache';
import { ErrorCode, IvmrError, type Repository } from '@ivmr/core';
import type { BootProfiles, PrefetchReport } from './boot-profile.js';
import { RecoveryDatastore } from './datastore.js';
import type { Migration, MigrationFormat, MigrationProgress, MigrationState } from './migration.js';
import {
  RecoverySession,
  type SessionDiskStats,
  type SessionMode,
  type SessionState,
} from './session.js';

/**
 * Where a service reports what happens: the shape of a pino logger (`logger.info(obj, msg)`),
 * so a pino instance can be passed as is.
 */
export interface RecoveryLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

/** Options of {@link RecoveryService.open}. */
export interface RecoveryServiceOptions {
  readonly repository: Repository;
  readonly cacheDir: string;
  /** Per-VM free space checked when a session starts (see `StartSessionOptions.minFreeBytes`). */
  readonly minFreeBytes?: number;
  /** Share of the cache volume kept free (see `StartSessionOptions.floorFraction`). */
  readonly floorFraction?: number;
  /** Read cache bytes per disk of new sessions; 0: none (see `StartSessionOptions`). */
  readonly readCacheBytes?: number;
  /** Volume space (default `fs.statfs`). */
  readonly statfs?: StatFs;
  readonly log?: RecoveryLog;
  /**
   * Where boot profiles are kept: a session started for a VM that has one prefetches the blocks
   * its recorded boot read into the read cache (see {@link BootPrefetchMode}).
   */
  readonly bootProfiles?: BootProfiles;
  /** When a profile exists: how {@link RecoveryService.start} prefetches. Default `background`. */
  readonly bootPrefetch?: BootPrefetchMode;
}

/**
 * How a started session prefetches its VM's boot profile: `background` (start returns at once,
 * the prefetch runs while the hypervisor registers and powers on the VM), `wait` (start returns
 * once the blocks are in the read cache) or `off`.
 */
export type BootPrefetchMode = 'off' | 'background' | 'wait';

/** What {@link RecoveryService.start} starts. */
export interface ServiceStartOptions {
  readonly vm: string;
  /** Restore point id or unique prefix; default the newest. */
  readonly point?: string;
  /** Folder name (default the VM name). */
  readonly name?: string;
  /** Mode of a new session (default `persistent`). */
  readonly mode?: SessionMode;
  /** Record the VM's first reads for a boot profile (a new session only; see `bootProfile`). */
  readonly recordReads?: boolean;
  /** Overrides the service's {@link RecoveryServiceOptions.bootPrefetch} for this start. */
  readonly bootPrefetch?: BootPrefetchMode;
}

/** One line of {@link RecoveryService.list}. */
export interface SessionInfo {
  readonly name: string;
  readonly vm: string;
  readonly point: string;
  readonly mode: SessionMode;
  /** `served`, or `kept` (stopped with its writes, not served), or `migrated` (read-only). */
  readonly status: 'served' | 'kept' | 'migrated';
  readonly created: string;
  /** Bytes written since the last flush (NaN when the session is not open). */
  readonly dirtyBytes: number;
  /** Bytes the session's folder takes on the cache volume. */
  readonly cacheBytes: number;
  /** Per disk, when open. */
  readonly disks: readonly SessionDiskStats[];
  /** Clients that reached the VM folder since the server started. */
  readonly clients: readonly { address: string; lastSeen: number }[];
  /** Progress of a running migration, or what the state records of one. */
  readonly migration?: MigrationProgress | MigrationState;
  /** Figures of the boot prefetch, when one was started. */
  readonly prefetch?: PrefetchReport;
}

/** Options of {@link RecoveryService.migrate}. */
export interface ServiceMigrateOptions {
  readonly to: string;
  readonly format?: MigrationFormat;
  readonly rateBytesPerSec?: number;
  readonly chunkSize?: number;
}

/**
 * The sessions of one cache folder, served through one {@link RecoveryDatastore}: starts,
 * stops, lists and migrates them while the datastore is served. `ivmr serve` is a thin shell
 * around it; a product embedding ivmr uses it the same way.
 */
export class RecoveryService {
  readonly datastore: RecoveryDatastore;
  readonly #options: RecoveryServiceOptions;
  readonly #sessions = new Map<string, RecoverySession>();
  /** One start, stop or migrate at a time, so names and numbers never race. */
  #queue: Promise<unknown> = Promise.resolve();
  #closed = false;

  private constructor(options: RecoveryServiceOptions, sessions: RecoverySession[]) {
    this.#options = options;
    for (const s of sessions) this.#sessions.set(s.name, s);
    this.datastore = new RecoveryDatastore(options.cacheDir, sessions);
  }

  /**
   * Resumes the active sessions of the cache folder (crash recovery, with every flushed write)
   * and their unfinished migrations.
   */
  static async open(options: RecoveryServiceOptions): Promise<RecoveryService> {
    const sessions = await RecoverySession.resumeAll(options.repository, options.cacheDir);
    const service = new RecoveryService(options, sessions);
    for (const s of sessions) {
      options.log?.info(
        { session: s.name, vm: s.state.vm, point: s.state.point },
        'session resumed',
      );
      await service.#resumeMigration(s);
    }
    return service;
  }

  /** The open sessions. */
  get sessions(): RecoverySession[] {
    return [...this.#sessions.values()];
  }

  /** The open session named `name`, or `IVMR_NOT_FOUND`. */
  session(name: string): RecoverySession {
    const s = this.#sessions.get(name);
    if (!s) {
      throw new IvmrError(ErrorCode.NOT_FOUND, `no session named ${name} is served`, {
        details: { session: name },
      });
    }
    return s;
  }

  /**
   * Starts serving a VM: the open session of that name when its point matches, else a session
   * kept in the cache folder by an earlier stop, else a new one (free space is checked first).
   * `IVMR_EXISTS` when a session of that name is of another point.
   */
  async start(options: ServiceStartOptions): Promise<RecoverySession> {
    const { session, fresh } = await this.#serial(() => this.#start(options));
    if (fresh) {
      const mode = options.bootPrefetch ?? this.#options.bootPrefetch ?? 'background';
      const prefetch = mode === 'off' ? undefined : await this.#prefetch(session);
      if (mode === 'wait') await prefetch?.done;
    }
    return session;
  }

  async #start(
    options: ServiceStartOptions,
  ): Promise<{ session: RecoverySession; fresh: boolean }> {
    const name = options.name ?? options.vm;
    const open = this.#sessions.get(name);
    const kept = open
      ? undefined
      : (await RecoverySession.list(this.#options.cacheDir)).find((s) => s.name === name);
    const existing = open?.state ?? kept;
    if (existing) {
      if (
        existing.vm !== options.vm ||
        (options.point !== undefined && !existing.point.startsWith(options.point))
      ) {
        throw new IvmrError(
          ErrorCode.EXISTS,
          `the cache already has a session ${name} of ${existing.vm}@${existing.point}; stop it before serving ${options.vm}${options.point ? `@${options.point}` : ''}`,
          { details: { session: name, point: existing.point } },
        );
      }
      if (open) return { session: open, fresh: false };
    }
    const { repository, cacheDir } = this.#options;
    const session = kept
      ? await RecoverySession.resume(repository, cacheDir, name)
      : await RecoverySession.start({
          repository,
          cacheDir,
          vm: options.vm,
          name,
          ...(options.point === undefined ? {} : { point: options.point }),
          ...(options.mode === undefined ? {} : { mode: options.mode }),
          ...(options.recordReads ? { recordReads: true } : {}),
          ...this.#spaceOptions(),
        });
    this.#sessions.set(name, session);
    this.datastore.publish(session);
    this.#options.log?.info(
      {
        session: name,
        vm: session.state.vm,
        point: session.state.point,
        mode: session.state.mode,
      },
      kept ? 'session resumed' : 'session started',
    );
    await this.#resumeMigration(session);
    return { session, fresh: true };
  }

  /**
   * Starts prefetching the VM's boot profile into `session`'s read cache, when the service keeps
   * profiles and the VM has one; resolves once it runs, with its end (which never rejects).
   */
  async #prefetch(
    session: RecoverySession,
  ): Promise<{ done: Promise<PrefetchReport> } | undefined> {
    const profiles = this.#options.bootProfiles;
    const log = this.#options.log;
    if (!profiles || session.disks.every((d) => d.readCache === undefined)) return undefined;
    let profile: Awaited<ReturnType<BootProfiles['load']>>;
    try {
      profile = await profiles.load(session.state.repository, session.state.vm);
    } catch (err) {
      log?.warn({ session: session.name, err }, 'boot profile not used');
      return undefined;
    }
    if (!profile) return undefined;
    log?.info(
      { session: session.name, profilePoint: profile.point, reads: profile.reads.length },
      'boot prefetch started',
    );
    try {
      const done = session.prefetch(profile).then((report) => {
        log?.info({ session: session.name, ...report }, 'boot prefetch ended');
        return report;
      });
      return { done };
    } catch (err) {
      // Stopped before the prefetch could begin.
      log?.warn({ session: session.name, err }, 'boot prefetch not started');
      return undefined;
    }
  }

  /**
   * Ends a session. `discard` (and every sandbox session) drops its writes and its folder, like
   * cancelling an instant recovery; otherwise its overlay is kept and a later {@link start} of
   * the same name resumes it. Works for kept sessions too (to discard them).
   */
  stop(name: string, options: { discard?: boolean } = {}): Promise<{ discarded: boolean }> {
    return this.#serial(async () => {
      const session = this.#sessions.get(name);
      const { cacheDir } = this.#options;
      if (!session) {
        const discarded = await RecoverySession.stopClosed(cacheDir, name, options);
        this.#options.log?.info({ session: name, discard: discarded }, 'session stopped');
        return { discarded };
      }
      this.datastore.unpublish(session);
      this.#sessions.delete(name);
      if (options.discard || session.state.mode === 'sandbox') {
        await session.cancel();
      } else {
        await session.close();
        await RecoverySession.updateState(cacheDir, name, { active: false });
      }
      const discarded = options.discard === true || session.state.mode === 'sandbox';
      this.#options.log?.info({ session: name, discard: discarded }, 'session stopped');
      return { discarded };
    });
  }

  /** Every session of the cache folder: the open ones with live figures, then the kept ones. */
  async list(): Promise<SessionInfo[]> {
    const out: SessionInfo[] = [];
    for (const s of this.#sessions.values()) {
      out.push({
        name: s.name,
        vm: s.state.vm,
        point: s.state.point,
        mode: s.state.mode,
        status: s.state.migration?.switched ? 'migrated' : 'served',
        created: s.state.created,
        dirtyBytes: s.dirtyBytes,
        cacheBytes: await s.diskUsage(),
        disks: s.stats(),
        clients: this.datastore.clientsOf(s),
        ...(s.prefetchStatus() ? { prefetch: s.prefetchStatus() } : {}),
        ...(s.migration
          ? { migration: s.migration.progress() }
          : s.state.migration
            ? { migration: s.state.migration }
            : {}),
      });
    }
    for (const state of await RecoverySession.list(this.#options.cacheDir)) {
      if (this.#sessions.has(state.name)) continue;
      out.push(await RecoveryService.describe(this.#options.cacheDir, state));
    }
    return out;
  }

  /** A {@link SessionInfo} of a session that is not open (no live figures). */
  static async describe(cacheDir: string, state: SessionState): Promise<SessionInfo> {
    return {
      name: state.name,
      vm: state.vm,
      point: state.point,
      mode: state.mode,
      status: state.migration?.switched ? 'migrated' : 'kept',
      created: state.created,
      dirtyBytes: Number.NaN,
      cacheBytes: await RecoverySession.diskUsageOf(cacheDir, state.name),
      disks: [],
      clients: [],
      ...(state.migration ? { migration: state.migration } : {}),
    };
  }

  /**
   * Starts (or joins) the migration of a served session to `options.to`; see
   * `RecoverySession.migrate`. `onProgress` is called after every chunk.
   */
  migrate(name: string, options: ServiceMigrateOptions): Promise<Migration> {
    return this.#serial(async () => {
      const session = this.session(name);
      const migration = await session.migrate({
        to: options.to,
        ...(options.format ? { format: options.format } : {}),
        ...(options.rateBytesPerSec ? { rateBytesPerSec: options.rateBytesPerSec } : {}),
        ...(options.chunkSize ? { chunkSize: options.chunkSize } : {}),
        onProgress: this.#phaseLogger(name),
      });
      this.#options.log?.info({ session: name, to: options.to }, 'migration started');
      return migration;
    });
  }

  /** Completes a session's migration; the session is read-only afterwards. */
  async switchOver(name: string): Promise<void> {
    const session = this.session(name);
    await session.switchOver();
    this.#options.log?.info(
      { session: name, to: session.state.migration?.to },
      'migration switched over',
    );
  }

  /** Flushes and closes every session (kept for the next start) and stops migrations. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#queue.catch(() => {});
    let failure: unknown;
    for (const s of this.#sessions.values()) {
      this.datastore.unpublish(s);
      await s.close().catch((err: unknown) => {
        failure ??= err;
      });
    }
    this.#sessions.clear();
    if (failure) throw failure;
  }

  #spaceOptions() {
    const o = this.#options;
    return {
      ...(o.minFreeBytes === undefined ? {} : { minFreeBytes: o.minFreeBytes }),
      ...(o.floorFraction === undefined ? {} : { floorFraction: o.floorFraction }),
      ...(o.readCacheBytes === undefined ? {} : { readCacheBytes: o.readCacheBytes }),
      ...(o.statfs ? { statfs: o.statfs } : {}),
    };
  }

  async #resumeMigration(session: RecoverySession): Promise<void> {
    const m = session.state.migration;
    if (!m || m.switched) return;
    try {
      await session.resumeMigration();
      this.#options.log?.info({ session: session.name, to: m.to }, 'migration resumed');
    } catch (err) {
      this.#options.log?.error({ session: session.name, to: m.to, err }, 'migration not resumed');
    }
  }

  /** Logs each phase change of a migration once. */
  #phaseLogger(name: string): (p: MigrationProgress) => void {
    let last = '';
    return (p) => {
      if (p.phase === last) return;
      last = p.phase;
      const log = this.#options.log;
      if (p.phase === 'failed') log?.error({ session: name, to: p.to }, 'migration failed');
      else log?.info({ session: name, to: p.to, phase: p.phase }, 'migration phase');
    };
  }

  #serial<T>(fn: () => Promise<T>): Promise<T> {
    if (this.#closed)
      return Promise.reject(new IvmrError(ErrorCode.CLOSED, 'the recovery service is closed'));
    const run = this.#queue.then(fn, fn);
    this.#queue = run.catch(() => {});
    return run;
  }
}
