import { ErrorCode, IvmrError, isIvmrError } from '../errors.js';
import { type BlockMap, mapId, ZERO_ID } from '../format/block-map.js';
import { sha256 } from '../format/codec.js';
import { encodeIndex, type IndexedPack } from '../format/index-file.js';
import { type BlobEntry, decodePackTrailer, storedLength } from '../format/pack.js';
import { rebase } from './backup.js';
import type { RepoContext } from './context.js';
import type { Leases } from './lock.js';
import { PackWriter } from './pack-writer.js';
import { checkVmName, type RestorePointInfo } from './points.js';

/** Options of `Repository.forget`. */
export interface ForgetOptions {
  readonly vm: string;
  /** Keep the newest N restore points of the VM (N >= 1); older ones are removed. */
  readonly keepLast: number;
  /**
   * Also delete blobs no point needs any more (default true). The prune needs the exclusive lock:
   * while backups or other forgets run it waits for them up to the repository's `lockWait`, and is
   * otherwise skipped (see {@link ForgetReport.pruneSkipped}).
   */
  readonly prune?: boolean;
}

/** What `prune` changed. */
export interface PruneReport {
  readonly packsDeleted: number;
  readonly packsRewritten: number;
  readonly blobsRemoved: number;
  /** Stored bytes given back (deleted packs minus rewritten copies). */
  readonly bytesFreed: number;
  readonly mapsDeleted: number;
  /** Packs no index listed that were adopted because points still need their blobs. */
  readonly packsAdopted: number;
}

/** Result of `Repository.forget`. */
export interface ForgetReport {
  /** Ids of removed points. */
  readonly removed: readonly string[];
  /** Ids of kept points rewritten against a new base (synthetic fulls among them). */
  readonly rebased: readonly string[];
  readonly prune: PruneReport | null;
  /** Why the prune was skipped though asked for (another process held a conflicting lock). */
  readonly pruneSkipped?: string;
}

/**
 * Removes all but the newest `keepLast` points of a VM without breaking a chain: every kept point
 * whose base is removed is first rewritten against its nearest kept ancestor (or as a full), and
 * only then are the removed points deleted. What every kept point reads never changes. Deletes
 * no map, pack or index object: that is prune's work (readers may still use them).
 */
export async function runForget(
  ctx: RepoContext,
  options: ForgetOptions,
): Promise<{ removed: string[]; rebased: string[] }> {
  checkVmName(options.vm);
  if (!Number.isInteger(options.keepLast) || options.keepLast < 1) {
    throw new IvmrError(
      ErrorCode.INVALID_ARGUMENT,
      `keep-last must be a whole number >= 1, got ${options.keepLast}`,
    );
  }
  // Refuse before removing any point, not after: a forget that fails must change nothing.
  if (options.prune !== false) refuseDamagedIndex(ctx);
  const all = await ctx.points();
  const byId = new Map(all.map((p) => [p.id, p]));
  const history = all.filter((p) => p.vm === options.vm);
  if (history.length === 0) {
    throw new IvmrError(ErrorCode.NOT_FOUND, `no restore points of VM ${options.vm}`, {
      details: { vm: options.vm },
    });
  }
  const doomed = new Set(
    history.slice(0, Math.max(0, history.length - options.keepLast)).map((p) => p.id),
  );
  const rebased: string[] = [];
  for (const p of all) {
    if (doomed.has(p.id) || p.base === null || !doomed.has(p.base)) continue;
    let target: string | null = p.base;
    while (target !== null && doomed.has(target)) target = byId.get(target)?.base ?? null;
    await rebase(ctx, byId.get(p.id)!, target === null ? null : byId.get(target)!, byId);
    rebased.push(p.id);
  }
  for (const id of doomed) {
    await ctx.store.delete('point', id);
    byId.delete(id);
  }
  return { removed: [...doomed], rebased };
}

/**
 * Deletes what neither a restore point nor a reader's lease needs: unreferenced maps, blobs and
 * packs. Packs with some dead blobs are rewritten with the live ones (stored bytes copied, not
 * recompressed). Order: new packs, then one new index of every live blob, then old indexes, then
 * old packs, so a crash at any moment loses nothing a point needs, and readers find moved blobs
 * in the new index. Refuses to run when an index object is unreadable.
 */
