import { ErrorCode, IvmrError } from '@ivmr/core';
import { noSpaceError } from '../../src/errors.js';
import type { CacheFile, CacheFileSystem, VolumeSpace } from '../../src/fs/cache-file-system.js';
import { Prng } from './prng.js';

type Op = { kind: 'write'; pos: number; data: Uint8Array } | { kind: 'truncate'; size: number };

const SECTOR = 512;

class MemNode {
  /** What survives a crash for sure: the bytes at the last sync. */
  durable = new Uint8Array(0);
  /** What reads see now. */
  cur = new Uint8Array(0);
  /** Changes since the last sync, in order; a crash keeps any subset of them. */
  pending: Op[] = [];

  resize(size: number): void {
    if (size === this.cur.length) return;
    const next = new Uint8Array(size);
    next.set(this.cur.subarray(0, Math.min(size, this.cur.length)));
    this.cur = next;
  }
}

/** Which file operations a test wants to fail. */
export type FaultHook = (op: 'write' | 'sync' | 'truncate', path: string) => void;

/** Which writes a test wants to hold back: a returned promise delays the write until it settles. */
export type HoldHook = (path: string, position: number) => Promise<void> | undefined;

/**
 * An in-memory file system that models what a crash does to files: `sync()` makes a file's
 * bytes durable; {@link CrashFs.crash} returns the file system a reboot would find, in which
 * every change no sync covered was kept, dropped, or (writes) kept for a random subset of its
 * 512-byte sectors. Creations, renames and removals are durable at once. A capacity makes
 * writes past it fail with `IVMR_NOSPC`, as a full volume does.
 */
export class CrashFs implements CacheFileSystem {
  readonly files = new Map<string, MemNode>();
  capacity: number;
  fault: FaultHook | undefined;
  hold: HoldHook | undefined;
  openHandles = 0;
  #dead = false;

  constructor(capacity = 2 ** 40) {
    this.capacity = capacity;
  }

  /** Bytes all files hold now. */
  get usedBytes(): number {
    let n = 0;
    for (const f of this.files.values()) n += f.cur.length;
    return n;
  }

  #alive(): void {
    if (this.#dead) throw new IvmrError(ErrorCode.IO, 'the file system crashed');
  }

  #room(node: MemNode, newSize: number, path: string): void {
    const grow = newSize - node.cur.length;
    if (grow > 0 && this.usedBytes + grow > this.capacity) {
      throw noSpaceError(`write to ${path}: no space left`, { path });
    }
  }

  async open(path: string, flags: 'read' | 'write' | 'create'): Promise<CacheFile> {
    this.#alive();
    let node = this.files.get(path);
    if (node === undefined) {
      if (flags !== 'create') {
        throw new IvmrError(ErrorCode.NOT_FOUND, `open of ${path}: not found`, {
          details: { path },
        });
      }
      node = new MemNode();
      this.files.set(path, node);
    }
    const fs = this;
    const n = node;
    let closed = false;
    fs.openHandles++;
    const check = () => {
      fs.#alive();
      if (closed) throw new IvmrError(ErrorCode.IO, `${path}: file is closed`);
    };
    return {
      async read(into, position) {
        check();
        const avail = Math.max(0, Math.min(into.length, n.cur.length - position));
        into.set(n.cur.subarray(position, position + avail));
        return avail;
      },
      async write(data, position) {
        const held = fs.hold?.(path, position);
        if (held !== undefined) await held;
        check();
        if (flags === 'read') throw new IvmrError(ErrorCode.IO, `${path}: opened read-only`);
        fs.fault?.('write', path);
        const end = position + data.length;
        if (end > n.cur.length) {
          fs.#room(n, end, path);
          n.resize(end);
        }
        n.cur.set(data, position);
        n.pending.push({ kind: 'write', pos: position, data: data.slice() });
      },
      async sync() {
        check();
        fs.fault?.('sync', path);
        n.durable = n.cur.slice();
        n.pending = [];
      },
      async truncate(size) {
        check();
        fs.fault?.('truncate', path);
        fs.#room(n, size, path);
        n.resize(size);
        n.pending.push({ kind: 'truncate', size });
      },
      async size() {
        check();
        return n.cur.length;
      },
      async close() {
        if (closed) return;
        closed = true;
        fs.openHandles--;
      },
    };
  }

  async exists(path: string): Promise<boolean> {
    this.#alive();
    return this.files.has(path);
  }

  async rename(from: string, to: string): Promise<void> {
    this.#alive();
    const node = this.files.get(from);
    if (!node) throw new IvmrError(ErrorCode.NOT_FOUND, `rename of ${from}: not found`);
    this.files.delete(from);
    this.files.set(to, node);
  }

  async unlink(path: string): Promise<void> {
    this.#alive();
    this.files.delete(path);
  }

  async mkdir(): Promise<void> {
    this.#alive();
  }

  async syncDir(): Promise<void> {
    this.#alive();
  }

  statfs = async (): Promise<VolumeSpace> => {
    this.#alive();
    return { totalBytes: this.capacity, freeBytes: Math.max(0, this.capacity - this.usedBytes) };
  };

  /**
   * The file system after a crash now: this one stops working (every call and every open file
   * rejects), and the returned one holds, per file, the durable bytes plus a random choice of
   * the unsynced changes, drawn from `seed`.
   */
  crash(seed: number): CrashFs {
    this.#dead = true;
    const rng = new Prng(seed);
    const next = new CrashFs(this.capacity);
    for (const [path, node] of this.files) {
      const fresh = new MemNode();
      fresh.cur = node.durable.slice();
      for (const op of node.pending) {
        const roll = rng.int(0, 2);
        if (roll === 0) continue;
        if (op.kind === 'truncate') {
          fresh.resize(op.size);
          continue;
        }
        const end = op.pos + op.data.length;
        if (end > fresh.cur.length) fresh.resize(end);
        if (roll === 1) {
          fresh.cur.set(op.data, op.pos);
          continue;
        }
        // Torn: some sectors of the write reached the disk, others did not.
        for (let s = 0; s < op.data.length; s += SECTOR) {
          if (rng.int(0, 1) === 1) {
            fresh.cur.set(op.data.subarray(s, Math.min(s + SECTOR, op.data.length)), op.pos + s);
          }
        }
      }
      fresh.durable = fresh.cur.slice();
      next.files.set(path, fresh);
    }
    return next;
  }
}
