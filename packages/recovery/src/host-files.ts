import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import {
  chmod,
  chown,
  type FileHandle,
  lstat,
  open,
  readdir,
  readFile,
  rename,
  rm,
  stat,
  truncate,
  utimes,
} from 'node:fs/promises';
import { join } from 'node:path';
import {
  type CreateMode,
  type FileAttributes,
  NfsStatusError,
  type SetAttributes,
  type StableHow,
} from '@ivmr/nfs';
import { syncPath, TEMPORARY_SUFFIX, writeDurably } from './durable.js';

/** What `host-files.json` records between runs. */
interface HostFilesState {
  /** The write verifier, 16 hex digits. */
  readonly verifier: string;
  /** True while a run may hold unstable writes that no sync covered. */
  readonly dirty: boolean;
}

/**
 * The real files of one VM folder: everything a hypervisor creates next to the disks (`.lck-*`
 * lock files, `vmware.log`, `.nvram`, `.vmsd`, `.vmx~`, swap files, new disks) and the `.vmx`
 * and descriptors, which are written here when the session starts so the hypervisor can rewrite
 * them. One flat folder: subdirectories are not supported. Files are named by inode number,
 * which is stable across restarts.
 *
 * Durability follows RFC 1813: CREATE, REMOVE, RENAME and size changes are on stable storage
 * before they return; UNSTABLE writes are made durable by `commit`, and the {@link verifier}
 * changes when a run that acknowledged unstable writes ended without {@link close}, so clients
 * send again what such a crash may have lost.
 */
export class HostFiles {
  readonly dir: string;
  readonly #statePath: string;
  readonly #byIno = new Map<bigint, string>();
  readonly #handles = new Map<bigint, Promise<FileHandle>>();
  #verifier: Uint8Array;
  /** Set once this run has recorded that it holds unstable writes. */
  #marking: Promise<void> | undefined;

  private constructor(dir: string, statePath: string, verifier: Uint8Array) {
    this.dir = dir;
    this.#statePath = statePath;
    this.#verifier = verifier;
  }

  /**
   * Opens the files of folder `dir`, with their verifier state in `statePath`. A new verifier is
   * drawn when the state is missing or says the last run ended with unstable writes unsynced.
   */
  static async open(dir: string, statePath: string): Promise<HostFiles> {
    let state: HostFilesState | undefined;
    try {
      state = JSON.parse(await readFile(statePath, 'utf8')) as HostFilesState;
    } catch (err) {
      if ((err as { code?: string }).code !== 'ENOENT' && !(err instanceof SyntaxError)) throw err;
    }
    const keep = state?.dirty === false && /^[0-9a-f]{16}$/.test(state.verifier);
    const files = new HostFiles(
      dir,
      statePath,
      keep ? Buffer.from(state!.verifier, 'hex') : randomBytes(8),
    );
    if (!keep) await files.#saveState(false);
    return files;
  }

  /**
   * The 8-byte write verifier (a copy): it changes exactly when a previous run acknowledged
   * UNSTABLE writes and ended without a clean {@link close}.
   */
  get verifier(): Uint8Array {
    return this.#verifier.slice();
  }

  /** Inode of `name`, or NOENT. */
  async lookup(name: string): Promise<bigint> {
    const st = await lstat(join(this.dir, name), { bigint: true });
    if (!st.isFile()) throw NfsStatusError.of('NOENT', `${name} is not a regular file`);
    this.#byIno.set(st.ino, name);
    return st.ino;
  }

  /** Every regular file, by name and inode (not the temporary files of ivmr's own writes). */
  async list(): Promise<{ name: string; ino: bigint }[]> {
    const out: { name: string; ino: bigint }[] = [];
    for (const name of (await readdir(this.dir)).sort()) {
      if (name.endsWith(TEMPORARY_SUFFIX)) continue;
      try {
        out.push({ name, ino: await this.lookup(name) });
      } catch {
        // Vanished or not a regular file: not listed.
      }
    }
    return out;
  }

  /** The current name of inode `ino` (rescans the folder when not known); STALE when gone. */
  async nameOf(ino: bigint): Promise<string> {
    const known = this.#byIno.get(ino);
    if (known !== undefined) {
      const st = await lstat(join(this.dir, known), { bigint: true }).catch(() => undefined);
      if (st?.ino === ino) return known;
      this.#byIno.delete(ino);
    }
    for (const f of await this.list()) if (f.ino === ino) return f.name;
    throw NfsStatusError.of('STALE');
  }

  async getattr(ino: bigint, fileId: bigint): Promise<FileAttributes> {
    const st = await stat(join(this.dir, await this.nameOf(ino)), { bigint: true });
    const time = (ns: bigint) => ({
      seconds: Number(ns / 1_000_000_000n),
      nanoseconds: Number(ns % 1_000_000_000n),
    });
    return {
      type: 'file',
      mode: Number(st.mode) & 0o7777,
      nlink: Number(st.nlink),
      uid: Number(st.uid),
      gid: Number(st.gid),
      size: Number(st.size),
      used: Number(st.blocks) * 512,
      fileId,
      atime: time(st.atimeNs),
      mtime: time(st.mtimeNs),
      ctime: time(st.ctimeNs),
    };
  }

  /** Reads up to `count` bytes at `offset`, into `into` when it has room (as NFS READ allows). */
  async read(ino: bigint, offset: number, count: number, into?: Uint8Array): Promise<Uint8Array> {
    const fh = await this.#handle(ino);
    const out = into && into.length >= count ? into.subarray(0, count) : Buffer.allocUnsafe(count);
    let done = 0;
    while (done < count) {
      const { bytesRead } = await fh.read(out, done, count - done, offset + done);
      if (bytesRead === 0) break;
      done += bytesRead;
    }
    return out.subarray(0, done);
  }

