import { ErrorCode, IvmrError } from '@ivmr/core';
import { checksum, getU64, hasMagic, magicBytes, setU64, viewOf } from '../util/binary.js';

/** Bytes reserved for each of the two superblock copies at the start of the metadata file. */
export const SUPERBLOCK_SLOT = 4096;
/** Where the journal of commit records starts in the metadata file. */
export const JOURNAL_START = 2 * SUPERBLOCK_SLOT;
/** Bytes of an encoded superblock (the rest of its slot is zero). */
export const SUPERBLOCK_BYTES = 76;

const MAGIC = magicBytes('IVMROVL1');
const VERSION = 1;
const FLAG_DIRTY = 1;

/** The durable header of an overlay (FORMAT.md, "Superblock"). */
export interface Superblock {
  /** +1 at every write of the superblock; the copy `generation % 2` holds it. */
  generation: number;
  /** A run changed the overlay since it was opened and has not closed cleanly. */
  dirty: boolean;
  grainSize: number;
  /** Size of the base source when the overlay was made. */
  baseSize: number;
  /** +1 every time the verifier changes. */
  epoch: number;
  /** 8 random bytes: the write verifier. */
  verifier: Uint8Array;
  /** 16 random bytes naming this overlay; its map snapshot carries the same. */
  id: Uint8Array;
}

/** Encodes `sb` into one superblock slot. */
export function encodeSuperblock(sb: Superblock): Uint8Array {
  const out = new Uint8Array(SUPERBLOCK_SLOT);
  const v = viewOf(out);
  out.set(MAGIC, 0);
  v.setUint32(8, VERSION);
  v.setUint32(12, sb.dirty ? FLAG_DIRTY : 0);
  setU64(v, 16, sb.generation);
  v.setUint32(24, sb.grainSize);
  setU64(v, 32, sb.baseSize);
  setU64(v, 40, sb.epoch);
  out.set(sb.verifier.subarray(0, 8), 48);
  out.set(sb.id.subarray(0, 16), 56);
  v.setUint32(72, checksum(out.subarray(0, 72)));
  return out;
}

/**
 * Decodes one superblock slot; `undefined` when it is not a valid superblock (torn, empty). A
 * valid one of another version is `IVMR_UNSUPPORTED`.
 */
export function decodeSuperblock(slot: Uint8Array): Superblock | undefined {
  if (slot.length < SUPERBLOCK_BYTES || !hasMagic(slot, MAGIC)) return undefined;
  const v = viewOf(slot);
  if (v.getUint32(72) !== checksum(slot.subarray(0, 72))) return undefined;
  if (v.getUint32(8) !== VERSION) {
    throw new IvmrError(
      ErrorCode.UNSUPPORTED,
      `overlay superblock version ${v.getUint32(8)} is not supported (this reader knows ${VERSION})`,
    );
  }
  const generation = getU64(v, 16);
  const baseSize = getU64(v, 32);
  const epoch = getU64(v, 40);
  const grainSize = v.getUint32(24);
  if (![generation, baseSize, epoch].every(Number.isSafeInteger)) return undefined;
  return {
    generation,
    dirty: (v.getUint32(12) & FLAG_DIRTY) !== 0,
    grainSize,
    baseSize,
    epoch,
    verifier: slot.slice(48, 56),
    id: slot.slice(56, 72),
  };
}
