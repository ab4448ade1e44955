/**
 * The one adapter interface of `@ivmr/nfs`: implement {@link NfsFileSystem} (and, for a
 * writable export, the optional write methods) and the server does the rest: XDR, RPC, file
 * handles, attributes in replies, READDIR paging, the duplicate request cache.
 *
 * Files are named by **file ids**: 64-bit numbers (bigint) that the adapter chooses, unique
 * within the filesystem and stable for the life of the file, also across restarts of the server
 * (the server derives file handles from them; a handle a client holds must keep working after a
 * restart). Id 0 is reserved.
 *
 * Failures: throw {@link NfsStatusError} with the NFS status to answer (`NfsStatusError.of('NOENT')`),
 * or a Node.js system error (`ENOENT`, `EEXIST`, `ENOTEMPTY`, `ENOSPC`, ...), which is mapped to
 * the matching NFS status. Anything else is answered `NFS3ERR_IO` and reported to the server's
 * error hook.
 */

/** File types (ftype3). */
export type FileType = 'file' | 'directory' | 'symlink' | 'block' | 'char' | 'socket' | 'fifo';

/** A point in time: seconds and nanoseconds since the epoch (nfstime3). */
export interface NfsTime {
  readonly seconds: number;
  readonly nanoseconds: number;
}

/** A file's attributes (fattr3, without fsid, which the server fills per export). */
export interface FileAttributes {
  readonly type: FileType;
  /** Permission bits (e.g. 0o644), without the file type bits. */
  readonly mode: number;
  readonly nlink: number;
  readonly uid: number;
  readonly gid: number;
  /** Size in bytes. */
  readonly size: number;
  /** Bytes the file really occupies (a sparse or thin file reports less than `size`). */
  readonly used: number;
  /** Device numbers for block and character devices. */
  readonly rdev?: { readonly major: number; readonly minor: number };
  readonly fileId: bigint;
  readonly atime: NfsTime;
  readonly mtime: NfsTime;
  readonly ctime: NfsTime;
}

/** Attributes to change (sattr3). Unset fields stay as they are. */
export interface SetAttributes {
  readonly mode?: number;
  readonly uid?: number;
  readonly gid?: number;
  /** New size: truncates or extends (sparse) the file. */
  readonly size?: number;
  /** `'server'` means "set to the server's current time". */
  readonly atime?: NfsTime | 'server';
  readonly mtime?: NfsTime | 'server';
}

/** One directory entry, as {@link NfsFileSystem.readdir} returns it. */
export interface DirectoryEntry {
  readonly name: string;
  readonly fileId: bigint;
}

/** Who is calling: the RPC credentials (after the export's squashing) and the client address. */
export interface NfsRequestContext {
  /** Effective uid and gids; `null` for AUTH_NONE calls. */
  readonly user: {
    readonly uid: number;
    readonly gid: number;
    readonly gids: readonly number[];
  } | null;
  readonly clientAddress: string;
  /** Path of the export the call came through. */
  readonly exportPath: string;
}

/** stable_how of a WRITE (RFC 1813 §3.3.7). */
export type StableHow = 'unstable' | 'data_sync' | 'file_sync';

/** How CREATE behaves when the name exists (createmode3). */
export type CreateMode = 'unchecked' | 'guarded' | 'exclusive';

/** Filesystem-wide figures for FSSTAT (sizes in bytes). */
export interface FsStat {
  readonly totalBytes: number;
  readonly freeBytes: number;
  readonly availableBytes: number;
  readonly totalFiles: number;
  readonly freeFiles: number;
  readonly availableFiles: number;
}

/**
 * A filesystem served over NFSv3. The required methods make a read-only export; add the
 * optional write methods for a writable one (a missing method answers `NFS3ERR_ROFS` for
 * changes and `NFS3ERR_NOTSUPP` for special files).
 *
 * All methods may be called concurrently. None may assume the calls of one client arrive in
 * order: clients pipeline.
 */
export interface NfsFileSystem {
  /** File id of the export's root directory. */
  readonly rootId: bigint;

