import { randomBytes } from 'node:crypto';
import {
  type FileHandle,
  mkdir,
  open,
  readdir,
  readFile,
  rename,
  rm,
  stat,
  unlink,
} from 'node:fs/promises';
import { join } from 'node:path';
import { ErrorCode, fromSystemError, IvmrError } from '../errors.js';
import {
  type ByteRangeRequest,
  isValidObjectName,
  type ObjectInfo,
  type ObjectKind,
  type StoreAdapter,
} from './adapter.js';

const DIRS: Record<ObjectKind, string> = {
  config: '.',
  pack: 'packs',
  index: 'index',
  map: 'maps',
  point: 'points',
  lock: 'locks',
};

/** Options of {@link LocalStore.open}. */
export interface LocalStoreOptions {
  /** Create the directory tree when missing (default false: a missing repository is NOT_FOUND). */
  create?: boolean;
  /** How many pack files to keep open for reads (default 64). */
  maxOpenFiles?: number;
}

/**
 * The embedded default store: objects are files in a local directory (layout in FORMAT.md,
 * "Local directory store"). Writes go to a temporary file that is fsynced and renamed into place,
 * then the directory is fsynced, so a crash leaves either the old object or the new one.
 */
export class LocalStore implements StoreAdapter {
  readonly location: string;
  readonly #maxOpen: number;
  /** Open read handles in least-recently-used order (Map keeps insertion order). */
  readonly #handles = new Map<string, HandleEntry>();
  #closed = false;

  private constructor(dir: string, maxOpen: number) {
    this.location = dir;
    this.#maxOpen = maxOpen;
  }

  /** Opens (or with `create`, creates) a store in directory `dir`. */
  static async open(dir: string, options: LocalStoreOptions = {}): Promise<LocalStore> {
    if (options.create) {
      try {
        for (const sub of new Set(Object.values(DIRS)))
          await mkdir(join(dir, sub), { recursive: true });
        await mkdir(join(dir, 'tmp'), { recursive: true });
      } catch (err) {
        throw fromSystemError(err, `repository directory ${dir}`, { path: dir });
      }
    } else {
      try {
        const st = await stat(dir);
        if (!st.isDirectory())
          throw new IvmrError(ErrorCode.INVALID_ARGUMENT, `${dir}: not a directory`);
      } catch (err) {
        throw fromSystemError(err, `repository directory ${dir}`, { path: dir });
      }
    }
    return new LocalStore(dir, options.maxOpenFiles ?? 64);
  }

