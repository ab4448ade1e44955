import { ErrorCode, IvmrError, isIvmrError } from '../errors.js';
import {
  type BlockMap,
  decodeBlockMap,
  encodeBlockMap,
  mapId,
  ZERO_ID,
} from '../format/block-map.js';
import { sha256 } from '../format/codec.js';
import { decodeIndex, encodeIndex, type IndexedPack } from '../format/index-file.js';
import { BLOB_ID_SIZE } from '../format/pack.js';
import type { StoreAdapter } from '../store/adapter.js';
import { BlobIndex } from './blob-index.js';
import { BlobReader, type FrameCacheOptions } from './blob-reader.js';
import type { RepositoryConfig } from './config.js';
import type { DecodePool } from './decode-pool.js';
import type { FlatBlockMap } from './disk-source.js';
import { parsePoint, type RestorePointInfo } from './points.js';

/** A metadata object that could not be read. */
export interface DamagedObject {
  readonly kind: 'index' | 'map' | 'point' | 'pack';
  readonly name: string;
  readonly code: string;
  readonly message: string;
}

/** Metadata objects fetched at once when many are read (index objects, points). */
const FETCH_PARALLEL = 16;

/**
 * `fn` of every item, at most `limit` at a time; results in the items' order. Rejects with the
 * first rejection, after every started call has settled.
 */
async function mapLimit<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T) => Promise<R>,
): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!);
    }
  };
  const settled = await Promise.allSettled(
    Array.from({ length: Math.min(limit, items.length) }, worker),
  );
  const failed = settled.find((s) => s.status === 'rejected');
  if (failed) throw (failed as PromiseRejectedResult).reason;
  return out;
}

/** Longest base chain followed before a point is declared broken (guards against cycles). */
const MAX_CHAIN = 100_000;

/**
 * Internal state shared by the repository's operations: the store, the blob index, the frame
 * reader, and helpers to load points and resolve chains. Not part of the public API.
 */
export class RepoContext {
  readonly index = new BlobIndex();
  readonly reader: BlobReader;
  /** Index objects loaded, and what each lists. */
  readonly indexObjects = new Map<string, IndexedPack[]>();
  /** Packs written by this process and not yet listed by an index object. */
  readonly unindexed: IndexedPack[] = [];
  readonly damaged: DamagedObject[] = [];

  constructor(
    readonly store: StoreAdapter,
    readonly config: RepositoryConfig,
    cache: FrameCacheOptions,
    pool?: DecodePool,
  ) {
    this.reader = new BlobReader(store, this.index, cache, (pack) => this.relocate(pack), pool);
  }

  /** Index reloads asked for, and the number of the last one that completed. */
  #relocationsAsked = 0;
  #relocationsDone = 0;
  #relocating: Promise<void> | undefined;

  /**
   * A pack is missing from the store: a prune (or repair) of another process may have rewritten
   * it and moved its live blobs. Marks it gone and reads the current index objects, so that the
   * blobs' slots point to their new packs. Concurrent calls share reloads; each call returns only
   * after a reload that started after it was made.
   */
  async relocate(pack: string): Promise<void> {
    this.index.markPackGone(pack);
    const asked = ++this.#relocationsAsked;
    while (this.#relocationsDone < asked) {
      if (!this.#relocating) {
        const upTo = this.#relocationsAsked;
        this.#relocating = this.#reindex()
          .then(() => {
            this.#relocationsDone = Math.max(this.#relocationsDone, upTo);
          })
          .finally(() => {
            this.#relocating = undefined;
          });
      }
      await this.#relocating;
    }
  }

