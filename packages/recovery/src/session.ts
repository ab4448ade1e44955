import { createHash } from 'node:crypto';
import { lstat, mkdir, readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import {
  type CacheStats,
  cacheStats,
  DEFAULT_FLOOR_FRACTION,
  type OverlayMode,
  ReadCache,
  requireRecoverySpace,
  type StatFs,
  WriteOverlay,
} from '@ivmr/cache';
import {
  type BlockSource,
  ErrorCode,
  IvmrError,
  isIvmrError,
  type Repository,
  type RestorePoint,
  type RestorePointInfo,
} from '@ivmr/core';
import { type DescriptorTarget, FlatExtent, synthesizePointFiles } from '@ivmr/vmdk';
import {
  type BootProfile,
  BootRecorder,
  type PrefetchOptions,
  type PrefetchReport,
  prefetchProfile,
  profileBytes,
} from './boot-profile.js';
import { writeDurably } from './durable.js';
import { HostFiles } from './host-files.js';
import { MAX_SESSION } from './ids.js';
import {
  Migration,
  type MigrationFormat,
  type MigrationProgress,
  type MigrationState,
} from './migration.js';

/**
 * What happens to a session's writes:
 * - `persistent`: instant recovery; writes survive restarts until the session is stopped.
 * - `sandbox`: verification; writes live in the cache and vanish when the session ends.
 * - `read-only`: writes are refused.
 */
export type SessionMode = 'persistent' | 'sandbox' | 'read-only';

/** Options of {@link RecoverySession.start}. */
export interface StartSessionOptions {
  readonly repository: Repository;
  /** Cache folder of the server: sessions live in `<cacheDir>/sessions/<name>`. */
  readonly cacheDir: string;
  readonly vm: string;
  /** Restore point id or unique prefix; the newest point of the VM when omitted. */
  readonly point?: string;
  /** Folder name in the datastore (default: the VM name). Unique per cache folder. */
  readonly name?: string;
  /** Default `persistent`. */
  readonly mode?: SessionMode;
  /**
   * Descriptor flavour: `esxi` (`createType="vmfs"`, default) or `hosted` (`monolithicFlat`, for
   * VMware Workstation; qemu reads both).
   */
  readonly target?: DescriptorTarget;
  /** Connect the VM's NICs at power-on (default false: an isolated restore must not clash). */
  readonly nicsConnected?: boolean;
  /**
   * Free bytes the VM needs on the cache volume, checked at start on top of the floor; default
   * max(20 GiB, 15% of the VM's disks), as Commvault asks per live recovery.
   */
  readonly minFreeBytes?: number;
  /**
   * Share of the cache volume kept free: checked at start, and the read cache never grows into
   * it. Default 0.05.
   */
  readonly floorFraction?: number;
  /**
   * Most bytes of decoded backup blocks kept per disk in the circular read cache; 0: no read
   * cache. Default 2 GiB.
   */
  readonly readCacheBytes?: number;
  /** Volume space (default `fs.statfs`); tests inject a fake. */
  readonly statfs?: StatFs;
  /**
   * Record the order in which the VM first reads its backup, for a boot profile
   * ({@link RecoverySession.bootProfile}). Default false.
   */
  readonly recordReads?: boolean;
}

/** Options of {@link RecoverySession.migrate}. */
export interface SessionMigrateOptions {
  /** Target folder on production storage. */
  readonly to: string;
  /** Default `flat-vmdk`. */
  readonly format?: MigrationFormat;
  /** Bytes per second per disk; 0 or absent: no limit. */
  readonly rateBytesPerSec?: number;
  /** Chunk size of the copy (default 1 MiB). */
  readonly chunkSize?: number;
  /** Called after every chunk and phase change. */
  readonly onProgress?: (progress: MigrationProgress) => void;
}

/** The persisted state of a session (`session.json`). */
export interface SessionState {
  readonly version: 1;
  readonly name: string;
  /** 1..65535, part of every file id of the session. */
  readonly number: number;
  readonly vm: string;
  readonly point: string;
  /** Id of the repository the point is in. */
  readonly repository: string;
  readonly mode: SessionMode;
  readonly target: DescriptorTarget;
  readonly created: string;
  /** False after a stop that kept the session's writes: not served until started again. */
  readonly active?: boolean;
  /** Read cache bytes per disk (0: none) and the floor; absent in sessions made before them. */
  readonly readCacheBytes?: number;
  readonly floorFraction?: number;
  /** The migration to production storage, once started. */
  readonly migration?: MigrationState;
}

/** One disk of a session: the backup's disk under the session's write overlay. */
export interface SessionDisk {
  readonly name: string;
  /** `<disk>.vmdk`: the descriptor the datastore serves, naming the flat file as its extent. */
  readonly descriptorName: string;
  /** `<disk>-flat.vmdk`. */
  readonly flatName: string;
  /** What the datastore serves for the flat file. */
  readonly extent: FlatExtent;
  readonly overlay: WriteOverlay;
  /** The circular cache of backup blocks beneath the overlay, when the session has one. */
  readonly readCache: ReadCache | undefined;
}

/** Figures of one disk of a session. */
export interface SessionDiskStats extends CacheStats {
  readonly disk: string;
  readonly size: number;
}

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const DEFAULT_READ_CACHE = 2 * 1024 ** 3;
const OVERLAY_MODE: Record<SessionMode, OverlayMode> = {
  persistent: 'persistent',
  sandbox: 'non-persistent',
  'read-only': 'read-only',
};

/**
 * An instant recovery session: one restore point of one VM, published as a folder of VM files,
 * with every write going to a copy-on-write overlay in the cache folder. Its state lives in the
 * cache folder, so a restarted server resumes it with the same file ids ({@link resumeAll}).
 */
export class RecoverySession {
  readonly dir: string;
  readonly point: RestorePointInfo;
  readonly disks: readonly SessionDisk[];
  readonly files: HostFiles;
  readonly #opened: RestorePoint;
  readonly #recorder: BootRecorder | undefined;
  #state: SessionState;
  #migration: Migration | undefined;
  #prefetch: { report: PrefetchReport; done: Promise<PrefetchReport> } | undefined;
  #closed = false;

  private constructor(
    state: SessionState,
    dir: string,
    opened: RestorePoint,
    disks: SessionDisk[],
    files: HostFiles,
    recorder: BootRecorder | undefined,
  ) {
    this.#recorder = recorder;
    this.#state = state;
    this.dir = dir;
    this.point = opened.info;
    this.#opened = opened;
    this.disks = disks;
    this.files = files;
  }

  /** The persisted state. */
  get state(): SessionState {
    return this.#state;
  }

  /** Folder name in the datastore. */
  get name(): string {
    return this.#state.name;
  }

  /** True when writes are refused: a read-only session, or one whose migration switched over. */
  get readOnly(): boolean {
    return this.#state.mode === 'read-only' || this.#state.migration?.switched !== undefined;
  }

  /**
   * Starts a new session: opens the point, creates the session folder, writes the `.vmx` and the
   * descriptors as files the hypervisor may rewrite, and opens one overlay per disk.
   * `IVMR_EXISTS` when a session of that name exists in the cache folder.
   */
  static async start(options: StartSessionOptions): Promise<RecoverySession> {
    const { repository, cacheDir } = options;
    const info = await repository.findPoint(options.vm, options.point);
    const name = options.name ?? options.vm;
    if (!NAME_RE.test(name)) {
      throw new IvmrError(
        ErrorCode.INVALID_ARGUMENT,
        `invalid session name ${JSON.stringify(name)}`,
      );
    }
    const root = join(cacheDir, 'sessions');
    await mkdir(root, { recursive: true });
    const existing = await readStates(root);
    if (existing.some((s) => s.name === name)) {
      throw new IvmrError(
        ErrorCode.EXISTS,
        `a session named ${name} exists in ${cacheDir}; stop it first or pick another name`,
        {
          details: { session: name },
        },
      );
    }
    const floorFraction = options.floorFraction ?? DEFAULT_FLOOR_FRACTION;
    await requireRecoverySpace({
      dir: root,
      vmSize: info.disks.reduce((n, d) => n + d.size, 0),
      floorFraction,
      ...(options.minFreeBytes === undefined ? {} : { minFreeBytes: options.minFreeBytes }),
      ...(options.statfs ? { statfs: options.statfs } : {}),
    });
    const readCacheBytes = options.readCacheBytes ?? DEFAULT_READ_CACHE;
    if (!Number.isSafeInteger(readCacheBytes) || readCacheBytes < 0) {
      throw new IvmrError(
        ErrorCode.INVALID_ARGUMENT,
        `readCacheBytes must be a whole number >= 0, got ${readCacheBytes}`,
      );
    }
    const used = new Set(existing.map((s) => s.number));
    let number = 1;
    while (used.has(number)) number++;
    if (number > MAX_SESSION)
      throw new IvmrError(ErrorCode.INVALID_ARGUMENT, 'too many sessions in one cache folder');
    const state: SessionState = {
      version: 1,
      name,
      number,
      vm: info.vm,
      point: info.id,
      repository: repository.config.id,
      mode: options.mode ?? 'persistent',
      target: options.target ?? 'esxi',
      created: new Date().toISOString(),
      active: true,
      readCacheBytes,
      floorFraction,
    };
    const dir = join(root, name);
    await mkdir(join(dir, 'files'), { recursive: true });
    const files = synthesizePointFiles(info, {
      repository: state.repository,
      target: state.target,
      nicsConnected: options.nicsConnected === true,
    });
    for (const [file, text] of [
      [files.vmxName, files.vmx],
      ...files.disks.map((d) => [d.descriptorName, d.descriptor]),
    ] as const) {
      await writeDurably(join(dir, 'files', file), text);
    }
    // The state file is written last: a folder without it is an unfinished start, removed on resume.
    await writeDurably(join(dir, 'session.json'), `${JSON.stringify(state, null, 2)}\n`);
    try {
      return await RecoverySession.#open(
        repository,
        state,
        dir,
        options.recordReads ? new BootRecorder() : undefined,
      );
    } catch (err) {
      await rm(dir, { recursive: true, force: true });
      throw err;
    }
  }

  /**
   * Reopens every session of a cache folder after a restart, with all flushed writes. Sandbox
   * sessions left by a crash are removed (their writes were never meant to last), as are folders
   * of starts that did not finish. Sessions of another repository, and sessions kept by a stop
   * (`active: false`), are skipped.
   */
  static async resumeAll(repository: Repository, cacheDir: string): Promise<RecoverySession[]> {
    const root = join(cacheDir, 'sessions');
    const sessions: RecoverySession[] = [];
    let names: string[];
    try {
      names = await readdir(root);
    } catch (err) {
      if ((err as { code?: string }).code === 'ENOENT') return [];
      throw err;
    }
    for (const name of names.sort()) {
      const dir = join(root, name);
      const state = await readState(dir);
      if (state === undefined || state.mode === 'sandbox') {
        await rm(dir, { recursive: true, force: true });
        continue;
      }
      if (state.repository !== repository.config.id || state.active === false) continue;
      sessions.push(await RecoverySession.#open(repository, state, dir));
    }
    return sessions;
  }

  static async #open(
    repository: Repository,
    state: SessionState,
    dir: string,
    recorder?: BootRecorder,
  ): Promise<RecoverySession> {
    const opened = await repository.openPoint(state.vm, state.point);
    const disks: SessionDisk[] = [];
    let files: HostFiles;
    try {
      const names = synthesizePointFiles(opened.info, {
        repository: state.repository,
        target: state.target,
      });
      for (const [i, d] of opened.info.disks.entries()) {
        const base: BlockSource = opened.disk(d.name);
        const maxBytes = Math.min(state.readCacheBytes ?? 0, base.size);
        const readCache =
          maxBytes > 0
            ? await ReadCache.open(base, {
                path: join(dir, 'read-cache', `disk${i}.rcache`),
                maxBytes,
                sourceId: `${state.repository}/${state.point}/${d.name}`,
                minFreeFraction: state.floorFraction ?? DEFAULT_FLOOR_FRACTION,
              })
            : undefined;
        let overlay: WriteOverlay;
        try {
          const below = readCache ?? base;
          overlay = await WriteOverlay.open(recorder ? recorder.wrap(i, below) : below, {
            dir: join(dir, 'overlays'),
            name: `disk${i}`,
            mode: OVERLAY_MODE[state.mode],
            ...(readCache ? { reclaimSpace: (n: number) => readCache.shrink(n) } : {}),
          });
        } catch (err) {
          await readCache?.close();
          throw err;
        }
        if (state.migration?.switched !== undefined) overlay.seal();
        disks.push({
          name: d.name,
          descriptorName: names.disks[i]!.descriptorName,
          flatName: names.disks[i]!.flatName,
          extent: new FlatExtent(overlay),
          overlay,
          readCache,
        });
      }
      files = await HostFiles.open(join(dir, 'files'), join(dir, 'host-files.json'));
    } catch (err) {
      for (const d of disks) {
        await d.overlay.close().catch(() => {});
        await d.readCache?.close().catch(() => {});
      }
      await opened.close();
      throw err;
    }
    return new RecoverySession(state, dir, opened, disks, files, recorder);
  }

  /**
   * Reads the state of every session in a cache folder without opening any (for listings while
   * no server runs). Folders of starts that did not finish are left out.
   */
  static async list(cacheDir: string): Promise<SessionState[]> {
    try {
      return (await readStates(join(cacheDir, 'sessions'))).sort((a, b) => a.number - b.number);
    } catch (err) {
      if ((err as { code?: string }).code === 'ENOENT') return [];
      throw err;
    }
  }

  /**
   * Changes the persisted state of a session that is not open (`active: false` keeps it for a
   * later start). `IVMR_NOT_FOUND` when the cache folder has no such session.
   */
  static async updateState(
    cacheDir: string,
    name: string,
    change: Partial<Pick<SessionState, 'active'>>,
  ): Promise<SessionState> {
    const dir = join(cacheDir, 'sessions', name);
    const state = NAME_RE.test(name) ? await readState(dir) : undefined;
    if (!state) throw notFound(name, cacheDir);
    const next = { ...state, ...change };
    await writeDurably(join(dir, 'session.json'), `${JSON.stringify(next, null, 2)}\n`);
    return next;
  }

  /**
   * Deletes a session that is not open, with all its writes. `IVMR_NOT_FOUND` when the cache
   * folder has no such session.
   */
  /**
   * Stops a session that is not open: drops it when `discard` is set or it is a sandbox (whose
   * writes never outlive it), else marks it kept. Returns true when its writes were dropped.
   */
  static async stopClosed(
    cacheDir: string,
    name: string,
    options: { discard?: boolean } = {},
  ): Promise<boolean> {
    const state = NAME_RE.test(name)
      ? await readState(join(cacheDir, 'sessions', name))
      : undefined;
    if (!state) throw notFound(name, cacheDir);
    if (options.discard || state.mode === 'sandbox') {
      await RecoverySession.discard(cacheDir, name);
      return true;
    }
    await RecoverySession.updateState(cacheDir, name, { active: false });
    return false;
  }

  static async discard(cacheDir: string, name: string): Promise<void> {
    const dir = join(cacheDir, 'sessions', name);
    if (!NAME_RE.test(name) || (await readState(dir)) === undefined) throw notFound(name, cacheDir);
    await rm(dir, { recursive: true, force: true });
  }

  /** Reopens a session that is not open (e.g. one kept by a stop), and marks it active. */
  static async resume(
    repository: Repository,
    cacheDir: string,
    name: string,
  ): Promise<RecoverySession> {
    const dir = join(cacheDir, 'sessions', name);
    const state = NAME_RE.test(name) ? await readState(dir) : undefined;
    if (!state) throw notFound(name, cacheDir);
    if (state.repository !== repository.config.id) {
      throw new IvmrError(
        ErrorCode.INVALID_ARGUMENT,
        `session ${name} belongs to repository ${state.repository}, not ${repository.config.id}`,
      );
    }
    const next: SessionState = { ...state, active: true };
    if (state.active === false) {
      await writeDurably(join(dir, 'session.json'), `${JSON.stringify(next, null, 2)}\n`);
    }
    return RecoverySession.#open(repository, next, dir);
  }

  /**
   * 8 bytes that change exactly when one of the session's overlays may have lost unflushed
   * writes (the NFS write verifier).
   */
  verifier(): Uint8Array {
    const h = createHash('sha256').update(this.state.name).update(this.files.verifier);
    for (const d of this.disks) h.update(d.overlay.verifier);
    return h.digest().subarray(0, 8);
  }

  /** Bytes written since the last flush, over all disks. */
  get dirtyBytes(): number {
    return this.disks.reduce((n, d) => n + d.overlay.stats().dirtyBytes, 0);
  }

  /** Makes every acknowledged write of every disk durable. */
  async flush(): Promise<void> {
    for (const d of this.disks) await d.overlay.flush();
  }

  /** Overlay and read cache figures of every disk. */
  stats(): SessionDiskStats[] {
    return this.disks.map((d) => ({
      disk: d.name,
      size: d.overlay.size,
      ...cacheStats(d.overlay, d.readCache),
    }));
  }

  /** Bytes the session's folder takes on the cache volume (overlays, read cache, files). */
  async diskUsage(): Promise<number> {
    return diskUsage(this.dir);
  }

  /** Bytes the folder of session `name` takes on the cache volume (0 when it has none). */
  static diskUsageOf(cacheDir: string, name: string): Promise<number> {
    return NAME_RE.test(name) ? diskUsage(join(cacheDir, 'sessions', name)) : Promise.resolve(0);
  }

  /**
   * The boot profile recorded so far: the ranges the VM read from its backup (reads its own
   * writes answered are not among them), in first-read order. Stops the recording. Undefined when
   * the session was not started with `recordReads`.
   */
  bootProfile(bootMs?: number): BootProfile | undefined {
    const recorder = this.#recorder;
    if (!recorder) return undefined;
    recorder.stop();
    return {
      version: 1,
      repository: this.#state.repository,
      vm: this.#state.vm,
      point: this.#state.point,
      recorded: new Date().toISOString(),
      granule: recorder.granule,
      disks: this.disks.map((d) => ({ name: d.name, size: d.overlay.size })),
      reads: recorder.reads.map((r) => [...r] as const),
      ...(bootMs === undefined ? {} : { bootMs }),
    };
  }

  /**
   * Loads what `profile` names into the disks' read caches, in the recorded order, matching disks
   * by name, a few loads at a time, at most half of each read cache (see {@link PrefetchOptions});
   * a damaged block is counted and skipped. Its figures are in {@link prefetchStatus} meanwhile. A profile of
   * another point of the same VM is fine: the bytes come from this session's point. Resolves with
   * the final figures; never rejects. Calling it again while one runs returns that one.
   */
  prefetch(profile: BootProfile, options: PrefetchOptions = {}): Promise<PrefetchReport> {
    this.#checkOpen();
    if (this.#prefetch?.report.state === 'running') return this.#prefetch.done;
    const first: PrefetchReport = {
      state: 'running',
      profilePoint: profile.point,
      profileBytes: profileBytes(profile.reads),
      bytesLoaded: 0,
      bytesSkipped: 0,
      failures: 0,
      ms: 0,
    };
    const disks = this.disks.map((d) => ({
      name: d.name,
      size: d.overlay.size,
      readCache: d.readCache,
    }));
    const update = (r: PrefetchReport) => {
      if (this.#prefetch) this.#prefetch.report = r;
    };
    const done = prefetchProfile(profile, disks, {
      ...options,
      onProgress: (r) => {
        update(r);
        options.onProgress?.(r);
      },
    }).then((r) => {
      update(r);
      return r;
    });
    this.#prefetch = { report: first, done };
    return done;
  }

  /** Figures of the boot prefetch, when one was started. */
  prefetchStatus(): PrefetchReport | undefined {
    return this.#prefetch?.report;
  }

  /** The running migration, if any. */
  get migration(): Migration | undefined {
    return this.#migration;
  }

  /**
   * Starts migrating every disk to `options.to` while the VM keeps running (or returns the
   * running migration when it has the same target). The target is recorded in the session's
   * state, so a restarted server resumes it ({@link resumeMigration}). `IVMR_EXISTS` when a
   * migration to another folder was started; `IVMR_UNSUPPORTED` for a sandbox or read-only
   * session.
   */
  async migrate(options: SessionMigrateOptions): Promise<Migration> {
    this.#checkOpen();
    const format = options.format ?? 'flat-vmdk';
    const recorded = this.#state.migration;
    if (recorded && (recorded.to !== options.to || recorded.format !== format)) {
      throw new IvmrError(
        ErrorCode.EXISTS,
        `session ${this.name} is already migrating to ${recorded.to} (${recorded.format})`,
        { details: { session: this.name, to: recorded.to } },
      );
    }
    if (recorded?.switched !== undefined) {
      throw new IvmrError(
        ErrorCode.EXISTS,
        `session ${this.name} was migrated to ${recorded.to} at ${recorded.switched}`,
        { details: { session: this.name, to: recorded.to } },
      );
    }
    if (this.#state.mode !== 'persistent') {
      throw new IvmrError(
        ErrorCode.UNSUPPORTED,
        `session ${this.name} is ${this.#state.mode}: only a persistent session migrates`,
      );
    }
    if (this.#migration) return this.#migration;
    const migration = await Migration.start({
      to: options.to,
      format,
      disks: this.disks.map((d) => ({
        name: d.name,
        flatName: d.flatName,
        flatSize: d.extent.size,
        overlay: d.overlay,
      })),
      filesDir: this.files.dir,
      vmFiles: this.#vmFiles(),
      ...(options.rateBytesPerSec ? { rateBytesPerSec: options.rateBytesPerSec } : {}),
      ...(options.chunkSize ? { chunkSize: options.chunkSize } : {}),
      ...(options.onProgress ? { onProgress: options.onProgress } : {}),
    });
    if (!recorded) {
      try {
        await this.#save({ ...this.#state, migration: { to: options.to, format } });
      } catch (err) {
        await migration.stop();
        throw err;
      }
    }
    this.#migration = migration;
    return migration;
  }

  /** Restarts the migration recorded in the state after a restart, if one was not finished. */
  async resumeMigration(): Promise<Migration | undefined> {
    const m = this.#state.migration;
    if (!m || m.switched !== undefined || this.#migration) return this.#migration;
    return this.migrate({ to: m.to, format: m.format });
  }

  /**
   * Completes the migration: the targets get the last writes, then every overlay is sealed and
   * the session is read-only for good (writes answer read-only; the target is the VM's disk).
   */
  async switchOver(): Promise<void> {
    this.#checkOpen();
    const migration = this.#migration;
    if (!migration) {
      throw new IvmrError(
        ErrorCode.NOT_FOUND,
        `session ${this.name} is not migrating: start the migration first`,
      );
    }
    await migration.switchOver(async () => {
      for (const d of this.disks) d.overlay.seal();
      await this.#save({
        ...this.#state,
        migration: { ...this.#state.migration!, switched: new Date().toISOString() },
      });
    });
  }
  /**
   * Ends the serving of the session, keeping its writes (persistent) for a later resume. A
   * sandbox session's writes and folder are deleted.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    let failure: unknown;
    await this.#migration?.stop();
    const prefetching = this.#prefetch?.done;
    for (const d of this.disks) {
      await d.overlay.close().catch((err: unknown) => {
        failure ??= err;
      });
      await d.readCache?.close().catch((err: unknown) => {
        failure ??= err;
      });
    }
    // Closed read caches stop the prefetch; its loads in flight end before the point closes.
    await prefetching;
    await this.files.close();
    await this.#opened.close();
    if (this.state.mode === 'sandbox') await rm(this.dir, { recursive: true, force: true });
    if (failure) throw failure;
  }

  /** Ends the session and drops every write (cancel of an instant recovery). */
  async cancel(): Promise<void> {
    await this.close().catch((err: unknown) => {
      if (!isIvmrError(err)) throw err;
    });
    await rm(this.dir, { recursive: true, force: true });
  }

  /** The `.vmx` and descriptors, by the names the point gives them. */
  #vmFiles(): string[] {
    const names = synthesizePointFiles(this.point, {
      repository: this.#state.repository,
      target: this.#state.target,
    });
    return [names.vmxName, ...names.disks.map((d) => d.descriptorName)];
  }

  async #save(state: SessionState): Promise<void> {
    await writeDurably(join(this.dir, 'session.json'), `${JSON.stringify(state, null, 2)}\n`);
    this.#state = state;
  }

  #checkOpen(): void {
    if (this.#closed) throw new IvmrError(ErrorCode.CLOSED, `session ${this.name} is closed`);
  }
}

function notFound(name: string, cacheDir: string): IvmrError {
  return new IvmrError(ErrorCode.NOT_FOUND, `no session named ${name} in ${cacheDir}`, {
    details: { session: name },
  });
}

/** Bytes allocated to the files under `dir`. */
async function diskUsage(dir: string): Promise<number> {
  let total = 0;
  let entries: string[];
  try {
    entries = await readdir(dir, { recursive: true, encoding: 'utf8' });
  } catch {
    return 0;
  }
  for (const e of entries) {
    const st = await lstat(join(dir, e)).catch(() => undefined);
    if (st?.isFile()) total += st.blocks * 512;
  }
  return total;
}

async function readStates(root: string): Promise<SessionState[]> {
  const states: SessionState[] = [];
  for (const name of await readdir(root)) {
    const s = await readState(join(root, name));
    if (s) states.push(s);
  }
  return states;
}

async function readState(dir: string): Promise<SessionState | undefined> {
  try {
    const s = JSON.parse(await readFile(join(dir, 'session.json'), 'utf8')) as SessionState;
    return s.version === 1 && Number.isInteger(s.number) ? s : undefined;
  } catch {
    return undefined;
  }
}
