/**
 * The file layer every part of `@ivmr/cache` goes through. The default is the real file system
 * ({@link nodeFileSystem}); tests pass a layer that injects faults or simulates a crash by
 * dropping writes that no `sync()` covered.
 */

/** An open file. Positions and sizes are whole bytes below 2^53. */
export interface CacheFile {
  /**
   * Reads up to `into.length` bytes at `position` into `into` and returns how many were read;
   * fewer only at end of file. Failures reject with an `IvmrError`.
   */
  read(into: Uint8Array, position: number): Promise<number>;
  /**
   * Optional: the same read, done at once on the calling thread, for bytes the caller has reason
   * to believe are in memory (the page cache): it skips the thread-pool round trip `read` pays,
   * but blocks the caller for as long as the system call takes. Layers without it are always
   * read with `read`.
   */
  readNow?(into: Uint8Array, position: number): number;
  /**
   * Writes all of `data` at `position`, growing the file when needed. A full volume rejects
   * with the `IVMR_NOSPC` error of `noSpaceError`; part of `data` may then have been written.
   * The bytes are durable only after a later `sync()` resolves.
   */
  write(data: Uint8Array, position: number): Promise<void>;
  /**
   * Optional: writes `buffers` end to end at `position` with one system call where it can
   * (`pwritev`), as {@link write} writes one. Layers without it get one `write` per buffer.
   */
  writev?(buffers: readonly Uint8Array[], position: number): Promise<void>;
  /** Makes every completed write and truncate of this file durable (fdatasync). */
  sync(): Promise<void>;
  /** Sets the file's size: shrinking drops bytes, growing adds zeros (a hole where possible). */
  truncate(size: number): Promise<void>;
  /** The current size in bytes. */
  size(): Promise<number>;
  /** Closes the file; idempotent. */
  close(): Promise<void>;
}

/** Size and free space of the volume that holds a path, in bytes. */
export interface VolumeSpace {
  /** Size of the volume. */
  readonly totalBytes: number;
  /** Bytes an unprivileged writer may still allocate (statfs `bavail × bsize`). */
  readonly freeBytes: number;
}

/** Reports the space of the volume holding `path` (the default calls `fs.statfs`). */
export type StatFs = (path: string) => Promise<VolumeSpace>;

/** The file-system calls `@ivmr/cache` makes. */
export interface CacheFileSystem {
  /**
   * Opens a file. `read`: read-only, must exist. `write`: read-write, must exist. `create`:
   * read-write, created empty when missing. A missing file is `IVMR_NOT_FOUND`.
   */
  open(path: string, flags: 'read' | 'write' | 'create'): Promise<CacheFile>;
  /** True when `path` exists. */
  exists(path: string): Promise<boolean>;
  /** Atomically replaces `to` with `from`; durable after `syncDir` of the folder. */
  rename(from: string, to: string): Promise<void>;
  /** Removes a file; a missing file is not an error. */
  unlink(path: string): Promise<void>;
  /** Creates a folder and its parents; an existing folder is not an error. */
  mkdir(path: string): Promise<void>;
  /** Makes renames, creations and removals in folder `path` durable. */
  syncDir(path: string): Promise<void>;
  /** Space of the volume holding `path`. */
  statfs: StatFs;
}
