/**
 * The kinds of object a repository keeps in a store. Every object is immutable once written,
 * except `point` and `lock` objects, which a writer may replace whole (atomically).
 *
 * - `config`: the repository's settings (one object, named `config`).
 * - `pack`: append-only pack files holding compressed blobs (FORMAT.md, "Pack files").
 * - `index`: which blob lies where in which pack.
 * - `map`: block maps of restore point disks.
 * - `point`: restore point metadata (JSON), the commit record of a backup.
 * - `lock`: repository locks (JSON).
 */
export type ObjectKind = 'config' | 'pack' | 'index' | 'map' | 'point' | 'lock';

/** All object kinds, in the order a repository is usually listed. */
export const OBJECT_KINDS: readonly ObjectKind[] = [
  'config',
  'pack',
  'index',
  'map',
  'point',
  'lock',
];

/** One listed object. */
export interface ObjectInfo {
  /** The object's name within its kind: `[A-Za-z0-9._-]{1,128}`. */
  readonly name: string;
  /** Size in bytes. */
  readonly size: number;
}

/** A byte range of an object to {@link StoreAdapter.get}. */
export interface ByteRangeRequest {
  readonly offset: number;
  readonly length: number;
  /** A buffer of at least `length` bytes the adapter may read into (see `get`). */
  readonly into?: Uint8Array;
}

/**
 * A store adapter: where a repository keeps its objects (a local directory, memory, an object
 * store, a backup appliance). It knows nothing of blobs, chains or compression; the repository
 * builds those on top. Implementations run `describeStoreConformance` from `@ivmr/core/testing`.
 *
 * Every method rejects with an `IvmrError`: `IVMR_NOT_FOUND` for a missing object, `IVMR_IO`
 * (with `cause`) for a failure of the medium. Names are validated by the repository, but an
 * adapter must still refuse names that would escape its namespace (`/`, `..`).
 */
export interface StoreAdapter {
  /** A short human-readable location for messages, e.g. `/srv/repo` or `memory`. */
  readonly location: string;

  /**
   * Returns the object's bytes, or the bytes of `[offset, offset + length)` when a range is
   * given. A range that runs past the end of the object returns the bytes that exist (a short
   * result, possibly empty); the caller decides whether that is corruption. Must be fast for
   * small ranges of large objects: the read path of a running VM calls it for every cold block.
   * Concurrent calls must be safe.
   *
   * `range.into`, when given, is a buffer of at least `length` bytes that the caller lends for
   * this call: an adapter may read the bytes into it and return a view of it (the local store
   * does, so that a cold read allocates nothing), or ignore it and return its own buffer. The
   * caller reuses `into` once the promise settles.
   */
  get(kind: ObjectKind, name: string, range?: ByteRangeRequest): Promise<Uint8Array>;

  /**
   * Stores an object atomically and durably: when the promise resolves the object survives a
   * crash, and no reader ever sees a partial object. Writing a name that exists replaces it
   * atomically (only `point` and `lock` objects are ever replaced). The adapter must not keep a
   * reference to `data` after the promise resolves.
   */
  put(kind: ObjectKind, name: string, data: Uint8Array): Promise<void>;

  /** True when the object exists. */
  has(kind: ObjectKind, name: string): Promise<boolean>;

  /** Lists the objects of a kind, in no particular order. An empty kind yields nothing. */
  list(kind: ObjectKind): AsyncIterable<ObjectInfo>;

  /** Deletes an object. Deleting a missing object is not an error (idempotent). */
  delete(kind: ObjectKind, name: string): Promise<void>;

  /** Releases open handles and connections. Optional. */
  close?(): Promise<void>;
}

const NAME_RE = /^[A-Za-z0-9._-]{1,128}$/;

/** True when `name` is a valid object name (no path separators, not `.` or `..`). */
export function isValidObjectName(name: string): boolean {
  return NAME_RE.test(name) && name !== '.' && name !== '..';
}
