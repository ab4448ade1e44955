import { BinaryReader, BinaryWriter, formatError } from './binary.js';
import { metaChecksum } from './codec.js';
import { BLOB_ID_SIZE, MAX_BLOCK_SIZE, MIN_BLOCK_SIZE } from './pack.js';

const MAP_MAGIC = Buffer.from('IVMRMAP1', 'latin1');
/** The blob id that marks a block as all zeros (in delta maps: "became zero"). */
export const ZERO_ID: Uint8Array = new Uint8Array(BLOB_ID_SIZE);

/**
 * A block map of one disk at one restore point (FORMAT.md, "Block maps"). A `full` map lists
 * every non-zero block; a `delta` map lists the blocks that differ from the base point's map,
 * with {@link ZERO_ID} for blocks that are zero here but not there.
 */
export interface BlockMap {
  readonly kind: 'full' | 'delta';
  readonly diskSize: number;
  readonly blockSize: number;
  /** Block numbers, strictly ascending. */
  readonly blocks: Float64Array;
  /** Blob ids of the listed blocks, 32 bytes each, in the same order (see {@link mapId}). */
  readonly ids: Uint8Array;
}

/** The blob id of entry `i` of a map (a view, not a copy). */
export function mapId(map: BlockMap, i: number): Uint8Array {
  return map.ids.subarray(i * BLOB_ID_SIZE, (i + 1) * BLOB_ID_SIZE);
}

/** Encodes a block map object. */
export function encodeBlockMap(map: BlockMap): Buffer {
  const w = new BinaryWriter(32 + map.blocks.length * 40);
  w.bytes(MAP_MAGIC)
    .u8(map.kind === 'full' ? 0 : 1)
    .u64(map.diskSize)
    .u32(map.blockSize);
  w.u32(map.blocks.length);
  for (let i = 0; i < map.blocks.length; i++) w.u64(map.blocks[i]!).bytes(mapId(map, i));
  const body = Buffer.from(w.view());
  return Buffer.concat([body, new BinaryWriter(8).big64(metaChecksum(body)).view()]);
}

/** Decodes and validates a block map object. */
export function decodeBlockMap(bytes: Uint8Array, what: string): BlockMap {
  if (bytes.length < 33) throw formatError(what, 'block map too short');
  const body = bytes.subarray(0, bytes.length - 8);
  const sum = new BinaryReader(bytes.subarray(bytes.length - 8), what).big64('checksum');
  if (metaChecksum(body) !== sum) throw formatError(what, 'block map checksum mismatch');
  const r = new BinaryReader(body, what);
  if (!r.bytes(8, 'magic').equals(MAP_MAGIC))
    throw formatError(what, 'not an ivmr block map (bad magic)');
  const kindByte = r.u8('kind');
  if (kindByte > 1) throw formatError(what, `unknown block map kind ${kindByte}`);
  const diskSize = r.u64('disk size');
  const blockSize = r.u32('block size');
  if (
    blockSize < MIN_BLOCK_SIZE ||
    blockSize > MAX_BLOCK_SIZE ||
    !Number.isInteger(Math.log2(blockSize))
  ) {
    throw formatError(what, `block size ${blockSize} is not a power of two in 64 KiB..4 MiB`);
  }
  const blockCount = Math.ceil(diskSize / blockSize);
  const n = r.u32('entry count');
  r.need(n * (8 + BLOB_ID_SIZE), 'entries');
  const blocks = new Float64Array(n);
  const ids = new Uint8Array(n * BLOB_ID_SIZE);
  let prev = -1;
  for (let i = 0; i < n; i++) {
    const b = r.u64('block number');
    if (b <= prev || b >= blockCount) {
      throw formatError(
        what,
        `block number ${b} out of order or past the disk's ${blockCount} blocks`,
      );
    }
    prev = b;
    blocks[i] = b;
    ids.set(r.bytes(BLOB_ID_SIZE, 'blob id'), i * BLOB_ID_SIZE);
  }
  r.end();
  return { kind: kindByte === 0 ? 'full' : 'delta', diskSize, blockSize, blocks, ids };
}
