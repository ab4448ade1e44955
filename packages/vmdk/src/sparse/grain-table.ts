import type { BlockSource } from '@ivmr/core';
import { LruCache } from '../lru.js';
import type { GrainDirectory } from './grain-directory.js';
import { SECTOR } from './header.js';

/**
 * The grain tables of a sparse extent, loaded on demand and kept in an LRU (2 KiB each with
 * VMware's 512 entries; the default 256 tables cover 8 GiB of a disk with 64 KiB grains).
 * Concurrent misses on one table read it once.
 */
export class GrainTables {
  readonly #file: BlockSource;
  readonly #directory: GrainDirectory;
  readonly #entriesPerTable: number;
  readonly #cache: LruCache<number, Uint32Array>;

  constructor(
    file: BlockSource,
    directory: GrainDirectory,
    entriesPerTable: number,
    capacity: number,
  ) {
    this.#file = file;
    this.#directory = directory;
    this.#entriesPerTable = entriesPerTable;
    this.#cache = new LruCache(capacity);
  }

  /**
   * Grain table `index` (entry i: the sector of grain i of the table, 0 unallocated), or null
   * when the directory has no table there (every grain it would cover is unallocated). Returns
   * the table itself, not a promise, when it is cached: the common case costs no microtask.
   */
  get(index: number): Uint32Array | null | Promise<Uint32Array> {
    const sector = this.#directory.entries[index] ?? 0;
    if (sector === 0) return null;
    return this.#cache.get(index) ?? this.#cache.load(index, () => this.#load(sector));
  }

  async #load(sector: number): Promise<Uint32Array> {
    const n = this.#entriesPerTable;
    const bytes = await this.#file.read(sector * SECTOR, n * 4);
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const table = new Uint32Array(n);
    for (let i = 0; i < n; i++) table[i] = view.getUint32(i * 4, true);
    return table;
  }

  clear(): void {
    this.#cache.clear();
  }
}
