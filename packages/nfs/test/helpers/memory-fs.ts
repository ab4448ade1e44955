import {
  type CreateMode,
  type DirectoryEntry,
  type FileAttributes,
  type FileType,
  type FsStat,
  type NfsFileSystem,
  type NfsRequestContext,
  NfsStatusError,
  type NfsTime,
  type SetAttributes,
  type StableHow,
} from '../../src/filesystem.js';

/** File data is kept in chunks of this size; chunks never written are holes (zeros). */
export const CHUNK_SIZE = 64 * 1024;

interface MemNode {
  readonly id: bigint;
  readonly type: FileType;
  mode: number;
  uid: number;
  gid: number;
  nlink: number;
  atime: NfsTime;
  mtime: NfsTime;
  ctime: NfsTime;
  /** Regular files: logical size and the chunks that hold data. */
  size: number;
  readonly chunks: Map<number, Buffer>;
  /** Directories: entries by name, and the parent (the root is its own parent). */
  readonly entries: Map<string, bigint>;
  parent: bigint;
  /** Symbolic links: the target. */
  target: string;
  /** The createverf3 of an EXCLUSIVE create (kept, so a late retransmission still matches). */
  verifier: Buffer | undefined;
}

/** Options of a {@link MemoryFileSystem}. */
export interface MemoryFileSystemOptions {
  /** Owner of the root directory (default 0:0) and its mode (default 0o755). */
  readonly rootUid?: number;
  readonly rootGid?: number;
  readonly rootMode?: number;
  /** FSSTAT figures (default: 1 TiB total, free space computed from the data held). */
  readonly capacityBytes?: number;
}

/**
 * A complete writable {@link NfsFileSystem} in memory, for tests: files, directories, symbolic
 * links, hard links, EXCLUSIVE create verifiers. File data lives in 64 KiB chunks, so a sparse
 * file of many GiB costs only the chunks written. Times come from a clock that never repeats, so
 * every change moves a directory's mtime (and its READDIR cookie verifier).
 *
 * It checks no permissions (the server leaves that to adapters) and sets owners from the
 * caller's credentials. The synchronous helpers (`writeFile`, `mkdirp`, `readFile`, `idOf`) set
 * up and inspect trees in tests.
 */
export class MemoryFileSystem implements NfsFileSystem {
  readonly rootId = 1n;
  readonly #nodes = new Map<bigint, MemNode>();
  #nextId = 2n;
  #lastTime = 0n;
  readonly #clockBase: bigint;
  readonly #capacity: number;
  /** Number of COMMIT calls served. */
  commits = 0;

