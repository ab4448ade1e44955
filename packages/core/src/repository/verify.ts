import { createHash } from 'node:crypto';
import { ErrorCode, isIvmrError } from '../errors.js';
import { decodePackTrailer } from '../format/pack.js';
import { decodeStoredFrame } from './blob-reader.js';
import type { DamagedObject, RepoContext } from './context.js';
import type { ByteRange, FlatBlockMap } from './disk-source.js';

/** Which restore points `verify` checks; all of them when empty. */
export interface VerifyOptions {
  readonly vm?: string;
  /** Point id (with `vm`); needs `vm`. */
  readonly point?: string;
  /** Called after each pack with the bytes checked so far. */
  readonly onProgress?: (checkedBytes: number, totalBytes: number) => void;
}

/** A blob that failed its check. */
export interface DamagedBlob {
  readonly id: string;
  readonly pack: string;
  /** `IVMR_CHUNK_CORRUPT` or `IVMR_NOT_FOUND`. */
  readonly code: string;
  readonly message: string;
}

/** Byte ranges of one disk of one point that read damaged or missing blobs. */
export interface AffectedDisk {
  readonly vm: string;
  readonly point: string;
  readonly disk: string;
  readonly ranges: readonly ByteRange[];
  readonly blobs: readonly string[];
}

/** Result of `Repository.verify`. */
export interface VerifyReport {
  /** True when nothing checked is damaged or missing. */
  readonly ok: boolean;
  readonly pointsChecked: number;
  readonly packsChecked: number;
  readonly blobsChecked: number;
  /** Stored bytes read and checked. */
  readonly bytesChecked: number;
  readonly damagedBlobs: readonly DamagedBlob[];
  /** Blob ids that block maps name but no index lists. */
  readonly missingBlobs: readonly string[];
  /** Metadata objects (index, map, point, pack header) that could not be read. */
  readonly damagedObjects: readonly DamagedObject[];
  /** Which points and disk ranges the damage reaches. */
  readonly affected: readonly AffectedDisk[];
}

/**
 * Re-reads every blob of the selected points (every blob of the repository when none is
 * selected): each frame's checksum, its decoded length and the SHA-256 of the whole blob. Never
 * writes anything.
 */