  /**
   * Attributes of a file. Must be fast and must not wait for slow I/O: clients (ESXi heartbeats)
   * call it all the time. An unknown id throws `STALE`.
   */
  getattr(id: bigint, ctx: NfsRequestContext): Promise<FileAttributes>;

  /**
   * The id of `name` in directory `dirId` (never `.` or `..`: the server answers those).
   * `NOENT` when missing, `NOTDIR` when `dirId` is not a directory.
   */
  lookup(dirId: bigint, name: string, ctx: NfsRequestContext): Promise<bigint>;

  /**
   * Reads up to `count` bytes at `offset`. Returns fewer bytes only at end of file; a read at or
   * past the end returns no bytes. The server sends the returned bytes without copying them, so
   * do not change them afterwards (return a copy of a buffer you reuse). `ISDIR` for a directory.
   *
   * `into`, when given, is a scratch buffer of exactly `count` bytes that the server owns and
   * reuses once the reply is written: read into it and return it (or a prefix of it) to spare an
   * allocation per READ, or ignore it and return your own bytes. Its contents are left over from
   * earlier replies, so every byte returned must have been written. Do not keep it, and do not
   * write to it once the returned promise has settled.
   */
  read(
    id: bigint,
    offset: number,
    count: number,
    ctx: NfsRequestContext,
    into?: Uint8Array,
  ): Promise<Uint8Array>;

  /**
   * Every entry of a directory except `.` and `..`, in a stable order: the server pages through
   * it with cookies that stay valid while the directory's mtime does not change.
   */
  readdir(dirId: bigint, ctx: NfsRequestContext): Promise<readonly DirectoryEntry[]>;

  /** Target of a symbolic link. */
  readlink?(id: bigint, ctx: NfsRequestContext): Promise<string>;

  /** Space figures for FSSTAT; defaults to zeros (an unsized filesystem). */
  fsstat?(ctx: NfsRequestContext): Promise<FsStat>;

  /**
   * Writes `data` at `offset`, extending the file when needed. With `file_sync` or `data_sync`
   * the data (and for `file_sync` the metadata) must be durable before the promise resolves;
   * with `unstable` it may stay in memory until {@link commit}. Returns how the data was
   * committed (at least as stable as asked is always allowed). `data` is a view of the server's
   * receive buffer, valid only until the promise settles: copy whatever is kept beyond that.
   */
  write?(
    id: bigint,
    offset: number,
    data: Uint8Array,
    stable: StableHow,
    ctx: NfsRequestContext,
  ): Promise<StableHow>;

  /** Makes every earlier write to the file durable (COMMIT). */
  commit?(id: bigint, ctx: NfsRequestContext): Promise<void>;

  /**
   * The 8-byte write verifier of WRITE and COMMIT replies. It must change exactly when writes
   * acknowledged as unstable may have been lost (a restart without flushing them), so that
   * clients send them again. Default: a random value chosen when the server starts.
   */
  writeVerifier?(): Uint8Array;

  /**
   * Creates a regular file and returns its id. `unchecked`: an existing file is kept (and
   * truncated when `attrs.size` is 0); `guarded`: an existing name throws `EXIST`; `exclusive`:
   * the adapter stores `verifier` with the file, and a repeated call with the same verifier for
   * the same name succeeds (returns the same id) while another verifier throws `EXIST`.
   */
  create?(
    dirId: bigint,
    name: string,
    mode: CreateMode,
    attrs: SetAttributes,
    verifier: Uint8Array | undefined,
    ctx: NfsRequestContext,
  ): Promise<bigint>;

  /** Creates a directory and returns its id (`EXIST` when the name exists). */
  mkdir?(
    dirId: bigint,
    name: string,
    attrs: SetAttributes,
    ctx: NfsRequestContext,
  ): Promise<bigint>;

  /** Creates a symbolic link and returns its id. */
  symlink?(
    dirId: bigint,
    name: string,
    target: string,
    attrs: SetAttributes,
    ctx: NfsRequestContext,
  ): Promise<bigint>;

