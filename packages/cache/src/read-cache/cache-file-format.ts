import { checksum, getU64, hasMagic, magicBytes, roundUp, setU64, viewOf } from '../util/binary.js';

/** Bytes of the read cache file's header. */
export const HEADER_BYTES = 4096;
/** Bytes of one slot entry in the slot table. */
export const ENTRY_BYTES = 32;
/** Longest source id, in UTF-8 bytes. */
export const MAX_SOURCE_ID = 1024;

const MAGIC = magicBytes('IVMRRC01');
/** 2: a slot's block checksum is xxHash64's low 32 bits (1: CRC-32). */
const VERSION = 2;

/** What a read cache file caches: the header (FORMAT.md, "Read cache file"). */
export interface CacheHeader {
  blockSize: number;
  /** Slots the slot table has room for (the most the cache can ever hold). */
  slotCount: number;
  /** Size of the source the blocks come from. */
  sourceSize: number;
  /** The caller's name for the source; a cache of another source is discarded. */
  sourceId: string;
}

/** One filled slot: which block it holds. */
export interface SlotEntry {
  block: number;
  /** Bytes of the block (short only for the source's last block). */
  length: number;
  /** Checksum of the block's bytes (low 32 bits of xxHash64, see FORMAT.md). */
  crc: number;
  /** Insertion counter: the newest entry marks where the ring continues after a restart. */
  seq: number;
}

/** Where slot 0's data starts for a slot table of `slotCount` entries. */
export function dataStart(slotCount: number): number {
  return roundUp(HEADER_BYTES + slotCount * ENTRY_BYTES, 4096);
}

/** Encodes the header into its 4096 bytes. */
export function encodeHeader(h: CacheHeader): Uint8Array {
  const out = new Uint8Array(HEADER_BYTES);
  const v = viewOf(out);
  const id = new TextEncoder().encode(h.sourceId);
  out.set(MAGIC, 0);
  v.setUint32(8, VERSION);
  v.setUint32(12, h.blockSize);
  v.setUint32(16, h.slotCount);
  setU64(v, 20, h.sourceSize);
  v.setUint32(28, id.length);
  out.set(id, 32);
  v.setUint32(32 + id.length, checksum(out.subarray(0, 32 + id.length)));
  return out;
}

/** Decodes a header; `undefined` when it is missing, damaged or of another version. */
export function decodeHeader(bytes: Uint8Array): CacheHeader | undefined {
  if (bytes.length < HEADER_BYTES || !hasMagic(bytes, MAGIC)) return undefined;
  const v = viewOf(bytes);
  const idLen = v.getUint32(28);
  if (idLen > MAX_SOURCE_ID) return undefined;
  if (v.getUint32(32 + idLen) !== checksum(bytes.subarray(0, 32 + idLen))) return undefined;
  if (v.getUint32(8) !== VERSION) return undefined;
  const sourceSize = getU64(v, 20);
  if (!Number.isSafeInteger(sourceSize)) return undefined;
  return {
    blockSize: v.getUint32(12),
    slotCount: v.getUint32(16),
    sourceSize,
    sourceId: new TextDecoder().decode(bytes.subarray(32, 32 + idLen)),
  };
}

/** Encodes a slot entry; `undefined` encodes an empty slot (all zeros). */
export function encodeEntry(e: SlotEntry | undefined): Uint8Array {
  const out = new Uint8Array(ENTRY_BYTES);
  if (e === undefined) return out;
  const v = viewOf(out);
  setU64(v, 0, e.block + 1);
  v.setUint32(8, e.length);
  v.setUint32(12, e.crc);
  setU64(v, 16, e.seq);
  v.setUint32(28, checksum(out.subarray(0, 28)));
  return out;
}

/** Decodes a slot entry; `undefined` for an empty or damaged one. */
export function decodeEntry(bytes: Uint8Array): SlotEntry | undefined {
  const v = viewOf(bytes);
  const blockPlus1 = getU64(v, 0);
  if (blockPlus1 === 0 || !Number.isSafeInteger(blockPlus1)) return undefined;
  if (v.getUint32(28) !== checksum(bytes.subarray(0, 28))) return undefined;
  const seq = getU64(v, 16);
  if (!Number.isSafeInteger(seq)) return undefined;
  return { block: blockPlus1 - 1, length: v.getUint32(8), crc: v.getUint32(12), seq };
}
