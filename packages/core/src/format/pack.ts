import { BinaryReader, BinaryWriter, formatError } from './binary.js';
import { metaChecksum } from './codec.js';

/** Bytes before each frame's payload: u8 codec id + u64 checksum. */
export const FRAME_HEADER_SIZE = 9;
/** Length of a blob id (SHA-256). */
export const BLOB_ID_SIZE = 32;
/** Smallest and largest block (blob raw) size. */
export const MIN_BLOCK_SIZE = 64 * 1024;
export const MAX_BLOCK_SIZE = 4 * 1024 * 1024;
/** Frame raw size limits as powers of two (4 KiB .. 4 MiB). */
export const MIN_FRAME_SHIFT = 12;
export const MAX_FRAME_SHIFT = 22;

const PACK_MAGIC = Buffer.from('IVMRPAK1', 'latin1');
/** Fixed tail of a pack: u64 header checksum, u32 header length, 8-byte magic. */
export const PACK_TAIL_SIZE = 20;

/** Where one blob lies in its pack and how it is framed (FORMAT.md, "Blob entries"). */
export interface BlobEntry {
  /** SHA-256 of the raw block bytes. */
  readonly id: Uint8Array;
  /** Offset of the blob's first frame within the pack. */
  readonly offset: number;
  /** Raw (decoded) length of the blob. */
  readonly rawLength: number;
  /** Each frame covers 2^frameShift raw bytes (the last one less). */
  readonly frameShift: number;
  /** Stored length of each frame, header included. */
  readonly frameLengths: readonly number[];
}

/** Total stored length of a blob. */
export function storedLength(entry: Pick<BlobEntry, 'frameLengths'>): number {
  let n = 0;
  for (const l of entry.frameLengths) n += l;
  return n;
}

/** Number of frames a blob of `rawLength` bytes has with frames of 2^frameShift bytes. */
export function frameCount(rawLength: number, frameShift: number): number {
  return Math.ceil(rawLength / 2 ** frameShift);
}

/** Appends blob entries (u32 count, then each entry) to `w`. */
export function writeBlobEntries(w: BinaryWriter, entries: readonly BlobEntry[]): void {
  w.u32(entries.length);
  for (const e of entries) {
    w.bytes(e.id).u64(e.offset).u32(e.rawLength).u8(e.frameShift).u32(e.frameLengths.length);
    for (const l of e.frameLengths) w.u32(l);
  }
}

/** Reads what {@link writeBlobEntries} wrote, validating every count and length first. */
export function readBlobEntries(r: BinaryReader, limit: number): BlobEntry[] {
  const count = r.u32('blob count');
  // Each entry takes at least 53 bytes: refuse counts the remaining bytes cannot hold.
  r.need(count * 53, 'blob entries');
  const entries: BlobEntry[] = [];
  for (let i = 0; i < count; i++) {
    const id = Buffer.from(r.bytes(BLOB_ID_SIZE, 'blob id'));
    const offset = r.u64('blob offset');
    const rawLength = r.u32('blob raw length');
    const frameShift = r.u8('frame shift');
    const n = r.u32('frame count');
    if (rawLength < 1 || rawLength > MAX_BLOCK_SIZE) {
      throw formatError(r.what, `blob raw length ${rawLength} outside 1..${MAX_BLOCK_SIZE}`);
    }
    if (frameShift < MIN_FRAME_SHIFT || frameShift > MAX_FRAME_SHIFT) {
      throw formatError(
        r.what,
        `frame shift ${frameShift} outside ${MIN_FRAME_SHIFT}..${MAX_FRAME_SHIFT}`,
      );
    }
    if (n !== frameCount(rawLength, frameShift)) {
      throw formatError(
        r.what,
        `blob has ${n} frames, its length needs ${frameCount(rawLength, frameShift)}`,
      );
    }
    r.need(n * 4, 'frame lengths');
    const frameLengths: number[] = new Array(n);
    let total = 0;
    for (let f = 0; f < n; f++) {
      const l = r.u32('frame length');
      if (l <= FRAME_HEADER_SIZE) throw formatError(r.what, `frame length ${l} is too small`);
      frameLengths[f] = l;
      total += l;
    }
    if (offset + total > limit) {
      throw formatError(r.what, `blob at ${offset}+${total} ends past ${limit}`);
    }
    entries.push({ id, offset, rawLength, frameShift, frameLengths });
  }
  return entries;
}

/** Encodes a pack's trailer: the header of its blob entries, checksum, length and magic. */
export function encodePackTrailer(entries: readonly BlobEntry[]): Buffer {
  const w = new BinaryWriter();
  writeBlobEntries(w, entries);
  const header = Buffer.from(w.view());
  const tail = new BinaryWriter(PACK_TAIL_SIZE);
  tail.big64(metaChecksum(header)).u32(header.length).bytes(PACK_MAGIC);
  return Buffer.concat([header, tail.view()]);
}

/**
 * Decodes a pack's header from its last bytes. `tailBytes` must be the final
 * `PACK_TAIL_SIZE + headerLength` bytes of a pack of `packSize` bytes, or (first call) at least
 * the final `PACK_TAIL_SIZE`; returns `needed` when more bytes are required.
 */
export function decodePackTrailer(
  tailBytes: Uint8Array,
  packSize: number,
  what: string,
): { entries: BlobEntry[] } | { needed: number } {
  if (tailBytes.length < PACK_TAIL_SIZE || packSize < PACK_TAIL_SIZE) {
    throw formatError(what, `pack of ${packSize} bytes is too short for a trailer`);
  }
  const tail = new BinaryReader(tailBytes.subarray(tailBytes.length - PACK_TAIL_SIZE), what);
  const checksum = tail.big64('header checksum');
  const headerLength = tail.u32('header length');
  const magic = tail.bytes(8, 'magic');
  if (!magic.equals(PACK_MAGIC))
    throw formatError(what, 'pack magic missing (truncated or not a pack)');
  if (headerLength + PACK_TAIL_SIZE > packSize) {
    throw formatError(what, `pack header length ${headerLength} exceeds pack size ${packSize}`);
  }
  if (tailBytes.length < headerLength + PACK_TAIL_SIZE)
    return { needed: headerLength + PACK_TAIL_SIZE };
  const header = tailBytes.subarray(
    tailBytes.length - PACK_TAIL_SIZE - headerLength,
    tailBytes.length - PACK_TAIL_SIZE,
  );
  if (metaChecksum(header) !== checksum) throw formatError(what, 'pack header checksum mismatch');
  const r = new BinaryReader(header, what);
  const entries = readBlobEntries(r, packSize - PACK_TAIL_SIZE - headerLength);
  r.end();
  return { entries };
}