  constructor(options: MemoryFileSystemOptions = {}) {
    this.#clockBase = BigInt(Date.now()) * 1_000_000n - process.hrtime.bigint();
    this.#capacity = options.capacityBytes ?? 2 ** 40;
    const root = this.#newNode(this.rootId, 'directory', options.rootMode ?? 0o755, {
      uid: options.rootUid ?? 0,
      gid: options.rootGid ?? 0,
    });
    root.nlink = 2;
    root.parent = this.rootId;
  }

  // ---- NfsFileSystem ----

  async getattr(id: bigint): Promise<FileAttributes> {
    return this.#attributes(this.#node(id));
  }

  async lookup(dirId: bigint, name: string): Promise<bigint> {
    const id = this.#dir(dirId).entries.get(name);
    if (id === undefined) throw NfsStatusError.of('NOENT', `no entry ${name}`);
    return id;
  }

  async read(id: bigint, offset: number, count: number): Promise<Uint8Array> {
    const node = this.#file(id);
    return readChunks(node, offset, count);
  }

  async readdir(dirId: bigint): Promise<readonly DirectoryEntry[]> {
    const dir = this.#dir(dirId);
    return [...dir.entries].map(([name, fileId]) => ({ name, fileId }));
  }

  async readlink(id: bigint): Promise<string> {
    const node = this.#node(id);
    if (node.type !== 'symlink') throw NfsStatusError.of('INVAL', 'not a symbolic link');
    return node.target;
  }

  async fsstat(): Promise<FsStat> {
    let used = 0;
    for (const n of this.#nodes.values()) used += n.chunks.size * CHUNK_SIZE;
    const free = Math.max(0, this.#capacity - used);
    return {
      totalBytes: this.#capacity,
      freeBytes: free,
      availableBytes: free,
      totalFiles: 1_000_000,
      freeFiles: 1_000_000 - this.#nodes.size,
      availableFiles: 1_000_000 - this.#nodes.size,
    };
  }

  async write(id: bigint, offset: number, data: Uint8Array, stable: StableHow): Promise<StableHow> {
    const node = this.#file(id);
    writeChunks(node, offset, data);
    this.#touch(node);
    return stable;
  }

  async commit(id: bigint): Promise<void> {
    this.#file(id);
    this.commits++;
  }

  async create(
    dirId: bigint,
    name: string,
    mode: CreateMode,
    attrs: SetAttributes,
    verifier: Uint8Array | undefined,
    ctx: NfsRequestContext,
  ): Promise<bigint> {
    const dir = this.#dir(dirId);
    const existing = dir.entries.get(name);
    if (existing !== undefined) {
      const node = this.#node(existing);
      if (mode === 'exclusive') {
        if (
          node.verifier !== undefined &&
          verifier !== undefined &&
          node.verifier.equals(verifier)
        ) {
          return existing;
        }
        throw NfsStatusError.of('EXIST');
      }
      if (mode === 'guarded' || node.type !== 'file') throw NfsStatusError.of('EXIST');
      if (attrs.size !== undefined) this.#setattr(node, { size: attrs.size });
      return existing;
    }
    const node = this.#newNode(this.#nextId++, 'file', attrs.mode ?? 0o644, owner(attrs, ctx));
    if (mode === 'exclusive') node.verifier = Buffer.from(verifier ?? new Uint8Array(8));
    else this.#setattr(node, { ...attrs, mode: undefined, uid: undefined, gid: undefined });
    this.#link(dir, name, node);
    return node.id;
  }

  async mkdir(
    dirId: bigint,
    name: string,
    attrs: SetAttributes,
    ctx: NfsRequestContext,
  ): Promise<bigint> {
    const dir = this.#dir(dirId);
    if (dir.entries.has(name)) throw NfsStatusError.of('EXIST');
    const node = this.#newNode(this.#nextId++, 'directory', attrs.mode ?? 0o755, owner(attrs, ctx));
    node.nlink = 2;
    node.parent = dir.id;
    dir.nlink++;
    dir.entries.set(name, node.id);
    this.#touch(dir);
    return node.id;
  }

  async symlink(
    dirId: bigint,
    name: string,
    target: string,
    attrs: SetAttributes,
    ctx: NfsRequestContext,
  ): Promise<bigint> {
    const dir = this.#dir(dirId);
    if (dir.entries.has(name)) throw NfsStatusError.of('EXIST');
    const node = this.#newNode(this.#nextId++, 'symlink', attrs.mode ?? 0o777, owner(attrs, ctx));
    node.target = target;
    node.size = Buffer.byteLength(target);
    this.#link(dir, name, node);
    return node.id;
  }

  async remove(dirId: bigint, name: string): Promise<void> {
    const dir = this.#dir(dirId);
    const id = dir.entries.get(name);
    if (id === undefined) throw NfsStatusError.of('NOENT');
    const node = this.#node(id);
    if (node.type === 'directory') throw NfsStatusError.of('ISDIR');
    dir.entries.delete(name);
    this.#unlink(node);
    this.#touch(dir);
  }

  async rmdir(dirId: bigint, name: string): Promise<void> {
    const dir = this.#dir(dirId);
    const id = dir.entries.get(name);
    if (id === undefined) throw NfsStatusError.of('NOENT');
    const node = this.#node(id);
    if (node.type !== 'directory') throw NfsStatusError.of('NOTDIR');
    if (node.entries.size > 0) throw NfsStatusError.of('NOTEMPTY');
    dir.entries.delete(name);
    dir.nlink--;
    this.#nodes.delete(id);
    this.#touch(dir);
  }

  async rename(
    fromDirId: bigint,
    fromName: string,
    toDirId: bigint,
    toName: string,
  ): Promise<void> {
    const from = this.#dir(fromDirId);
    const to = this.#dir(toDirId);
    const id = from.entries.get(fromName);
    if (id === undefined) throw NfsStatusError.of('NOENT');
    const node = this.#node(id);
    const targetId = to.entries.get(toName);
    if (targetId === id) return;
    if (node.type === 'directory') {
      for (let d = to; ; d = this.#node(d.parent)) {
        if (d.id === id) throw NfsStatusError.of('INVAL', 'cannot move a directory into itself');
        if (d.id === this.rootId) break;
      }
    }
    if (targetId !== undefined) {
      const target = this.#node(targetId);
      if (node.type === 'directory') {
        if (target.type !== 'directory') throw NfsStatusError.of('NOTDIR');
        if (target.entries.size > 0) throw NfsStatusError.of('NOTEMPTY');
        to.nlink--;
        this.#nodes.delete(targetId);
      } else {
        if (target.type === 'directory') throw NfsStatusError.of('ISDIR');
        this.#unlink(target);
      }
    }
    from.entries.delete(fromName);
    to.entries.set(toName, id);
    if (node.type === 'directory' && from !== to) {
      from.nlink--;
      to.nlink++;
      node.parent = to.id;
    }
    node.ctime = this.#now();
    this.#touch(from);
    if (to !== from) this.#touch(to);
  }

  async link(id: bigint, dirId: bigint, name: string): Promise<void> {
    const node = this.#node(id);
    const dir = this.#dir(dirId);
    if (node.type === 'directory') throw NfsStatusError.of('ISDIR', 'no hard links to directories');
    if (dir.entries.has(name)) throw NfsStatusError.of('EXIST');
    this.#link(dir, name, node);
    node.ctime = this.#now();
  }

  async setattr(id: bigint, attrs: SetAttributes): Promise<void> {
    const node = this.#node(id);
    if (attrs.size !== undefined && node.type !== 'file') throw NfsStatusError.of('INVAL');
    this.#setattr(node, attrs);
  }

  // ---- helpers for tests ----

  /** The id of an absolute path (`/a/b`), following no symbolic links. */
  idOf(path: string): bigint {
    let id = this.rootId;
    for (const part of path.split('/').filter((p) => p !== '')) {
      const next = this.#dir(id).entries.get(part);
      if (next === undefined) throw NfsStatusError.of('NOENT', `no ${path}`);
      id = next;
    }
    return id;
  }

  /** Creates the directories of `path` that are missing; returns the last one's id. */
  mkdirp(path: string): bigint {
    let id = this.rootId;
    for (const part of path.split('/').filter((p) => p !== '')) {
      const dir = this.#dir(id);
      let next = dir.entries.get(part);
      if (next === undefined) {
        const node = this.#newNode(this.#nextId++, 'directory', 0o755, { uid: 0, gid: 0 });
        node.nlink = 2;
        node.parent = dir.id;
        dir.nlink++;
        dir.entries.set(part, node.id);
        this.#touch(dir);
        next = node.id;
      }
      id = next;
    }
    return id;
  }

  /**
   * Writes a file (creating its directories); `size` makes it that long (sparse past the
   * data). Returns its id.
   */
  writeFile(
    path: string,
    data: Uint8Array | string = '',
    options: { size?: number; mode?: number } = {},
  ): bigint {
    const parts = path.split('/').filter((p) => p !== '');
    const name = parts.pop();
    if (name === undefined) throw new Error('writeFile needs a file name');
    const dir = this.#dir(this.mkdirp(parts.join('/')));
    let id = dir.entries.get(name);
    if (id === undefined) {
      const node = this.#newNode(this.#nextId++, 'file', options.mode ?? 0o644, { uid: 0, gid: 0 });
      this.#link(dir, name, node);
      id = node.id;
    }
    const node = this.#file(id);
    const bytes = typeof data === 'string' ? Buffer.from(data) : data;
    truncate(node, 0);
    writeChunks(node, 0, bytes);
    if (options.size !== undefined) truncate(node, options.size);
    this.#touch(node);
    return id;
  }

  /** The content of a file. */
  readFile(path: string): Buffer {
    const node = this.#file(this.idOf(path));
    return readChunks(node, 0, node.size);
  }

  /** Number of chunks a file holds (to check that sparse files stay sparse). */
  chunkCount(path: string): number {
    return this.#file(this.idOf(path)).chunks.size;
  }

  // ---- internals ----

  #now(): NfsTime {
    let t = this.#clockBase + process.hrtime.bigint();
    if (t <= this.#lastTime) t = this.#lastTime + 1n;
    this.#lastTime = t;
    return { seconds: Number(t / 1_000_000_000n), nanoseconds: Number(t % 1_000_000_000n) };
  }

  #newNode(id: bigint, type: FileType, mode: number, who: { uid: number; gid: number }): MemNode {
    const now = this.#now();
    const node: MemNode = {
      id,
      type,
      mode: mode & 0o7777,
      uid: who.uid,
      gid: who.gid,
      nlink: 0,
      atime: now,
      mtime: now,
      ctime: now,
      size: 0,
      chunks: new Map(),
      entries: new Map(),
      parent: 0n,
      target: '',
      verifier: undefined,
    };
    this.#nodes.set(id, node);
    return node;
  }

  #node(id: bigint): MemNode {
    const node = this.#nodes.get(id);
    if (node === undefined) throw NfsStatusError.of('STALE', `no file ${id}`);
    return node;
  }

  #dir(id: bigint): MemNode {
    const node = this.#node(id);
    if (node.type !== 'directory') throw NfsStatusError.of('NOTDIR');
    return node;
  }

  #file(id: bigint): MemNode {
    const node = this.#node(id);
    if (node.type === 'directory') throw NfsStatusError.of('ISDIR');
    if (node.type !== 'file') throw NfsStatusError.of('INVAL', 'not a regular file');
    return node;
  }

  #touch(node: MemNode): void {
    const now = this.#now();
    node.mtime = now;
    node.ctime = now;
  }

  #link(dir: MemNode, name: string, node: MemNode): void {
    dir.entries.set(name, node.id);
    node.nlink++;
    this.#touch(dir);
  }

  #unlink(node: MemNode): void {
    node.nlink--;
    node.ctime = this.#now();
    if (node.nlink === 0) this.#nodes.delete(node.id);
  }

  #setattr(node: MemNode, attrs: SetAttributes): void {
    if (attrs.mode !== undefined) node.mode = attrs.mode & 0o7777;
    if (attrs.uid !== undefined) node.uid = attrs.uid;
    if (attrs.gid !== undefined) node.gid = attrs.gid;
    const now = this.#now();
    if (attrs.size !== undefined && attrs.size !== node.size) {
      truncate(node, attrs.size);
      node.mtime = now;
    }
    if (attrs.atime !== undefined) node.atime = attrs.atime === 'server' ? now : attrs.atime;
    if (attrs.mtime !== undefined) node.mtime = attrs.mtime === 'server' ? now : attrs.mtime;
    node.ctime = now;
  }

  #attributes(node: MemNode): FileAttributes {
    return {
      type: node.type,
      mode: node.mode,
      nlink: node.nlink,
      uid: node.uid,
      gid: node.gid,
      size: node.type === 'directory' ? 4096 : node.size,
      used:
        node.type === 'file'
          ? node.chunks.size * CHUNK_SIZE
          : node.type === 'directory'
            ? 4096
            : node.size,
      fileId: node.id,
      atime: node.atime,
      mtime: node.mtime,
      ctime: node.ctime,
    };
  }
}

