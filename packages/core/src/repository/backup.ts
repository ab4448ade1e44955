import { basename, extname } from 'node:path';
import type { BlockSource } from '../block-source.js';
import { ErrorCode, IvmrError, isIvmrError } from '../errors.js';
import { type CodecName, isCodecName, sha256 } from '../format/codec.js';
import { checkBlockSize } from './config.js';
import type { RepoContext } from './context.js';
import { allocatedBytesOf, type FlatBlockMap } from './disk-source.js';
import { PackWriter } from './pack-writer.js';
import {
  checkDiskName,
  checkVmName,
  completeVmConfig,
  type DiskBackupStats,
  defaultVmConfig,
  encodePoint,
  newPointId,
  type PointDisk,
  type RestorePointInfo,
  type VmConfig,
} from './points.js';

/** One disk to back up. */
export interface BackupDisk {
  /** Disk name; default: the base name of `path` without extension, else `disk<N>`. */
  readonly name?: string;
  /** What to read. */
  readonly source: BlockSource;
  /** Path the source came from (used for the default name only). */
  readonly path?: string;
  /**
   * Byte ranges to read, like VMware's `QueryChangedDiskAreas` (CBT). Unset: every block is read.
   *
   * - For a disk the parent point has: the ranges that changed since that point. Whole blocks
   *   that overlap no range and that the parent has whole are taken from the parent without
   *   reading; the rest (a disk that grew, the short last block) is read.
   * - For a disk without a parent (a VM's first backup, or a disk the parent lacks): the
   *   allocated areas of the disk (changeId `"*"`). Blocks that overlap no range are recorded as
   *   zero blocks without reading (counted in `zeroBlocks`), so a mostly sparse disk is backed up
   *   at the cost of its data.
   *
   * Ranges may overlap and need not be sorted or block-aligned; a block overlapping any range is
   * read whole. Parts of ranges past the end of the source are ignored.
   */
  readonly changedRanges?: ReadonlyArray<{ readonly offset: number; readonly length: number }>;
}

/** Progress of a running backup, reported after every block. */
export interface BackupProgress {
  readonly disk: string;
  readonly diskIndex: number;
  readonly disks: number;
  /** Bytes of this disk processed so far (read, skipped or zero). */
  readonly done: number;
  readonly total: number;
  /** New bytes stored so far in this backup (compressed). */
  readonly storedBytes: number;
}

/** Options of `Repository.backup`. */
export interface BackupOptions {
  readonly vm: string;
  readonly disks: readonly BackupDisk[];
  /** VM configuration; unset fields come from the parent point, else defaults. */
  readonly vmConfig?: Partial<VmConfig>;
  /**
   * Keep a reverse-incremental chain: the new point is stored full and the previous newest point
   * becomes a delta against it. Default false: the new point is a forward increment.
   */
  readonly reverse?: boolean;
  /** Block size of a new chain (default: the repository's). An increment keeps its chain's size. */
  readonly blockSize?: number;
  /** Codec for new blobs (default: the repository's). */
  readonly codec?: CodecName;
  /** Called after every block; must be cheap. */
  readonly onProgress?: (progress: BackupProgress) => void;
  /** Aborting stops the backup; nothing becomes a restore point. */
  readonly signal?: AbortSignal;
}

const ZERO_STATS: DiskBackupStats = {
  blocks: 0,
  zeroBlocks: 0,
  unchangedBlocks: 0,
  dedupBlocks: 0,
  newBlocks: 0,
  newBytes: 0,
  storedBytes: 0,
  readBytes: 0,
};

/**
 * Backs up disks into a new restore point. Order of writes (FORMAT.md, "Commit order"): packs,
 * then an index object for them, then block maps, then the point object, which commits the
 * backup. A crash before the point object leaves only unreferenced objects behind.
 */
