import { createHash } from 'node:crypto';
import { statfs } from 'node:fs/promises';
import { ErrorCode, isIvmrError } from '@ivmr/core';
import type {
  CreateMode,
  DirectoryEntry,
  FileAttributes,
  FsStat,
  NfsFileSystem,
  NfsRequestContext,
  NfsTime,
  SetAttributes,
  StableHow,
} from '@ivmr/nfs';
import { NfsStatusError } from '@ivmr/nfs';
import { IdKind, MAX_LOCAL, makeId, ROOT_ID, splitId } from './ids.js';
import type { RecoverySession, SessionDisk } from './session.js';

/**
 * The recovery datastore: an {@link NfsFileSystem} whose root holds one folder per session
 * (`<vm>/`), each with the VM's files. The `-flat.vmdk` files are the sessions' disks (backup
 * plus overlay); every other file (the `.vmx` and descriptors written at session start, and what
 * the hypervisor creates: lock files, logs, nvram, swap) is a real file in the session's cache
 * folder. File ids are computed from the session number and the disk index or inode, so they
 * stay the same across restarts.
 */
export class RecoveryDatastore implements NfsFileSystem {
  readonly rootId = ROOT_ID;
  readonly #sessions = new Map<number, RecoverySession>();
  readonly #cacheDir: string;
  readonly #started: NfsTime;
  #verifier: Uint8Array | undefined;
  /** Last write time per flat extent id, for mtime. */
  readonly #written = new Map<bigint, NfsTime>();
  /** Per session number: client address -> last call (ms since the epoch). */
  readonly #clients = new Map<number, Map<string, number>>();

  constructor(cacheDir: string, sessions: readonly RecoverySession[] = []) {
    this.#cacheDir = cacheDir;
    const now = Date.now();
    this.#started = { seconds: Math.floor(now / 1000), nanoseconds: (now % 1000) * 1e6 };
    for (const s of sessions) this.publish(s);
  }

  /** Publishes a session's folder. */
  publish(session: RecoverySession): void {
    this.#sessions.set(session.state.number, session);
    this.#verifier = undefined;
  }

  /** Unpublishes a session's folder (its handles become STALE). */
  unpublish(session: RecoverySession): void {
    this.#sessions.delete(session.state.number);
    this.#clients.delete(session.state.number);
    this.#verifier = undefined;
  }

