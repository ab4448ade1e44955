import { createHash } from 'node:crypto';
import { xxh64 } from '@node-rs/xxhash';
import { compressSync as lz4Compress, uncompressSync as lz4Uncompress } from 'lz4-napi';
import { compress as zstdCompress, decompress as zstdDecompress } from 'zstd-napi';

/** Compression of stored blob frames. `none` stores bytes as they are. */
export type CodecName = 'lz4' | 'zstd' | 'none';

/** On-disk codec ids (FORMAT.md, "Frames"). */
export const CODEC_ID: Readonly<Record<CodecName, number>> = { none: 0, lz4: 1, zstd: 2 };
const CODEC_BY_ID: readonly CodecName[] = ['none', 'lz4', 'zstd'];

/** The codec name for an on-disk id, or undefined for an unknown id. */
export function codecById(id: number): CodecName | undefined {
  return CODEC_BY_ID[id];
}

/** True when `name` is a codec ivmr knows. */
export function isCodecName(name: string): name is CodecName {
  return name === 'lz4' || name === 'zstd' || name === 'none';
}

const ZSTD_LEVEL = 3;

/** Compresses one frame. Returns a view that is valid until the next call only when codec is none. */
export function compressFrame(codec: CodecName, raw: Uint8Array): Uint8Array {
  switch (codec) {
    case 'none':
      return raw;
    case 'lz4':
      return lz4Compress(asBuffer(raw));
    case 'zstd':
      return zstdCompress(asBuffer(raw), { compressionLevel: ZSTD_LEVEL });
  }
}

/**
 * Decompresses one frame whose raw length is known. Throws a plain Error when the payload does not
 * decode to exactly `rawLength` bytes; callers turn it into `IVMR_CHUNK_CORRUPT` with context.
 */
export function decompressFrame(
  codec: CodecName,
  payload: Uint8Array,
  rawLength: number,
): Uint8Array {
  let out: Uint8Array;
  switch (codec) {
    case 'none':
      out = payload;
      break;
    case 'lz4':
      out = lz4Uncompress(asBuffer(payload));
      break;
    case 'zstd':
      out = zstdDecompress(asBuffer(payload));
      break;
  }
  if (out.length !== rawLength) {
    throw new Error(`frame decoded to ${out.length} bytes, expected ${rawLength}`);
  }
  return out;
}

/** xxHash64 of a frame payload, seeded with the codec id so a flipped codec byte is detected. */
export function frameChecksum(codecId: number, payload: Uint8Array): bigint {
  return xxh64(asBuffer(payload), BigInt(codecId));
}

/** xxHash64 used as the trailing checksum of metadata objects (index, map, pack header). */
export function metaChecksum(bytes: Uint8Array): bigint {
  return xxh64(asBuffer(bytes), 0n);
}

/** SHA-256 of raw block bytes: the blob id. */
export function sha256(bytes: Uint8Array): Uint8Array {
  return createHash('sha256').update(bytes).digest();
}

function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes)
    ? bytes
    : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}