export async function runBackup(
  ctx: RepoContext,
  options: BackupOptions,
): Promise<RestorePointInfo> {
  checkVmName(options.vm);
  if (options.disks.length === 0)
    throw new IvmrError(ErrorCode.INVALID_ARGUMENT, 'a backup needs at least one disk');
  const codec = options.codec ?? ctx.config.codec;
  if (!isCodecName(codec))
    throw new IvmrError(ErrorCode.INVALID_ARGUMENT, `unknown codec ${String(codec)}`);
  if (options.blockSize !== undefined) checkBlockSize(options.blockSize);
  const names = diskNames(options.disks);

  const all = await ctx.points();
  const byId = new Map(all.map((p) => [p.id, p]));
  const history = all.filter((p) => p.vm === options.vm);
  const parent = history.at(-1) ?? null;
  const vmConfig = completeVmConfig(
    parent?.vmConfig ?? defaultVmConfig(options.vm),
    options.vmConfig,
  );

  const writer = new PackWriter(ctx.store, ctx.config.packSize, ctx.config.frameSize);
  const newFlat = new Map<string, FlatBlockMap>();
  const parentFlat = new Map<string, FlatBlockMap>();
  const disks: PointDisk[] = [];
  let storedTotal = 0;

  const flush = async () => {
    const pack = await writer.flush();
    if (pack) ctx.unindexed.push(pack);
  };

  try {
    for (let d = 0; d < options.disks.length; d++) {
      const input = options.disks[d]!;
      const name = names[d]!;
      const base = parent?.disks.some((x) => x.name === name)
        ? await ctx.resolve(parent, name, byId)
        : null;
      if (base) parentFlat.set(name, base);
      if (base && options.blockSize !== undefined && options.blockSize !== base.blockSize) {
        throw new IvmrError(
          ErrorCode.INVALID_ARGUMENT,
          `disk ${name} of ${options.vm} uses ${base.blockSize}-byte blocks; an increment cannot change it to ${options.blockSize}`,
        );
      }
      const blockSize = base?.blockSize ?? options.blockSize ?? ctx.config.blockSize;
      const size = input.source.size;
      if (!Number.isSafeInteger(size) || size < 0) {
        throw new IvmrError(ErrorCode.INVALID_ARGUMENT, `disk ${name}: bad size ${size}`);
      }
      const blockCount = Math.ceil(size / blockSize);
      const slots = new Int32Array(blockCount);
      // Blocks the parent has whole (its last block is partial when its size was not a multiple).
      const parentWhole = base ? Math.floor(base.size / blockSize) : 0;
      const changed = changedBlocks(input.changedRanges, blockSize, blockCount);
      // A block that overlaps no range is not read: with a parent it is the parent's (when the
      // parent has it whole), without one it is a zero block (the ranges are the allocated areas).
      const skips = (b: number): boolean =>
        changed !== null &&
        changed[b] === 0 &&
        (base === null || (b < parentWhole && (b + 1) * blockSize <= size));
      const stats = { ...ZERO_STATS, blocks: blockCount };
      const buf = new Uint8Array(blockSize);

      for (let b = 0; b < blockCount; b++) {
        if (options.signal?.aborted) {
          throw new IvmrError(ErrorCode.ABORTED, 'backup aborted', {
            cause: options.signal.reason,
          });
        }
        const start = b * blockSize;
        let len = Math.min(blockSize, size - start);
        const parentEntry = base && b < base.slots.length ? base.slots[b]! : 0;
        if (skips(b)) {
          // The whole run of skipped blocks at once: no read, no allocation, one progress report.
          let end = b + 1;
          while (end < blockCount && skips(end)) end++;
          if (base) {
            slots.set(base.slots.subarray(b, end), b);
            stats.unchangedBlocks += end - b;
          } else {
            stats.zeroBlocks += end - b;
          }
          len = Math.min(end * blockSize, size) - start;
          b = end - 1;
        } else {
          const raw = await input.source.read(start, len, buf);
          stats.readBytes += len;
          if (isAllZero(raw)) {
            stats.zeroBlocks++;
          } else {
            const id = sha256(raw);
            let slot = ctx.index.slotOf(id);
            if (slot >= 0 && slot + 1 === parentEntry) {
              stats.unchangedBlocks++;
            } else if (slot >= 0) {
              stats.dedupBlocks++;
            } else {
              const { pack, entry } = writer.add(id, raw, codec);
              ctx.index.addPack(pack, [entry]);
              slot = ctx.index.slotOf(id);
              const stored = entry.frameLengths.reduce((a, x) => a + x, 0);
              stats.newBlocks++;
              stats.newBytes += len;
              stats.storedBytes += stored;
              storedTotal += stored;
              if (writer.full) await flush();
            }
            slots[b] = slot + 1;
          }
        }
        options.onProgress?.({
          disk: name,
          diskIndex: d,
          disks: options.disks.length,
          done: start + len,
          total: size,
          storedBytes: storedTotal,
        });
      }
      const flat: FlatBlockMap = { size, blockSize, slots, missing: [] };
      newFlat.set(name, flat);
      disks.push({ name, size, blockSize, map: '', allocatedBytes: allocatedBytesOf(flat), stats });
    }
    await flush();
    await ctx.writePendingIndex();
  } catch (err) {
    const abandoned = writer.currentPack;
    if (abandoned) ctx.index.forgetPack(abandoned);
    throw err;
  }
  return commitPoint(
    ctx,
    options.vm,
    parent,
    options.reverse === true,
    vmConfig,
    disks,
    newFlat,
    parentFlat,
    byId,
  );
}

/**
 * Writes the block maps and the point object (the commit), then, for a reverse chain, turns the
 * previous newest point into a delta against the new one.
 */