  #path(kind: ObjectKind, name: string): string {
    if (!isValidObjectName(name)) {
      throw new IvmrError(
        ErrorCode.INVALID_ARGUMENT,
        `invalid object name ${JSON.stringify(name)}`,
      );
    }
    if (kind === 'pack') return join(this.location, DIRS.pack, name.slice(0, 2), name);
    return join(this.location, DIRS[kind], name);
  }

  async get(kind: ObjectKind, name: string, range?: ByteRangeRequest): Promise<Uint8Array> {
    this.#checkOpen();
    const path = this.#path(kind, name);
    try {
      if (!range) return await readFile(path);
      const entry = this.#acquire(path);
      try {
        const fh = await entry.fh;
        const out =
          range.into !== undefined && range.into.length >= range.length
            ? range.into.subarray(0, range.length)
            : Buffer.allocUnsafe(range.length);
        let done = 0;
        while (done < range.length) {
          const { bytesRead } = await fh.read(out, done, range.length - done, range.offset + done);
          if (bytesRead === 0) break;
          done += bytesRead;
        }
        return done === range.length ? out : out.subarray(0, done);
      } finally {
        this.#release(entry);
      }
    } catch (err) {
      throw fromSystemError(err, `${kind} ${name} in ${this.location}`, { kind, name });
    }
  }

  /** A shared read handle for `path`; an evicted handle closes when its last reader is done. */
  #acquire(path: string): HandleEntry {
    let entry = this.#handles.get(path);
    if (entry) {
      this.#handles.delete(path);
    } else {
      const fresh: HandleEntry = { fh: open(path, 'r'), users: 0, evicted: false };
      fresh.fh.catch(() => this.#evict(path, fresh));
      entry = fresh;
    }
    this.#handles.set(path, entry);
    entry.users++;
    while (this.#handles.size > this.#maxOpen) {
      const oldest = this.#handles.keys().next().value as string;
      this.#evict(oldest);
    }
    return entry;
  }

  #release(entry: HandleEntry): void {
    entry.users--;
    if (entry.evicted && entry.users === 0) closeQuietly(entry);
  }

  /** Drops a handle from the cache; returns the closing of it unless a reader still uses it. */
  #evict(path: string, only?: HandleEntry): Promise<void> | undefined {
    const entry = this.#handles.get(path);
    if (!entry || (only && entry !== only)) return undefined;
    this.#handles.delete(path);
    entry.evicted = true;
    return entry.users === 0 ? closeQuietly(entry) : undefined;
  }

  async put(kind: ObjectKind, name: string, data: Uint8Array): Promise<void> {
    this.#checkOpen();
    const path = this.#path(kind, name);
    const dir = join(path, '..');
    const tmp = join(this.location, 'tmp', `${name}.${randomBytes(6).toString('hex')}.tmp`);
    try {
      if (kind === 'pack') await mkdir(dir, { recursive: true });
      const fh = await open(tmp, 'wx');
      try {
        await fh.writeFile(data);
        await fh.sync();
      } finally {
        await fh.close();
      }
      this.#evict(path);
      await rename(tmp, path);
      await syncDir(dir);
    } catch (err) {
      await unlink(tmp).catch(() => {});
      throw fromSystemError(err, `writing ${kind} ${name} in ${this.location}`, { kind, name });
    }
  }

  async has(kind: ObjectKind, name: string): Promise<boolean> {
    this.#checkOpen();
    try {
      await stat(this.#path(kind, name));
      return true;
    } catch (err) {
      if ((err as { code?: string }).code === 'ENOENT') return false;
      throw fromSystemError(err, `${kind} ${name} in ${this.location}`, { kind, name });
    }
  }

  async *list(kind: ObjectKind): AsyncIterable<ObjectInfo> {
    this.#checkOpen();
    const base = join(this.location, DIRS[kind]);
    const dirs = kind === 'pack' ? (await readdirOrEmpty(base)).map((d) => join(base, d)) : [base];
    for (const dir of dirs) {
      for (const name of await readdirOrEmpty(dir)) {
        if (!isValidObjectName(name)) continue;
        if (kind === 'config' && name !== 'config') continue;
        try {
          const st = await stat(join(dir, name));
          if (st.isFile()) yield { name, size: st.size };
        } catch (err) {
          if ((err as { code?: string }).code !== 'ENOENT')
            throw fromSystemError(err, `listing ${kind}`);
        }
      }
    }
  }

  async delete(kind: ObjectKind, name: string): Promise<void> {
    this.#checkOpen();
    const path = this.#path(kind, name);
    this.#evict(path);
    try {
      await rm(path, { force: true });
      await syncDir(join(path, '..'));
    } catch (err) {
      // A pack shard directory that was never made holds nothing to delete.
      if ((err as { code?: string }).code === 'ENOENT') return;
      throw fromSystemError(err, `deleting ${kind} ${name} in ${this.location}`, { kind, name });
    }
  }

  async close(): Promise<void> {
    this.#closed = true;
    await Promise.all([...this.#handles.keys()].map((path) => this.#evict(path)));
  }

  #checkOpen(): void {
    if (this.#closed) throw new IvmrError(ErrorCode.CLOSED, `store ${this.location} is closed`);
  }
}

interface HandleEntry {
  readonly fh: Promise<FileHandle>;
  users: number;
  evicted: boolean;
}

function closeQuietly(entry: HandleEntry): Promise<void> {
  return entry.fh.then((h) => h.close()).catch(() => {});
}

async function readdirOrEmpty(dir: string): Promise<string[]> {
  try {
    return await readdir(dir);
  } catch (err) {
    if ((err as { code?: string }).code === 'ENOENT') return [];
    throw fromSystemError(err, `listing ${dir}`);
  }
}

async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
