import { type BlockSource, ErrorCode, IvmrError } from '@ivmr/core';
import { formatError } from '../errors.js';

// The hosted sparse extent header (VMware's "Virtual Disk Format 5.0", SparseExtentHeader; qemu
// block/vmdk.c VMDK4Header). 512 bytes, little-endian, sizes and offsets in 512-byte sectors:
//
//   0  u32 magicNumber 'KDMV'       44 u32 numGTEsPerGT (512)
//   4  u32 version (1..3)           48 u64 rgdOffset (redundant grain directory)
//   8  u32 flags                    56 u64 gdOffset (0xffffffffffffffff: GD_AT_END, see footer)
//  12  u64 capacity                 64 u64 overHead (sectors before the first grain)
//  20  u64 grainSize                72 u8  uncleanShutdown
//  28  u64 descriptorOffset         73 u8[4] '\n' ' ' '\r' '\n' (newline detection)
//  36  u64 descriptorSize           77 u16 compressAlgorithm (0 none, 1 deflate)
//
// A streamOptimized file written front to back does not know where its grain directory will be
// when it writes the header, so it writes GD_AT_END and ends with three 512-byte sectors: a
// footer marker {u64 0, u32 0, u32 3}, a copy of the header with the real gdOffset, and an
// end-of-stream marker {u64 0, u32 0, u32 0}. The footer then takes precedence (qemu does so).

/** "KDMV" as the little-endian u32 at offset 0. */
export const SPARSE_MAGIC = 0x564d444b;
/** "COWD": the ESX 2 / vmfsSparse extent format. */
const COWD_MAGIC = 0x44574f43;
/** seSparse extents start with u64 0xcafebabe. */
const SESPARSE_MAGIC = 0xcafebabe;

export const FLAG_NEWLINE_DETECT = 1 << 0;
export const FLAG_REDUNDANT_GD = 1 << 1;
export const FLAG_ZERO_GRAIN = 1 << 2;
export const FLAG_COMPRESSED = 1 << 16;
export const FLAG_MARKERS = 1 << 17;
export const COMPRESSION_DEFLATE = 1;

/** Marker types of a streamOptimized file (a marker with size 0; else it is a grain). */
export const MARKER_END_OF_STREAM = 0;
export const MARKER_FOOTER = 3;

/** Bytes of a sector. */
export const SECTOR = 512;
/** qemu rejects grain tables of more entries; VMware always writes 512. */
export const MAX_GTES_PER_GT = 512;
/** Largest grain accepted: 16 MiB (VMware writes 64 KiB; qemu's limit is 1 GiB). */
export const MAX_GRAIN_SECTORS = 32768;
/** Most grain directory entries accepted, as qemu (128 MiB of directory). */
export const MAX_GD_ENTRIES = 32 * 1024 * 1024;
/** Largest embedded descriptor read: 1 MiB. */
export const MAX_DESCRIPTOR_SECTORS = 2048;

/** A validated sparse extent header (the footer's, when the file has one). */
export interface SparseHeader {
  /** 1, 2 or 3 (3: streamOptimized as VMware writes it). */
  readonly version: number;
  /** FLAG_* bits: newline detection, redundant directory, zero grains, compressed, markers. */
  readonly flags: number;
  /** Disk size in sectors. */
  readonly capacity: number;
  /** Grain size in sectors. */
  readonly grainSize: number;
  /** Sector of the embedded descriptor (0: none). */
  readonly descriptorOffset: number;
  /** Sectors reserved for the embedded descriptor. */
  readonly descriptorSize: number;
  /** Entries per grain table (512). */
  readonly numGTEsPerGT: number;
  /** Redundant grain directory, in sectors; 0 when the file has none. */
  readonly rgdOffset: number;
  /** Sector of the grain directory in use. */
  readonly gdOffset: number;
  /** Sectors before the first grain (header, descriptor, metadata). */
  readonly overHead: number;
  /** Set by a writer that did not close the file cleanly. */
  readonly uncleanShutdown: boolean;
  /** 0: grains stored as they are; 1: deflate (streamOptimized). */
  readonly compressAlgorithm: number;
  /** Entries of the grain directory: ceil(capacity / (grainSize * numGTEsPerGT)). */
  readonly gdEntries: number;
  /** True when the header said GD_AT_END and these fields come from the footer. */
  readonly fromFooter: boolean;
}

interface RawHeader extends Omit<SparseHeader, 'gdEntries' | 'fromFooter'> {
  readonly gdAtEnd: boolean;
  readonly newlineBytes: string;
}

