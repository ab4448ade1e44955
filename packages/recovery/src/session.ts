import { createHash } from 'node:crypto';
import { mkdir, open, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { type OverlayMode, WriteOverlay } from '@ivmr/cache';
import {
  ErrorCode,
  IvmrError,
  isIvmrError,
  type Repository,
  type RestorePoint,
  type RestorePointInfo,
} from '@ivmr/core';
import { type DescriptorTarget, FlatExtent, synthesizePointFiles } from '@ivmr/vmdk';
import { HostFiles } from './host-files.js';
import { MAX_SESSION } from './ids.js';

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
}

/** One disk of a session: the backup's disk under the session's write overlay. */
export interface SessionDisk {
  readonly name: string;
  /** `<disk>-flat.vmdk`. */
  readonly flatName: string;
  /** What the datastore serves for the flat file. */
  readonly extent: FlatExtent;
  readonly overlay: WriteOverlay;
}

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
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
  readonly state: SessionState;
  readonly dir: string;
  readonly point: RestorePointInfo;
  readonly disks: readonly SessionDisk[];
  readonly files: HostFiles;
  readonly #opened: RestorePoint;
  #closed = false;

  private constructor(
    state: SessionState,
    dir: string,
    opened: RestorePoint,
    disks: SessionDisk[],
  ) {
    this.state = state;
    this.dir = dir;
    this.point = opened.info;
    this.#opened = opened;
    this.disks = disks;
    this.files = new HostFiles(join(dir, 'files'));
  }

  /** Folder name in the datastore. */
  get name(): string {
    return this.state.name;
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
      return await RecoverySession.#open(repository, state, dir);
    } catch (err) {
      await rm(dir, { recursive: true, force: true });
      throw err;
    }
  }

  /**
   * Reopens every session of a cache folder after a restart, with all flushed writes. Sandbox
   * sessions left by a crash are removed (their writes were never meant to last), as are folders
   * of starts that did not finish. Sessions of another repository are skipped.
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
      if (state.repository !== repository.config.id) continue;
      sessions.push(await RecoverySession.#open(repository, state, dir));
    }
    return sessions;
  }

  static async #open(
    repository: Repository,
    state: SessionState,
    dir: string,
  ): Promise<RecoverySession> {
    const opened = await repository.openPoint(state.vm, state.point);
    const disks: SessionDisk[] = [];
    try {
      const names = synthesizePointFiles(opened.info, {
        repository: state.repository,
        target: state.target,
      });
      for (const [i, d] of opened.info.disks.entries()) {
        const overlay = await WriteOverlay.open(opened.disk(d.name), {
          dir: join(dir, 'overlays'),
          name: `disk${i}`,
          mode: OVERLAY_MODE[state.mode],
        });
        disks.push({
          name: d.name,
          flatName: names.disks[i]!.flatName,
          extent: new FlatExtent(overlay),
          overlay,
        });
      }
    } catch (err) {
      for (const d of disks) await d.overlay.close().catch(() => {});
      await opened.close();
      throw err;
    }
    return new RecoverySession(state, dir, opened, disks);
  }

  /**
   * 8 bytes that change exactly when one of the session's overlays may have lost unflushed
   * writes (the NFS write verifier).
   */
  verifier(): Uint8Array {
    const h = createHash('sha256').update(this.state.name);
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

  /**
   * Ends the serving of the session, keeping its writes (persistent) for a later resume. A
   * sandbox session's writes and folder are deleted.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    let failure: unknown;
    for (const d of this.disks) {
      await d.overlay.close().catch((err: unknown) => {
        failure ??= err;
      });
    }
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

async function writeDurably(path: string, text: string): Promise<void> {
  const tmp = `${path}.tmp`;
  await writeFile(tmp, text);
  const fh = await open(tmp, 'r');
  await fh.sync();
  await fh.close();
  await rename(tmp, path);
}