export async function runPrune(
  ctx: RepoContext,
  points: readonly RestorePointInfo[],
  leases: Leases,
): Promise<PruneReport> {
  refuseDamagedIndex(ctx);
  const liveMaps = new Set<string>();
  const live = new Set<string>();
  const addAll = (map: BlockMap) => {
    for (let i = 0; i < map.blocks.length; i++) {
      const id = mapId(map, i);
      if (!isZero(id)) live.add(Buffer.from(id).toString('hex'));
    }
  };
  for (const p of points) {
    for (const d of p.disks) {
      if (liveMaps.has(d.map)) continue;
      addAll(await ctx.loadMap(d.map));
      liveMaps.add(d.map);
    }
  }
  // A lease may name maps of a point removed just before its reader checked its chain: that
  // reader starts over, and nothing of a map that is gone is left to protect.
  const leasedMap = async (name: string): Promise<BlockMap | null> => {
    try {
      const map = await ctx.loadMap(name);
      liveMaps.add(name);
      return map;
    } catch (err) {
      if (isIvmrError(err, ErrorCode.NOT_FOUND)) return null;
      throw err;
    }
  };
  for (const name of leases.maps) {
    const map = await leasedMap(name);
    if (map) addAll(map);
  }
  for (const chain of leases.chains) {
    const maps: BlockMap[] = [];
    for (const name of chain) {
      const map = await leasedMap(name);
      if (!map) break;
      maps.push(map);
    }
    if (maps.length === chain.length) for (const id of visibleBlobs(maps)) live.add(id);
  }
  let mapsDeleted = 0;
  for await (const { name } of ctx.store.list('map')) {
    if (!liveMaps.has(name)) {
      await ctx.store.delete('map', name);
      mapsDeleted++;
    }
  }

  // Every pack the indexes list, and the blobs of each that stay.
  const packs = new Map<string, IndexedPack>();
  for (const list of [...ctx.indexObjects.values(), ctx.unindexed])
    for (const p of list) packs.set(p.pack, p);
  // Packs no index lists: adopt those holding live blobs (an index may have been lost).
  let packsAdopted = 0;
  const orphans: string[] = [];
  for await (const { name, size } of ctx.store.list('pack')) {
    if (packs.has(name)) continue;
    const blobs = await readPackHeader(ctx, name, size).catch((err: unknown) => {
      if (isIvmrError(err)) return [] as BlobEntry[];
      throw err;
    });
    if (blobs.some((b) => live.has(Buffer.from(b.id).toString('hex')))) {
      packs.set(name, { pack: name, size, blobs });
      packsAdopted++;
    } else {
      orphans.push(name);
    }
  }

  const kept = new Set<string>();
  const survivors: IndexedPack[] = [];
  const rewrite: IndexedPack[] = [];
  const dead: IndexedPack[] = [];
  let blobsRemoved = 0;
  for (const p of packs.values()) {
    const keep = p.blobs.filter((b) => {
      const hex = Buffer.from(b.id).toString('hex');
      if (!live.has(hex) || kept.has(hex)) return false;
      kept.add(hex);
      return true;
    });
    blobsRemoved += p.blobs.length - keep.length;
    if (keep.length === p.blobs.length) survivors.push(p);
    else if (keep.length === 0) dead.push(p);
    else rewrite.push({ ...p, blobs: keep });
  }

  const writer = new PackWriter(ctx.store, ctx.config.packSize, ctx.config.frameSize);
  let bytesFreed = 0;
  for (const p of rewrite) {
    for (const b of p.blobs) {
      const stored = await ctx.store.get('pack', p.pack, {
        offset: b.offset,
        length: storedLength(b),
      });
      writer.addStored(b, stored);
      if (writer.full) {
        const pack = await writer.flush();
        if (pack) survivors.push(pack);
      }
    }
  }
  const last = await writer.flush();
  if (last) survivors.push(last);

  const oldIndexes = [...ctx.indexObjects.keys()];
  if (rewrite.length + dead.length + packsAdopted > 0 || oldIndexes.length > 1) {
    const bytes = encodeIndex(survivors);
    const name = Buffer.from(sha256(bytes)).toString('hex');
    await ctx.store.put('index', name, bytes);
    for (const old of oldIndexes) if (old !== name) await ctx.store.delete('index', old);
  }
  for (const p of [...rewrite, ...dead]) {
    const original = packs.get(p.pack)!;
    bytesFreed += original.size;
    await ctx.store.delete('pack', p.pack);
  }
  for (const p of survivors) if (!packs.has(p.pack)) bytesFreed -= p.size;
  for (const name of orphans) await ctx.store.delete('pack', name);
  ctx.unindexed.length = 0;
  return {
    packsDeleted: dead.length + orphans.length,
    packsRewritten: rewrite.length,
    blobsRemoved,
    bytesFreed,
    mapsDeleted,
    packsAdopted,
  };
}

/**
 * The blobs a chain of maps (newest first, down to a full map) resolves to: each block's blob
 * comes from the newest map listing it, unless a newer map's disk ended before the block.
 */
function visibleBlobs(maps: readonly BlockMap[]): Set<string> {
  const visible = new Set<string>();
  const decided = new Set<number>();
  let limit = Number.POSITIVE_INFINITY;
  for (const map of maps) {
    for (let i = 0; i < map.blocks.length; i++) {
      const block = map.blocks[i]!;
      if (block >= limit || decided.has(block)) continue;
      decided.add(block);
      const id = mapId(map, i);
      if (!isZero(id)) visible.add(Buffer.from(id).toString('hex'));
    }
    limit = Math.min(limit, Math.ceil(map.diskSize / map.blockSize));
  }
  return visible;
}

function isZero(id: Uint8Array): boolean {
  return Buffer.from(id.buffer, id.byteOffset, id.byteLength).equals(ZERO_ID);
}

/** Pruning with part of the index unreadable could delete live blobs: `IVMR_FORMAT` instead. */
function refuseDamagedIndex(ctx: RepoContext): void {
  const badIndex = ctx.damaged.find((d) => d.kind === 'index');
  if (badIndex) {
    throw new IvmrError(
      ErrorCode.FORMAT,
      `cannot prune: index ${badIndex.name} is damaged (${badIndex.message}); run 'ivmr repair' first`,
      { details: { index: badIndex.name } },
    );
  }
}

/** Reads the blob entries from a pack's trailer (two small ranged reads). */
export async function readPackHeader(
  ctx: RepoContext,
  pack: string,
  size: number,
): Promise<BlobEntry[]> {
  const what = `pack ${pack}`;
  const tailLength = Math.min(size, 64 * 1024);
  let tail = await ctx.store.get('pack', pack, { offset: size - tailLength, length: tailLength });
  let decoded = decodePackTrailer(tail, size, what);
  if ('needed' in decoded) {
    const n = decoded.needed;
    tail = await ctx.store.get('pack', pack, { offset: size - n, length: n });
    decoded = decodePackTrailer(tail, size, what);
    if ('needed' in decoded) throw new IvmrError(ErrorCode.FORMAT, `${what}: trailer unreadable`);
  }
  return decoded.entries;
}