function owner(attrs: SetAttributes, ctx: NfsRequestContext): { uid: number; gid: number } {
  return { uid: attrs.uid ?? ctx.user?.uid ?? 65534, gid: attrs.gid ?? ctx.user?.gid ?? 65534 };
}

function readChunks(node: MemNode, offset: number, count: number): Buffer {
  if (offset >= node.size || count <= 0) return Buffer.alloc(0);
  const n = Math.min(count, node.size - offset);
  const out = Buffer.alloc(n);
  let pos = offset;
  const end = offset + n;
  while (pos < end) {
    const index = Math.floor(pos / CHUNK_SIZE);
    const at = pos - index * CHUNK_SIZE;
    const k = Math.min(CHUNK_SIZE - at, end - pos);
    node.chunks.get(index)?.copy(out, pos - offset, at, at + k);
    pos += k;
  }
  return out;
}

function writeChunks(node: MemNode, offset: number, data: Uint8Array): void {
  let pos = offset;
  let from = 0;
  while (from < data.length) {
    const index = Math.floor(pos / CHUNK_SIZE);
    const at = pos - index * CHUNK_SIZE;
    const k = Math.min(CHUNK_SIZE - at, data.length - from);
    let chunk = node.chunks.get(index);
    if (chunk === undefined) {
      chunk = Buffer.alloc(CHUNK_SIZE);
      node.chunks.set(index, chunk);
    }
    chunk.set(data.subarray(from, from + k), at);
    pos += k;
    from += k;
  }
  node.size = Math.max(node.size, offset + data.length);
}

function truncate(node: MemNode, size: number): void {
  if (size < node.size) {
    const keep = Math.ceil(size / CHUNK_SIZE);
    for (const index of node.chunks.keys()) if (index >= keep) node.chunks.delete(index);
    const at = size % CHUNK_SIZE;
    if (at !== 0) node.chunks.get(keep - 1)?.fill(0, at);
  }
  node.size = size;
}

/**
 * Only the required methods of `fs`: a read-only adapter with no `readlink`, `fsstat` or write
 * methods (for ROFS, NOTSUPP and default answers).
 */
export function readOnlyView(fs: NfsFileSystem): NfsFileSystem {
  return {
    rootId: fs.rootId,
    getattr: (id, ctx) => fs.getattr(id, ctx),
    lookup: (dirId, name, ctx) => fs.lookup(dirId, name, ctx),
    read: (id, offset, count, ctx) => fs.read(id, offset, count, ctx),
    readdir: (dirId, ctx) => fs.readdir(dirId, ctx),
  };
}