/** A u64 as a number; values past 2^53 come out inexact, and validation rejects them. */
function u64(view: DataView, at: number): number {
  return view.getUint32(at, true) + view.getUint32(at + 4, true) * 2 ** 32;
}

function decodeHeader(bytes: Uint8Array): RawHeader {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return {
    version: v.getUint32(4, true),
    flags: v.getUint32(8, true),
    capacity: u64(v, 12),
    grainSize: u64(v, 20),
    descriptorOffset: u64(v, 28),
    descriptorSize: u64(v, 36),
    numGTEsPerGT: v.getUint32(44, true),
    rgdOffset: u64(v, 48),
    gdOffset: u64(v, 56),
    gdAtEnd: v.getUint32(56, true) === 0xffffffff && v.getUint32(60, true) === 0xffffffff,
    overHead: u64(v, 64),
    uncleanShutdown: bytes[72] !== 0,
    newlineBytes: String.fromCharCode(bytes[73]!, bytes[74]!, bytes[75]!, bytes[76]!),
    compressAlgorithm: v.getUint16(77, true),
  };
}

/**
 * Reads and validates the header of a hosted sparse extent (monolithicSparse, streamOptimized,
 * or one extent of twoGbMaxExtentSparse), following it to the footer when it says GD_AT_END.
 * Every size and offset is checked against the file's size before anything is allocated.
 *
 * @throws IvmrError `IVMR_FORMAT` (with `details.field`) for a file that is not a sparse extent,
 *   is truncated, or has a field out of range; `IVMR_UNSUPPORTED` for a version above 3, an
 *   unknown compression, or a COWD (vmfsSparse) or seSparse extent.
 */
export async function readSparseHeader(file: BlockSource, what: string): Promise<SparseHeader> {
  const first = await file.read(0, Math.min(file.size, SECTOR));
  if (first.length >= 4) {
    const magic = new DataView(first.buffer, first.byteOffset, 4).getUint32(0, true);
    if (magic !== SPARSE_MAGIC) throw notSparse(first, what);
  }
  if (first.length < SECTOR) {
    throw formatError(what, `${file.size} bytes is too small for a sparse extent header (512)`, {
      field: 'header',
    });
  }
  const header = decodeHeader(first);
  if (!header.gdAtEnd) return validate(header, file.size, what, false);

  // The footer: three sectors at the end of the file.
  if (file.size < 4 * SECTOR) {
    throw formatError(
      what,
      'the header puts the grain directory at the end, but the file has no room for a footer',
      {
        field: 'footer',
      },
    );
  }
  const tail = await file.read(file.size - 3 * SECTOR, 3 * SECTOR);
  const t = new DataView(tail.buffer, tail.byteOffset, tail.byteLength);
  const footerOk =
    t.getUint32(8, true) === 0 &&
    t.getUint32(12, true) === MARKER_FOOTER &&
    t.getUint32(SECTOR, true) === SPARSE_MAGIC &&
    u64(t, 2 * SECTOR) === 0 &&
    t.getUint32(2 * SECTOR + 8, true) === 0 &&
    t.getUint32(2 * SECTOR + 12, true) === MARKER_END_OF_STREAM;
  if (!footerOk) {
    throw formatError(
      what,
      'the header puts the grain directory at the end, but the file does not end with a footer and an end-of-stream marker (truncated or incomplete stream)',
      { field: 'footer', offset: file.size - 3 * SECTOR },
    );
  }
  const footer = decodeHeader(tail.subarray(SECTOR, 2 * SECTOR));
  if (footer.gdAtEnd) {
    throw formatError(what, 'the footer does not give the grain directory offset either', {
      field: 'gdOffset',
      offset: file.size - 2 * SECTOR,
    });
  }
  return validate(footer, file.size, what, true);
}