export async function runVerify(ctx: RepoContext, options: VerifyOptions): Promise<VerifyReport> {
  const damagedObjects: DamagedObject[] = [];
  const all = await ctx.points();
  const byId = new Map(all.map((p) => [p.id, p]));
  const selected = all.filter(
    (p) =>
      (options.vm === undefined || p.vm === options.vm) &&
      (options.point === undefined || p.id === options.point),
  );
  const filtered = options.vm !== undefined || options.point !== undefined;

  const flats: { vm: string; point: string; disk: string; flat: FlatBlockMap }[] = [];
  for (const p of selected) {
    for (const d of p.disks) {
      try {
        flats.push({
          vm: p.vm,
          point: p.id,
          disk: d.name,
          flat: await ctx.resolve(p, d.name, byId),
        });
      } catch (err) {
        if (!isIvmrError(err)) throw err;
        damagedObjects.push({ kind: 'point', name: p.id, code: err.code, message: err.message });
      }
    }
  }

  // After resolving: loading the points' maps records the damaged ones.
  damagedObjects.push(...ctx.damaged);

  // Slots to check, grouped by pack.
  const byPack = new Map<string, number[]>();
  const wanted = filtered ? new Set<number>() : null;
  if (wanted) for (const f of flats) for (const e of f.flat.slots) if (e > 0) wanted.add(e - 1);
  ctx.index.forEachSlot((slot, pack) => {
    if (wanted && !wanted.has(slot)) return;
    const list = byPack.get(pack);
    if (list) list.push(slot);
    else byPack.set(pack, [slot]);
  });

  let totalBytes = 0;
  for (const slots of byPack.values()) {
    for (const s of slots) totalBytes += sumLengths(ctx.index.location(s).frameLengths);
  }

  const damaged = new Map<number, DamagedBlob>();
  let bytesChecked = 0;
  let blobsChecked = 0;
  for (const [pack, slots] of byPack) {
    let bytes: Uint8Array;
    try {
      bytes = await ctx.store.get('pack', pack);
    } catch (err) {
      if (!isIvmrError(err)) throw err;
      for (const s of slots) {
        damaged.set(s, {
          id: ctx.index.idOf(s),
          pack,
          code: ErrorCode.NOT_FOUND,
          message: `pack ${pack}: ${err.message}`,
        });
      }
      continue;
    }
    try {
      const trailer = decodePackTrailer(bytes, bytes.length, `pack ${pack}`);
      if ('needed' in trailer) throw new Error('unreachable: whole pack was read');
    } catch (err) {
      if (!isIvmrError(err)) throw err;
      damagedObjects.push({ kind: 'pack', name: pack, code: err.code, message: err.message });
    }
    for (const slot of slots) {
      blobsChecked++;
      const problem = checkBlob(ctx, slot, pack, bytes);
      if (problem) damaged.set(slot, problem);
    }
    bytesChecked += slots.reduce((a, s) => a + sumLengths(ctx.index.location(s).frameLengths), 0);
    options.onProgress?.(bytesChecked, totalBytes);
  }

  const missing = new Set<string>();
  const affected: AffectedDisk[] = [];
  for (const f of flats) {
    const ranges: ByteRange[] = [];
    const blobs = new Set<string>();
    const { slots, blockSize, size } = f.flat;
    for (let b = 0; b < slots.length; b++) {
      const e = slots[b]!;
      let bad: string | undefined;
      if (e < 0) {
        bad = f.flat.missing[-e - 1]!;
        missing.add(bad);
      } else if (e > 0 && damaged.has(e - 1)) {
        bad = damaged.get(e - 1)!.id;
      }
      if (bad === undefined) continue;
      blobs.add(bad);
      const offset = b * blockSize;
      const length = Math.min(blockSize, size - offset);
      const last = ranges.at(-1);
      if (last && last.offset + last.length === offset)
        ranges[ranges.length - 1] = { offset: last.offset, length: last.length + length };
      else ranges.push({ offset, length });
    }
    if (ranges.length > 0)
      affected.push({ vm: f.vm, point: f.point, disk: f.disk, ranges, blobs: [...blobs] });
  }

  const damagedBlobs = [...damaged.values()];
  return {
    ok: damagedBlobs.length === 0 && missing.size === 0 && damagedObjects.length === 0,
    pointsChecked: selected.length,
    packsChecked: byPack.size,
    blobsChecked,
    bytesChecked,
    damagedBlobs,
    missingBlobs: [...missing],
    damagedObjects,
    affected,
  };
}

function checkBlob(
  ctx: RepoContext,
  slot: number,
  pack: string,
  packBytes: Uint8Array,
): DamagedBlob | null {
  const loc = ctx.index.location(slot);
  const id = ctx.index.idOf(slot);
  const frameSize = 2 ** loc.frameShift;
  const hash = createHash('sha256');
  let pos = loc.offset;
  try {
    for (let f = 0; f < loc.frameLengths.length; f++) {
      const stored = loc.frameLengths[f]!;
      if (pos + stored > packBytes.length) {
        return {
          id,
          pack,
          code: ErrorCode.CHUNK_CORRUPT,
          message: `blob ${id}: pack ends early at frame ${f}`,
        };
      }
      const raw = Math.min(frameSize, loc.rawLength - f * frameSize);
      hash.update(decodeStoredFrame(packBytes.subarray(pos, pos + stored), raw, id, pack, f));
      pos += stored;
    }
  } catch (err) {
    if (!isIvmrError(err)) throw err;
    return { id, pack, code: err.code, message: err.message };
  }
  if (hash.digest('hex') !== id) {
    return {
      id,
      pack,
      code: ErrorCode.CHUNK_CORRUPT,
      message: `blob ${id}: content hash mismatch`,
    };
  }
  return null;
}

function sumLengths(lengths: ArrayLike<number>): number {
  let n = 0;
  for (let i = 0; i < lengths.length; i++) n += lengths[i]!;
  return n;
}