async function commitPoint(
  ctx: RepoContext,
  vm: string,
  parent: RestorePointInfo | null,
  reverse: boolean,
  vmConfig: VmConfig,
  disks: PointDisk[],
  newFlat: Map<string, FlatBlockMap>,
  parentFlat: Map<string, FlatBlockMap>,
  byId: Map<string, RestorePointInfo>,
): Promise<RestorePointInfo> {
  const asDelta = parent !== null && !reverse;
  const committed: PointDisk[] = [];
  for (const disk of disks) {
    const base = asDelta ? (parentFlat.get(disk.name) ?? null) : null;
    const map = await ctx.writeMap(ctx.mapFrom(newFlat.get(disk.name)!, base));
    committed.push({ ...disk, map });
  }
  const allFull = committed.every((d) => !asDelta || !parentFlat.has(d.name));
  const point: RestorePointInfo = {
    version: 1,
    id: newPointId(),
    vm,
    time: new Date().toISOString(),
    sequence: (parent?.sequence ?? 0) + 1,
    kind: allFull ? 'full' : 'incremental',
    base: allFull ? null : parent!.id,
    vmConfig,
    disks: committed,
  };
  await ctx.store.put('point', point.id, encodePoint(point));
  byId.set(point.id, point);

  if (reverse && parent) {
    // The put above committed the backup, so it must not reject now. Rewriting the parent as a
    // reverse delta only saves space: if it fails, the parent keeps its old maps and reads the same.
    await rebase(ctx, parent, point, byId).catch((err: unknown) => {
      if (!isIvmrError(err)) throw err;
    });
  }
  return point;
}

/**
 * Rewrites `point` as deltas against `newBase` (which must resolve independently of `point`).
 * What `point` reads does not change; its new maps are stored before its object is replaced, so a
 * crash leaves either representation. The old maps stay until a prune: readers may hold them.
 */
export async function rebase(
  ctx: RepoContext,
  point: RestorePointInfo,
  newBase: RestorePointInfo | null,
  byId: Map<string, RestorePointInfo>,
): Promise<RestorePointInfo> {
  const disks: PointDisk[] = [];
  let anyDelta = false;
  for (const disk of point.disks) {
    const own = await ctx.resolve(point, disk.name, byId);
    const baseDisk = newBase?.disks.find(
      (x) => x.name === disk.name && x.blockSize === disk.blockSize,
    );
    const base = newBase && baseDisk ? await ctx.resolve(newBase, disk.name, byId) : null;
    if (base) anyDelta = true;
    disks.push({ ...disk, map: await ctx.writeMap(ctx.mapFrom(own, base)) });
  }
  const kind = !anyDelta
    ? 'full'
    : newBase!.sequence > point.sequence
      ? 'reverse-incremental'
      : 'incremental';
  const next: RestorePointInfo = { ...point, kind, base: anyDelta ? newBase!.id : null, disks };
  await ctx.store.put('point', next.id, encodePoint(next));
  byId.set(next.id, next);
  return next;
}

/** Default disk names: the given name, the image's base name, or `disk<N>`; all unique. */
function diskNames(disks: readonly BackupDisk[]): string[] {
  const names = disks.map(
    (d, i) => d.name ?? (d.path ? basename(d.path, extname(d.path)) : `disk${i}`),
  );
  const seen = new Set<string>();
  for (const n of names) {
    checkDiskName(n);
    if (seen.has(n))
      throw new IvmrError(ErrorCode.INVALID_ARGUMENT, `two disks are named ${n}: name them apart`);
    seen.add(n);
  }
  return names;
}

/**
 * Which blocks overlap a range: one byte per block, 1 when it does; null without ranges
 * (everything is read). Parts of ranges past the last block are ignored.
 */
function changedBlocks(
  ranges: BackupDisk['changedRanges'],
  blockSize: number,
  blockCount: number,
): Uint8Array | null {
  if (!ranges) return null;
  const hit = new Uint8Array(blockCount);
  for (const r of ranges) {
    if (
      !Number.isSafeInteger(r.offset) ||
      !Number.isSafeInteger(r.length) ||
      r.offset < 0 ||
      r.length < 0
    ) {
      throw new IvmrError(ErrorCode.INVALID_ARGUMENT, `bad changed range ${r.offset}+${r.length}`);
    }
    if (r.length === 0) continue;
    const first = Math.floor(r.offset / blockSize);
    const last = Math.min(Math.floor((r.offset + r.length - 1) / blockSize), blockCount - 1);
    if (first <= last) hit.fill(1, first, last + 1);
  }
  return hit;
}

let zeros = Buffer.alloc(0);

function isAllZero(bytes: Uint8Array): boolean {
  if (zeros.length < bytes.length) zeros = Buffer.alloc(bytes.length);
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).equals(
    zeros.subarray(0, bytes.length),
  );
}
