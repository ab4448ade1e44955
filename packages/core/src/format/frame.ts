import { codecById, decompressFrameInto, frameChecksum } from './codec.js';
import { FRAME_HEADER_SIZE } from './pack.js';

/** Why a stored frame could not be decoded (the caller names the blob, pack and frame). */
export interface FrameFault {
  readonly why: string;
  readonly cause?: unknown;
}

/**
 * Checks one stored frame (header + payload, FORMAT.md "Frames") and decodes it into `out`,
 * whose length is the frame's raw length. Returns what is wrong with it, or undefined: a short
 * frame, an unknown codec and a checksum mismatch are found before anything is written to
 * `out`; a payload that does not decode to exactly `out.length` bytes may leave partial output.
 * Runs on the calling thread or in a decode worker (no state besides the codecs' own).
 */
export function decodeFrameInto(stored: Uint8Array, out: Uint8Array): FrameFault | undefined {
  if (stored.length < FRAME_HEADER_SIZE) {
    return { why: `${stored.length} bytes cannot hold a frame header` };
  }
  const codecId = stored[0]!;
  const codec = codecById(codecId);
  if (codec === undefined) return { why: `unknown codec id ${codecId}` };
  const view = Buffer.from(stored.buffer, stored.byteOffset, stored.byteLength);
  const sum = view.readBigUInt64BE(1);
  const payload = view.subarray(FRAME_HEADER_SIZE);
  if (frameChecksum(codecId, payload) !== sum) return { why: 'checksum mismatch' };
  try {
    decompressFrameInto(codec, payload, out);
  } catch (err) {
    return { why: (err as Error).message, cause: err };
  }
  return undefined;
}