  /** Loads new index objects and adds every listed pack again (moving blobs of gone packs). */
  async #reindex(): Promise<void> {
    for await (const { name } of this.store.list('index')) {
      let packs = this.indexObjects.get(name);
      if (!packs) {
        try {
          packs = decodeIndex(await this.store.get('index', name), `index ${name}`);
        } catch (err) {
          if (isIvmrError(err, ErrorCode.NOT_FOUND)) continue;
          throw err;
        }
        this.indexObjects.set(name, packs);
      }
      for (const p of packs) this.index.addPack(p.pack, p.blobs);
    }
  }

  /**
   * The points whose maps reading `point` may need: it and its bases up to a full point (or a
   * missing base, which resolving reports). Guarded against loops.
   */
  chain(point: RestorePointInfo, byId: ReadonlyMap<string, RestorePointInfo>): RestorePointInfo[] {
    const chain = [point];
    const seen = new Set([point.id]);
    for (let p = point; p.base !== null; ) {
      const base = byId.get(p.base);
      if (!base || seen.has(base.id)) break;
      seen.add(base.id);
      chain.push(base);
      p = base;
    }
    return chain;
  }

  /**
   * True when every point of `chain` is still stored as it was read (same base and maps): what
   * a reader checks after taking its lease, to know that no forget or rebase slipped in between.
   */
  async unchanged(chain: readonly RestorePointInfo[]): Promise<boolean> {
    const same = await mapLimit(chain, FETCH_PARALLEL, async (p) => {
      let now: RestorePointInfo;
      try {
        now = parsePoint(await this.store.get('point', p.id), p.id);
      } catch (err) {
        if (isIvmrError(err, ErrorCode.NOT_FOUND)) return false;
        throw err;
      }
      if (now.base !== p.base || now.disks.length !== p.disks.length) return false;
      return now.disks.every((d, i) => d.map === p.disks[i]!.map);
    });
    return same.every(Boolean);
  }

  /**
   * Loads the index objects not loaded yet. They are fetched in parallel (a remote store answers
   * each after a round trip) and added in the order listed.
   */
  async loadIndex(): Promise<void> {
    const names: string[] = [];
    for await (const { name } of this.store.list('index')) {
      if (this.indexObjects.has(name)) continue;
      if (this.damaged.some((d) => d.kind === 'index' && d.name === name)) continue;
      names.push(name);
    }
    const loaded = await mapLimit(names, FETCH_PARALLEL, async (name) => {
      try {
        return decodeIndex(await this.store.get('index', name), `index ${name}`);
      } catch (err) {
        if (!isIvmrError(err)) throw err;
        return err;
      }
    });
    names.forEach((name, i) => {
      const packs = loaded[i]!;
      if (packs instanceof IvmrError) {
        this.damaged.push({ kind: 'index', name, code: packs.code, message: packs.message });
        return;
      }
      this.indexObjects.set(name, packs);
      for (const p of packs) this.index.addPack(p.pack, p.blobs);
    });
  }

  /** Records packs just written (their blobs become readable at once). */
  addPacks(packs: readonly IndexedPack[]): void {
    for (const p of packs) {
      this.index.addPack(p.pack, p.blobs);
      this.unindexed.push(p);
    }
  }

  /** Writes an index object for every pack not yet indexed. Call before committing a point. */
  async writePendingIndex(): Promise<void> {
    if (this.unindexed.length === 0) return;
    const packs = this.unindexed.splice(0);
    const bytes = encodeIndex(packs);
    const name = Buffer.from(sha256(bytes)).toString('hex');
    try {
      await this.store.put('index', name, bytes);
    } catch (err) {
      this.unindexed.unshift(...packs);
      throw err;
    }
    this.indexObjects.set(name, packs);
  }

  /** All readable restore points, oldest first per VM; unreadable ones are recorded as damaged. */
  async points(): Promise<RestorePointInfo[]> {
    const names: string[] = [];
    for await (const { name } of this.store.list('point')) names.push(name);
    const read = await mapLimit(names, FETCH_PARALLEL, async (name) => {
      try {
        return parsePoint(await this.store.get('point', name), name);
      } catch (err) {
        if (!isIvmrError(err)) throw err;
        return err;
      }
    });
    const points: RestorePointInfo[] = [];
    names.forEach((name, i) => {
      const p = read[i]!;
      if (!(p instanceof IvmrError)) {
        points.push(p);
        return;
      }
      if (p.code === ErrorCode.NOT_FOUND) return;
      if (!this.damaged.some((d) => d.kind === 'point' && d.name === name)) {
        this.damaged.push({ kind: 'point', name, code: p.code, message: p.message });
      }
    });
    return points.sort((a, b) => (a.vm === b.vm ? a.sequence - b.sequence : a.vm < b.vm ? -1 : 1));
  }

  /** Loads a block map; one that is missing or malformed is also recorded as damaged. */
  async loadMap(name: string): Promise<BlockMap> {
    try {
      return decodeBlockMap(await this.store.get('map', name), `block map ${name}`);
    } catch (err) {
      if (isIvmrError(err) && !this.damaged.some((d) => d.kind === 'map' && d.name === name)) {
        this.damaged.push({ kind: 'map', name, code: err.code, message: err.message });
      }
      throw err;
    }
  }

  /** Stores a block map object (content-addressed) and returns its name. */
  async writeMap(map: BlockMap): Promise<string> {
    const bytes = encodeBlockMap(map);
    const name = Buffer.from(sha256(bytes)).toString('hex');
    if (!(await this.store.has('map', name))) await this.store.put('map', name, bytes);
    return name;
  }

  /**
   * The flat block map of disk `disk` at `point`: follows base links to the nearest full map
   * and applies each delta on the way back; `used` receives the maps' names, newest first.
   * Rejects with `IVMR_FORMAT` for a broken chain.
   */
  async resolve(
    point: RestorePointInfo,
    disk: string,
    byId: ReadonlyMap<string, RestorePointInfo>,
    used?: string[],
  ): Promise<FlatBlockMap> {
    const maps: BlockMap[] = [];
    // A long chain on a remote store is many round trips: the maps further down the chain are
    // fetched FETCH_PARALLEL ahead while the walk goes on (a fetch that fails is done again by
    // loadMap, which reports it).
    const ahead = this.chain(point, byId).map((c) => c.disks.find((x) => x.name === disk)?.map);
    const fetched = new Map<number, Promise<Uint8Array | undefined>>();
    const fetchFrom = (from: number) => {
      for (let i = from; i < Math.min(ahead.length, from + FETCH_PARALLEL); i++) {
        const name = ahead[i];
        if (fetched.has(i) || name === undefined) continue;
        fetched.set(
          i,
          this.store.get('map', name).then(
            (b) => b,
            () => undefined,
          ),
        );
      }
    };
    let p: RestorePointInfo | undefined = point;
    for (let depth = 0; ; depth++) {
      if (depth > MAX_CHAIN) throw chainError(point, disk, 'base chain loops or is too long');
      const d = p.disks.find((x) => x.name === disk);
      if (!d) throw chainError(point, disk, `point ${p.id} in its chain has no disk ${disk}`);
      fetchFrom(depth);
      const bytes = ahead[depth] === d.map ? await fetched.get(depth) : undefined;
      let map: BlockMap | undefined;
      try {
        if (bytes) map = decodeBlockMap(bytes, `block map ${d.map}`);
      } catch {
        // loadMap below reads it again and records the damage.
      }
      map ??= await this.loadMap(d.map);
      if (map.blockSize !== d.blockSize || map.diskSize !== d.size) {
        throw chainError(point, disk, `block map ${d.map} does not match point ${p.id}`);
      }
      maps.push(map);
      used?.push(d.map);
      if (map.kind === 'full') break;
      if (p.base === null)
        throw chainError(point, disk, `point ${p.id} has a delta map but no base`);
      const base = byId.get(p.base);
      if (!base) throw chainError(point, disk, `base point ${p.base} of ${p.id} is missing`);
      if (base.disks.find((x) => x.name === disk)?.blockSize !== d.blockSize) {
        throw chainError(point, disk, `base point ${p.base} has another block size`);
      }
      p = base;
    }
    const top = maps[0]!;
    const blockCount = Math.ceil(top.diskSize / top.blockSize);
    const slots = new Int32Array(blockCount);
    const missing: string[] = [];
    const missingNo = new Map<string, number>();
    for (let m = maps.length - 1; m >= 0; m--) {
      const map = maps[m]!;
      for (let i = 0; i < map.blocks.length; i++) {
        const block = map.blocks[i]!;
        if (block >= blockCount) continue;
        const id = mapId(map, i);
        if (isZeroId(id)) {
          slots[block] = 0;
          continue;
        }
        const slot = this.index.slotOf(id);
        if (slot >= 0) {
          slots[block] = slot + 1;
          continue;
        }
        const hex = Buffer.from(id).toString('hex');
        let k = missingNo.get(hex);
        if (k === undefined) {
          k = missing.length;
          missing.push(hex);
          missingNo.set(hex, k);
        }
        slots[block] = -(k + 1);
      }
      // A point whose disk was smaller drops the blocks past its end for every later point.
      slots.fill(0, Math.min(blockCount, Math.ceil(map.diskSize / map.blockSize)));
    }
    for (let b = 0; b < blockCount; b++) {
      const slot = slots[b]! - 1;
      if (slot < 0) continue;
      const expected = Math.min(top.blockSize, top.diskSize - b * top.blockSize);
      if (this.index.rawLength(slot) !== expected) {
        throw chainError(
          point,
          disk,
          `block ${b} names blob ${this.index.idOf(slot)} of the wrong length`,
        );
      }
    }
    return { size: top.diskSize, blockSize: top.blockSize, slots, missing };
  }

  /** Hex blob id of a flat-map entry (non-zero). */
  idOfEntry(map: FlatBlockMap, entry: number): string {
    return entry > 0 ? this.index.idOf(entry - 1) : map.missing[-entry - 1]!;
  }

  /**
   * Encodes `target` as a block map: full, or a delta against `base` (same block size) listing
   * the blocks whose blob differs.
   */
  mapFrom(target: FlatBlockMap, base: FlatBlockMap | null): BlockMap {
    const blocks: number[] = [];
    const ids: Uint8Array[] = [];
    for (let i = 0; i < target.slots.length; i++) {
      const t = target.slots[i]!;
      if (base === null) {
        if (t === 0) continue;
      } else {
        const b = i < base.slots.length ? base.slots[i]! : 0;
        if (t === b && t >= 0) continue;
        if (t < 0 && b < 0 && this.idOfEntry(target, t) === this.idOfEntry(base, b)) continue;
      }
      blocks.push(i);
      ids.push(t === 0 ? ZERO_ID : Buffer.from(this.idOfEntry(target, t), 'hex'));
    }
    const idBytes = new Uint8Array(ids.length * BLOB_ID_SIZE);
    for (let i = 0; i < ids.length; i++) idBytes.set(ids[i]!, i * BLOB_ID_SIZE);
    return {
      kind: base === null ? 'full' : 'delta',
      diskSize: target.size,
      blockSize: target.blockSize,
      blocks: Float64Array.from(blocks),
      ids: idBytes,
    };
  }
}

function isZeroId(id: Uint8Array): boolean {
  for (let i = 0; i < id.length; i++) if (id[i] !== 0) return false;
  return true;
}

function chainError(point: RestorePointInfo, disk: string, why: string): IvmrError {
  return new IvmrError(
    ErrorCode.FORMAT,
    `restore point ${point.vm}@${point.id} disk ${disk}: ${why}`,
    {
      details: { vm: point.vm, point: point.id, disk },
    },
  );
}
