import { ErrorCode, IvmrError, isIvmrError } from '../errors.js';
import { mapId, ZERO_ID } from '../format/block-map.js';
import { sha256 } from '../format/codec.js';
import { encodeIndex, type IndexedPack } from '../format/index-file.js';
import { type BlobEntry, decodePackTrailer, storedLength } from '../format/pack.js';
import { deleteUnreferencedMaps, rebase } from './backup.js';
import type { RepoContext } from './context.js';
import { PackWriter } from './pack-writer.js';
import { checkVmName, type RestorePointInfo } from './points.js';

/** Options of `Repository.forget`. */
export interface ForgetOptions {
  readonly vm: string;
  /** Keep the newest N restore points of the VM (N >= 1); older ones are removed. */
  readonly keepLast: number;
  /** Also delete blobs no point needs any more (default true). */
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
}

/**
 * Removes all but the newest `keepLast` points of a VM without breaking a chain: every kept point
 * whose base is removed is first rewritten against its nearest kept ancestor (or as a full), and
 * only then are the removed points deleted. What every kept point reads never changes.
 */
export async function runForget(ctx: RepoContext, options: ForgetOptions): Promise<ForgetReport> {
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
  const removedMaps: string[] = [];
  for (const id of doomed) {
    const p = byId.get(id)!;
    await ctx.store.delete('point', id);
    byId.delete(id);
    removedMaps.push(...p.disks.map((d) => d.map));
  }
  await deleteUnreferencedMaps(ctx, removedMaps, byId);
  const prune = options.prune === false ? null : await runPrune(ctx, [...byId.values()]);
  return { removed: [...doomed], rebased, prune };
}

/**
 * Deletes what no restore point needs: unreferenced maps, blobs and packs. Packs with some dead
 * blobs are rewritten with the live ones (stored bytes copied, not recompressed). Order: new packs,
 * then one new index of every live blob, then old indexes, then old packs, so a crash at any
 * moment loses nothing a point needs. Refuses to run when an index object is unreadable.
 */
export async function runPrune(
  ctx: RepoContext,
  points: readonly RestorePointInfo[],
): Promise<PruneReport> {
  refuseDamagedIndex(ctx);
  const liveMaps = new Set<string>();
  const live = new Set<string>();
  for (const p of points) {
    for (const d of p.disks) {
      if (liveMaps.has(d.map)) continue;
      liveMaps.add(d.map);
      const map = await ctx.loadMap(d.map);
      for (let i = 0; i < map.blocks.length; i++) {
        const id = mapId(map, i);
        if (!Buffer.from(id).equals(ZERO_ID)) live.add(Buffer.from(id).toString('hex'));
      }
    }
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