function notSparse(first: Uint8Array, what: string): IvmrError {
  const view = new DataView(first.buffer, first.byteOffset, first.byteLength);
  if (view.getUint32(0, true) === COWD_MAGIC) {
    return new IvmrError(
      ErrorCode.UNSUPPORTED,
      `${what}: a COWD (ESX 2 / vmfsSparse) extent is not supported`,
    );
  }
  if (
    first.length >= 8 &&
    view.getUint32(0, true) === SESPARSE_MAGIC &&
    view.getUint32(4, true) === 0
  ) {
    return new IvmrError(ErrorCode.UNSUPPORTED, `${what}: a seSparse extent is not supported`);
  }
  const text = Buffer.from(first.subarray(0, 64)).toString('latin1');
  const hint = /^(#|version=)/.test(text)
    ? ': it is a text descriptor, open it with openVmdk or parseDescriptor'
    : '';
  return formatError(what, `not a VMDK sparse extent (no KDMV magic)${hint}`, { field: 'magic' });
}

function validate(h: RawHeader, fileSize: number, what: string, fromFooter: boolean): SparseHeader {
  const bad = (field: string, message: string) =>
    formatError(what, `${fromFooter ? 'footer' : 'header'} ${field}: ${message}`, { field });
  if (h.version < 1 || h.version > 3) {
    throw new IvmrError(
      ErrorCode.UNSUPPORTED,
      `${what}: sparse extent version ${h.version} is not supported (1..3)`,
      {
        details: { field: 'version' },
      },
    );
  }
  if (h.flags & FLAG_NEWLINE_DETECT && h.newlineBytes !== '\n \r\n') {
    throw bad(
      'newline detection',
      'the bytes "\\n \\r\\n" were altered: the file went through a text-mode transfer and is corrupt',
    );
  }
  if (h.compressAlgorithm !== 0 && h.compressAlgorithm !== COMPRESSION_DEFLATE) {
    throw new IvmrError(
      ErrorCode.UNSUPPORTED,
      `${what}: compression algorithm ${h.compressAlgorithm} is not supported`,
      {
        details: { field: 'compressAlgorithm' },
      },
    );
  }
  if (h.compressAlgorithm === COMPRESSION_DEFLATE && !(h.flags & FLAG_MARKERS)) {
    throw new IvmrError(
      ErrorCode.UNSUPPORTED,
      `${what}: compressed grains without markers are not supported`,
      {
        details: { field: 'flags' },
      },
    );
  }
  if (!Number.isSafeInteger(h.capacity * SECTOR)) {
    throw bad('capacity', `${h.capacity} sectors is beyond 2^53 bytes`);
  }
  if (!Number.isSafeInteger(h.grainSize) || h.grainSize < 1 || h.grainSize > MAX_GRAIN_SECTORS) {
    throw bad('grainSize', `${h.grainSize} sectors is outside 1..${MAX_GRAIN_SECTORS}`);
  }
  if (h.numGTEsPerGT < 1 || h.numGTEsPerGT > MAX_GTES_PER_GT) {
    throw bad('numGTEsPerGT', `${h.numGTEsPerGT} is outside 1..${MAX_GTES_PER_GT}`);
  }
  const gdEntries = Math.ceil(h.capacity / (h.grainSize * h.numGTEsPerGT));
  if (gdEntries > MAX_GD_ENTRIES) {
    throw bad('capacity', `${gdEntries} grain directory entries is more than ${MAX_GD_ENTRIES}`);
  }
  const fits = (offset: number, bytes: number) =>
    Number.isSafeInteger(offset) && offset >= 1 && offset * SECTOR + bytes <= fileSize;
  if (gdEntries > 0 && !fits(h.gdOffset, gdEntries * 4)) {
    throw bad(
      'gdOffset',
      `a ${gdEntries * 4}-byte grain directory at sector ${h.gdOffset} does not fit in the ${fileSize}-byte file`,
    );
  }
  const hasRgd = (h.flags & FLAG_REDUNDANT_GD) !== 0 && h.rgdOffset !== 0;
  if (h.descriptorSize !== 0) {
    if (h.descriptorSize > MAX_DESCRIPTOR_SECTORS) {
      throw bad(
        'descriptorSize',
        `${h.descriptorSize} sectors is more than ${MAX_DESCRIPTOR_SECTORS}`,
      );
    }
    if (!fits(h.descriptorOffset, h.descriptorSize * SECTOR)) {
      throw bad(
        'descriptorOffset',
        `the embedded descriptor at sector ${h.descriptorOffset} does not fit in the file`,
      );
    }
  }
  if (!Number.isSafeInteger(h.overHead) || h.overHead * SECTOR > fileSize) {
    throw bad(
      'overHead',
      `${h.overHead} sectors of metadata do not fit in the ${fileSize}-byte file: truncated`,
    );
  }
  return {
    version: h.version,
    flags: h.flags,
    capacity: h.capacity,
    grainSize: h.grainSize,
    descriptorOffset: h.descriptorOffset,
    descriptorSize: h.descriptorSize,
    numGTEsPerGT: h.numGTEsPerGT,
    rgdOffset: hasRgd ? h.rgdOffset : 0,
    gdOffset: h.gdOffset,
    overHead: h.overHead,
    uncleanShutdown: h.uncleanShutdown,
    compressAlgorithm: h.compressAlgorithm,
    gdEntries,
    fromFooter,
  };
}