  /** Removes a non-directory entry. */
  remove?(dirId: bigint, name: string, ctx: NfsRequestContext): Promise<void>;

  /** Removes an empty directory (`NOTEMPTY` otherwise). */
  rmdir?(dirId: bigint, name: string, ctx: NfsRequestContext): Promise<void>;

  /** Renames atomically, replacing an existing target that is compatible (file over file). */
  rename?(
    fromDirId: bigint,
    fromName: string,
    toDirId: bigint,
    toName: string,
    ctx: NfsRequestContext,
  ): Promise<void>;

  /** Creates a hard link `name` in `dirId` to file `id`. */
  link?(id: bigint, dirId: bigint, name: string, ctx: NfsRequestContext): Promise<void>;

  /** Changes attributes; a `size` change truncates or extends the file. */
  setattr?(id: bigint, attrs: SetAttributes, ctx: NfsRequestContext): Promise<void>;
}

/** NFSv3 status codes (nfsstat3, RFC 1813 §2.6). */
export const NfsStatus = {
  OK: 0,
  PERM: 1,
  NOENT: 2,
  IO: 5,
  NXIO: 6,
  ACCES: 13,
  EXIST: 17,
  XDEV: 18,
  NODEV: 19,
  NOTDIR: 20,
  ISDIR: 21,
  INVAL: 22,
  FBIG: 27,
  NOSPC: 28,
  ROFS: 30,
  MLINK: 31,
  NAMETOOLONG: 63,
  NOTEMPTY: 66,
  DQUOT: 69,
  STALE: 70,
  REMOTE: 71,
  BADHANDLE: 10001,
  NOT_SYNC: 10002,
  BAD_COOKIE: 10003,
  NOTSUPP: 10004,
  TOOSMALL: 10005,
  SERVERFAULT: 10006,
  BADTYPE: 10007,
  JUKEBOX: 10008,
} as const;

/** The name of an NFS status, e.g. `'NOENT'`. */
export type NfsStatusName = keyof typeof NfsStatus;

/** Thrown by an adapter to answer a call with an NFS status. */
export class NfsStatusError extends Error {
  readonly status: number;
  readonly statusName: NfsStatusName;

  constructor(statusName: Exclude<NfsStatusName, 'OK'>, message?: string) {
    super(message ?? `NFS3ERR_${statusName}`);
    this.name = 'NfsStatusError';
    this.statusName = statusName;
    this.status = NfsStatus[statusName];
  }

  /** Shorthand: `throw NfsStatusError.of('NOENT')`. */
  static of(statusName: Exclude<NfsStatusName, 'OK'>, message?: string): NfsStatusError {
    return new NfsStatusError(statusName, message);
  }
}

const ERRNO_STATUS: Record<string, Exclude<NfsStatusName, 'OK'>> = {
  EPERM: 'PERM',
  ENOENT: 'NOENT',
  EIO: 'IO',
  ENXIO: 'NXIO',
  EACCES: 'ACCES',
  EEXIST: 'EXIST',
  EXDEV: 'XDEV',
  ENODEV: 'NODEV',
  ENOTDIR: 'NOTDIR',
  EISDIR: 'ISDIR',
  EINVAL: 'INVAL',
  EFBIG: 'FBIG',
  ENOSPC: 'NOSPC',
  EROFS: 'ROFS',
  EMLINK: 'MLINK',
  ENAMETOOLONG: 'NAMETOOLONG',
  ENOTEMPTY: 'NOTEMPTY',
  EDQUOT: 'DQUOT',
  ESTALE: 'STALE',
  ENOTSUP: 'NOTSUPP',
  EOPNOTSUPP: 'NOTSUPP',
};

/**
 * The NFS status for an error an adapter threw: its own status, the match of a Node.js system
 * error code, or `undefined` for anything else (the server answers `IO`).
 */
export function statusOfError(err: unknown): number | undefined {
  if (err instanceof NfsStatusError) return err.status;
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && code in ERRNO_STATUS) return NfsStatus[ERRNO_STATUS[code]!];
  return undefined;
}