  /** The published sessions. */
  get sessions(): RecoverySession[] {
    return [...this.#sessions.values()];
  }

  /** The clients that reached a session's folder, with the time of their last call (ms). */
  clientsOf(session: RecoverySession): { address: string; lastSeen: number }[] {
    const m = this.#clients.get(session.state.number);
    return m ? [...m].map(([address, lastSeen]) => ({ address, lastSeen })) : [];
  }

  async getattr(id: bigint, ctx?: NfsRequestContext): Promise<FileAttributes> {
    const t = this.#target(id, ctx);
    switch (t.kind) {
      case IdKind.Root:
        return dirAttrs(id, 2 + this.#sessions.size, this.#started);
      case IdKind.Folder:
        return dirAttrs(id, 2, this.#started);
      case IdKind.Flat: {
        const { extent } = t.disk!;
        const mtime = this.#written.get(id) ?? this.#started;
        return {
          type: 'file',
          mode: t.session!.readOnly ? 0o444 : 0o644,
          nlink: 1,
          uid: 0,
          gid: 0,
          size: extent.size,
          used: extent.used,
          fileId: id,
          atime: mtime,
          mtime,
          ctime: mtime,
        };
      }
      default:
        return t.session!.files.getattr(t.local, id);
    }
  }

  async lookup(dirId: bigint, name: string, ctx?: NfsRequestContext): Promise<bigint> {
    const t = this.#target(dirId, ctx);
    if (t.kind === IdKind.Root) {
      for (const s of this.#sessions.values()) {
        if (s.name === name) return makeId(IdKind.Folder, s.state.number, 0n);
      }
      throw NfsStatusError.of('NOENT');
    }
    if (t.kind !== IdKind.Folder) throw NfsStatusError.of('NOTDIR');
    const session = t.session!;
    const disk = session.disks.findIndex((d) => d.flatName === name);
    if (disk >= 0) return makeId(IdKind.Flat, session.state.number, BigInt(disk));
    return this.#hostId(session, await session.files.lookup(name));
  }

  async read(
    id: bigint,
    offset: number,
    count: number,
    ctx?: NfsRequestContext,
    into?: Uint8Array,
  ): Promise<Uint8Array> {
    const t = this.#target(id, ctx);
    if (t.kind === IdKind.Root || t.kind === IdKind.Folder) throw NfsStatusError.of('ISDIR');
    if (t.kind === IdKind.Flat) {
      const { extent } = t.disk!;
      const n = Math.max(0, Math.min(count, extent.size - offset));
      if (n === 0) return new Uint8Array(0);
      return extent.read(offset, n, into && into.length >= n ? into : undefined);
    }
    return t.session!.files.read(t.local, offset, count, into);
  }

  async readdir(dirId: bigint): Promise<readonly DirectoryEntry[]> {
    const t = this.#target(dirId);
    if (t.kind === IdKind.Root) {
      return [...this.#sessions.values()]
        .sort((a, b) => a.state.number - b.state.number)
        .map((s) => ({ name: s.name, fileId: makeId(IdKind.Folder, s.state.number, 0n) }));
    }
    if (t.kind !== IdKind.Folder) throw NfsStatusError.of('NOTDIR');
    const session = t.session!;
    const flats = session.disks.map((d, i) => ({
      name: d.flatName,
      fileId: makeId(IdKind.Flat, session.state.number, BigInt(i)),
    }));
    const taken = new Set(flats.map((f) => f.name));
    const hosts = (await session.files.list())
      .filter((f) => !taken.has(f.name))
      .map((f) => ({ name: f.name, fileId: this.#hostId(session, f.ino) }));
    return [...flats, ...hosts];
  }

  async fsstat(): Promise<FsStat> {
    const s = await statfs(this.#cacheDir);
    return {
      totalBytes: s.blocks * s.bsize,
      freeBytes: s.bfree * s.bsize,
      availableBytes: s.bavail * s.bsize,
      totalFiles: s.files,
      freeFiles: s.ffree,
      availableFiles: s.ffree,
    };
  }

  async write(
    id: bigint,
    offset: number,
    data: Uint8Array,
    stable: StableHow,
    ctx?: NfsRequestContext,
  ): Promise<StableHow> {
    const t = this.#target(id, ctx);
    if (t.kind === IdKind.Root || t.kind === IdKind.Folder) throw NfsStatusError.of('ISDIR');
    if (t.kind === IdKind.Host) {
      if (t.session!.readOnly) throw NfsStatusError.of('ROFS');
      return t.session!.files.write(t.local, offset, data, stable);
    }
    const { extent } = this.#writableDisk(t);
    if (offset + data.length > extent.size)
      throw NfsStatusError.of('FBIG', 'a flat extent cannot grow by writing');
    try {
      await extent.write(offset, data);
    } catch (err) {
      throw overlayStatus(err);
    }
    const now = Date.now();
    this.#written.set(id, { seconds: Math.floor(now / 1000), nanoseconds: (now % 1000) * 1e6 });
    if (stable === 'unstable') return stable;
    await extent.flush();
    return 'file_sync';
  }

  async commit(id: bigint, ctx?: NfsRequestContext): Promise<void> {
    const t = this.#target(id, ctx);
    if (t.kind === IdKind.Flat) await t.disk!.extent.flush();
    else if (t.kind === IdKind.Host) await t.session!.files.commit(t.local);
  }

  writeVerifier(): Uint8Array {
    if (!this.#verifier) {
      const h = createHash('sha256');
      for (const s of [...this.#sessions.values()].sort(
        (a, b) => a.state.number - b.state.number,
      )) {
        h.update(s.verifier());
      }
      this.#verifier = h.digest().subarray(0, 8);
    }
    return this.#verifier;
  }

  async create(
    dirId: bigint,
    name: string,
    mode: CreateMode,
    attrs: SetAttributes,
    verifier: Uint8Array | undefined,
  ): Promise<bigint> {
    const disk = this.#recoveredDisk(dirId, name);
    if (disk) {
      // RFC 1813: GUARDED and EXCLUSIVE fail on an existing file; UNCHECKED opens it and applies
      // the attributes, as a client's open(O_CREAT) of the disk does (libnfs, fio). Its size
      // cannot change.
      if (mode !== 'unchecked') throw NfsStatusError.of('EXIST', `${name} is a recovered disk`);
      if (disk.session.readOnly) throw NfsStatusError.of('ROFS');
      const id = makeId(IdKind.Flat, disk.session.state.number, BigInt(disk.index));
      await this.setattr(id, attrs);
      return id;
    }
    const session = this.#folder(dirId, name);
    return this.#hostId(session, await session.files.create(name, mode, attrs, verifier));
  }

  /** The recovered disk `name` in the VM folder `dirId`, if it is one. */
  #recoveredDisk(dirId: bigint, name: string): { session: RecoverySession; index: number } | null {
    const t = this.#target(dirId);
    if (t.kind !== IdKind.Folder) return null;
    const index = t.session!.disks.findIndex((d) => d.flatName === name);
    return index >= 0 ? { session: t.session!, index } : null;
  }

  async mkdir(dirId: bigint): Promise<bigint> {
    this.#target(dirId);
    throw NfsStatusError.of('NOTSUPP', 'the recovery datastore has no subfolders');
  }

  async remove(dirId: bigint, name: string): Promise<void> {
    const session = this.#folder(dirId, name);
    await session.files.remove(name);
  }

  async rmdir(dirId: bigint): Promise<void> {
    this.#target(dirId);
    throw NfsStatusError.of('ACCES', 'VM folders are removed by stopping their session');
  }

  async rename(
    fromDirId: bigint,
    fromName: string,
    toDirId: bigint,
    toName: string,
  ): Promise<void> {
    const session = this.#folder(fromDirId, fromName);
    if (this.#folder(toDirId, toName) !== session) throw NfsStatusError.of('XDEV');
    await session.files.rename(fromName, toName);
  }

  async setattr(id: bigint, attrs: SetAttributes): Promise<void> {
    const t = this.#target(id);
    if (t.kind === IdKind.Host) {
      if (t.session!.readOnly) throw NfsStatusError.of('ROFS');
      return t.session!.files.setattr(t.local, attrs);
    }
    if (t.kind === IdKind.Flat && attrs.size !== undefined && attrs.size !== t.disk!.extent.size) {
      throw NfsStatusError.of('INVAL', 'the size of a recovered disk cannot change');
    }
    // Mode, owner and times of folders and flat extents are fixed; accepting them keeps clients happy.
  }

  /**
   * Resolves an id; STALE for ids of unknown sessions, disks or kinds. Records the client of a
   * call that reaches a session.
   */
  #target(
    id: bigint,
    ctx?: NfsRequestContext,
  ): {
    kind: IdKind;
    session?: RecoverySession;
    disk?: SessionDisk;
    local: bigint;
  } {
    if (id === ROOT_ID) return { kind: IdKind.Root, local: 0n };
    const parts = splitId(id);
    const session = parts ? this.#sessions.get(parts.session) : undefined;
    if (!parts || !session) throw NfsStatusError.of('STALE');
    if (ctx) {
      let m = this.#clients.get(parts.session);
      if (!m) {
        m = new Map();
        this.#clients.set(parts.session, m);
      }
      m.set(ctx.clientAddress, Date.now());
    }
    if (parts.kind === IdKind.Flat) {
      const disk = session.disks[Number(parts.local)];
      if (!disk) throw NfsStatusError.of('STALE');
      return { kind: parts.kind, session, disk, local: parts.local };
    }
    if (parts.kind === IdKind.Folder || parts.kind === IdKind.Host)
      return { kind: parts.kind, session, local: parts.local };
    throw NfsStatusError.of('STALE');
  }

  /** The session of a VM folder where `name` may be created, renamed or removed. */
  #folder(dirId: bigint, name: string): RecoverySession {
    const t = this.#target(dirId);
    if (t.kind === IdKind.Root)
      throw NfsStatusError.of('ACCES', 'VM folders are made by starting a session');
    if (t.kind !== IdKind.Folder) throw NfsStatusError.of('NOTDIR');
    const session = t.session!;
    if (session.readOnly) throw NfsStatusError.of('ROFS');
    if (session.disks.some((d) => d.flatName === name))
      throw NfsStatusError.of('ACCES', `${name} is a recovered disk`);
    return session;
  }

  #writableDisk(t: { session?: RecoverySession; disk?: SessionDisk }): SessionDisk {
    if (t.session!.readOnly) throw NfsStatusError.of('ROFS');
    return t.disk!;
  }

  #hostId(session: RecoverySession, ino: bigint): bigint {
    if (ino > MAX_LOCAL)
      throw NfsStatusError.of('SERVERFAULT', `inode ${ino} is beyond what file ids can hold`);
    return makeId(IdKind.Host, session.state.number, ino);
  }
}

/** The NFS status for an overlay's refusal; other errors pass (NFS3ERR_IO, reported). */
function overlayStatus(err: unknown): unknown {
  if (isIvmrError(err, ErrorCode.UNSUPPORTED) && err.details.reason === 'EROFS')
    return NfsStatusError.of('ROFS', err.message);
  if (isIvmrError(err, ErrorCode.NO_SPACE)) return NfsStatusError.of('NOSPC', err.message);
  return err;
}

function dirAttrs(id: bigint, nlink: number, time: NfsTime): FileAttributes {
  return {
    type: 'directory',
    mode: 0o755,
    nlink,
    uid: 0,
    gid: 0,
    size: 4096,
    used: 4096,
    fileId: id,
    atime: time,
    mtime: time,
    ctime: time,
  };
}
