import { createHash } from 'node:crypto';
import { xxh64 } from '@node-rs/xxhash';
import { compressSync as lz4Compress } from 'lz4-napi';
import { compress as zstdCompress } from 'zstd-napi';
import zstdBinding from 'zstd-napi/binding.js';
import { lz4DecodeInto } from './lz4/lz4-wasm.js';

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
 * Decompresses one frame whose raw length is known into a new buffer. Throws a plain Error when
 * the payload does not decode to exactly `rawLength` bytes; callers turn it into
 * `IVMR_CHUNK_CORRUPT` with context.
 */
export function decompressFrame(
  codec: CodecName,
  payload: Uint8Array,
  rawLength: number,
): Uint8Array {
  // Not zeroed: decompressFrameInto fills every byte or throws.
  const out = Buffer.allocUnsafeSlow(rawLength);
  decompressFrameInto(codec, payload, out);
  return out;
}

let zstdContext: InstanceType<typeof zstdBinding.DCtx> | undefined;

/**
 * Decompresses one frame into `out`, whose length is the frame's raw length: a read that has
 * its destination allocates nothing (lz4 runs as WebAssembly, zstd through one reused
 * decompression context). Throws a plain Error when the payload does not decode to exactly
 * `out.length` bytes; `out` may then hold partial output.
 */
export function decompressFrameInto(codec: CodecName, payload: Uint8Array, out: Uint8Array): void {
  switch (codec) {
    case 'none':
      if (payload.length !== out.length) {
        throw new Error(`frame decoded to ${payload.length} bytes, expected ${out.length}`);
      }
      copyBytes(payload, out);
      return;
    case 'lz4':
      lz4DecodeInto(payload, out);
      return;
    case 'zstd': {
      zstdContext ??= new zstdBinding.DCtx();
      // A payload that decodes to more than `out` holds throws (zstd: destination too small).
      const n = zstdContext.decompress(out, asBuffer(payload));
      if (n !== out.length) throw new Error(`frame decoded to ${n} bytes, expected ${out.length}`);
      return;
    }
  }
}

let staging: Uint8Array | undefined;

/**
 * `out.set(bytes)` (equal lengths), fast also where `SharedArrayBuffer` memory is involved. V8
 * copies to or from shared memory a word at a time when both sides have the same alignment
 * modulo 8, and byte by byte (about 8x slower) when they do not, which a frame stored
 * uncompressed after its 9-byte header always hits. Then the bytes go through a private buffer:
 * in at their source's alignment, moved within it, out at their destination's.
 */
export function copyBytes(bytes: Uint8Array, out: Uint8Array): void {
  const shared =
    bytes.buffer instanceof SharedArrayBuffer || out.buffer instanceof SharedArrayBuffer;
  if (!shared || (bytes.byteOffset - out.byteOffset) % 8 === 0) {
    out.set(bytes);
    return;
  }
  const n = bytes.length;
  const half = n + 16;
  if (staging === undefined || staging.length < 2 * half) {
    staging = new Uint8Array(Buffer.allocUnsafeSlow(2 * half).buffer, 0, 2 * half);
  }
  const from = bytes.byteOffset % 8;
  const to = half + (out.byteOffset % 8);
  staging.set(bytes, from);
  staging.copyWithin(to, from, from + n);
  out.set(staging.subarray(to, to + n));
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