  async write(
    ino: bigint,
    offset: number,
    data: Uint8Array,
    stable: StableHow,
  ): Promise<StableHow> {
    const fh = await this.#handle(ino);
    let done = 0;
    while (done < data.length) {
      const { bytesWritten } = await fh.write(data, done, data.length - done, offset + done);
      done += bytesWritten;
    }
    if (stable === 'file_sync') await fh.sync();
    else if (stable === 'data_sync') await fh.datasync();
    else await this.#markUnstable();
    return stable;
  }

  async commit(ino: bigint): Promise<void> {
    await (await this.#handle(ino)).sync();
  }

  /**
   * Creates a file (RFC 1813 CREATE semantics). For `exclusive`, the verifier is kept in the
   * file's atime and mtime, as Linux's nfsd does, so a retransmitted create is recognised even
   * after a restart; the client then sets the real times with SETATTR.
   */
  async create(
    name: string,
    mode: CreateMode,
    attrs: SetAttributes,
    verifier: Uint8Array | undefined,
  ): Promise<bigint> {
    const path = join(this.dir, name);
    if (mode === 'exclusive') {
      const v = Buffer.from(verifier ?? new Uint8Array(8));
      const [hi, lo] = [v.readUInt32BE(0), v.readUInt32BE(4)];
      try {
        const fh = await open(path, constants.O_CREAT | constants.O_EXCL | constants.O_RDWR, 0o644);
        await fh.close();
        await utimes(path, hi, lo);
        await syncPath(path);
        await syncPath(this.dir);
      } catch (err) {
        if ((err as { code?: string }).code !== 'EEXIST') throw err;
        const st = await stat(path);
        if (Math.floor(st.atimeMs / 1000) !== hi || Math.floor(st.mtimeMs / 1000) !== lo) throw err;
      }
      return this.lookup(name);
    }
    const flags =
      constants.O_CREAT | constants.O_RDWR | (mode === 'guarded' ? constants.O_EXCL : 0);
    const fh = await open(path, flags, attrs.mode ?? 0o644);
    await fh.close();
    const ino = await this.lookup(name);
    await this.setattr(ino, attrs);
    await syncPath(this.dir);
    return ino;
  }

  async remove(name: string): Promise<void> {
    const ino = await this.lookup(name);
    this.#forget(ino);
    await rm(join(this.dir, name));
    await syncPath(this.dir);
  }

  /** Renames within the folder, replacing an existing file. */
  async rename(from: string, to: string): Promise<void> {
    const ino = await this.lookup(from);
    await rename(join(this.dir, from), join(this.dir, to));
    this.#byIno.set(ino, to);
    await syncPath(this.dir);
  }

  /** Sets attributes; a size change is durable before it returns (the other attributes too). */
  async setattr(ino: bigint, attrs: SetAttributes): Promise<void> {
    const path = join(this.dir, await this.nameOf(ino));
    if (attrs.size !== undefined) await truncate(path, attrs.size);
    if (attrs.mode !== undefined) await chmod(path, attrs.mode & 0o7777);
    if (attrs.uid !== undefined || attrs.gid !== undefined) {
      const st = await stat(path);
      await chown(path, attrs.uid ?? st.uid, attrs.gid ?? st.gid);
    }
    if (attrs.atime !== undefined || attrs.mtime !== undefined) {
      const st = await stat(path);
      const t = (v: SetAttributes['atime'], current: Date) =>
        v === undefined ? current : v === 'server' ? new Date() : v.seconds + v.nanoseconds / 1e9;
      await utimes(path, t(attrs.atime, st.atime), t(attrs.mtime, st.mtime));
    }
    if (Object.values(attrs).some((v) => v !== undefined)) await syncPath(path);
  }

  /**
   * Makes every write durable and closes every open file; records a clean end, so the verifier
   * stays. When a sync fails, the end is not recorded clean and the next run gets a new verifier.
   */
  async close(): Promise<void> {
    const handles = [...this.#handles.values()];
    this.#handles.clear();
    const synced = await Promise.allSettled(
      handles.map(async (h) => {
        const fh = await h;
        try {
          await fh.sync();
        } finally {
          await fh.close();
        }
      }),
    );
    const failed = synced.find((r) => r.status === 'rejected');
    if (failed) throw (failed as PromiseRejectedResult).reason;
    if (this.#marking) {
      await this.#marking.catch(() => {});
      await this.#saveState(false);
      this.#marking = undefined;
    }
  }

  /**
   * Records durably, once per run and before the first unstable write is acknowledged, that this
   * run holds writes no sync covered (see {@link verifier}).
   */
  #markUnstable(): Promise<void> {
    this.#marking ??= this.#saveState(true).catch((err: unknown) => {
      this.#marking = undefined;
      throw err;
    });
    return this.#marking;
  }

  #saveState(dirty: boolean): Promise<void> {
    const state: HostFilesState = { verifier: Buffer.from(this.#verifier).toString('hex'), dirty };
    return writeDurably(this.#statePath, `${JSON.stringify(state)}\n`);
  }

  #handle(ino: bigint): Promise<FileHandle> {
    let h = this.#handles.get(ino);
    if (!h) {
      h = this.nameOf(ino).then((name) => open(join(this.dir, name), 'r+'));
      h.catch(() => this.#handles.delete(ino));
      this.#handles.set(ino, h);
    }
    return h;
  }

  #forget(ino: bigint): void {
    const h = this.#handles.get(ino);
    this.#handles.delete(ino);
    h?.then((fh) => fh.close()).catch(() => {});
  }
}
