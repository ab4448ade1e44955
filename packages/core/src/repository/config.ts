import { randomBytes } from 'node:crypto';
import { ErrorCode, IvmrError } from '../errors.js';
import { formatError } from '../format/binary.js';
import { type CodecName, isCodecName } from '../format/codec.js';
import {
  MAX_BLOCK_SIZE,
  MAX_FRAME_SHIFT,
  MIN_BLOCK_SIZE,
  MIN_FRAME_SHIFT,
} from '../format/pack.js';

/** The repository's settings, stored as the `config` object (FORMAT.md, "Config"). */
export interface RepositoryConfig {
  readonly version: 1;
  /** Random id of the repository (32 hex digits). */
  readonly id: string;
  /** ISO time of creation. */
  readonly created: string;
  /** Codec of new blobs unless a backup names another. */
  readonly codec: CodecName;
  /** Block size of new chains unless a backup names another. */
  readonly blockSize: number;
  /** Raw bytes per frame: the most a small read decodes. */
  readonly frameSize: number;
  /** Target pack file size. */
  readonly packSize: number;
}

/** Options for a new repository. */
export interface RepositoryInitOptions {
  /** Default codec (default `lz4`). */
  codec?: CodecName;
  /** Default block size in bytes, a power of two in 64 KiB..4 MiB (default 1 MiB). */
  blockSize?: number;
  /** Frame size in bytes, a power of two in 4 KiB..block size (default 64 KiB). */
  frameSize?: number;
  /** Target pack size in bytes, 1 MiB..1 GiB (default 16 MiB). */
  packSize?: number;
}

/** Throws `IVMR_INVALID_ARGUMENT` unless `n` is a power-of-two block size ivmr supports. */
export function checkBlockSize(n: number): void {
  if (!Number.isInteger(n) || n < MIN_BLOCK_SIZE || n > MAX_BLOCK_SIZE || !isPowerOfTwo(n)) {
    throw new IvmrError(
      ErrorCode.INVALID_ARGUMENT,
      `block size must be a power of two from 64 KiB to 4 MiB, got ${n}`,
    );
  }
}

/** Builds and validates the config of a new repository. */
export function newConfig(options: RepositoryInitOptions): RepositoryConfig {
  const codec = options.codec ?? 'lz4';
  if (!isCodecName(codec)) {
    throw new IvmrError(
      ErrorCode.INVALID_ARGUMENT,
      `unknown codec ${String(codec)} (lz4, zstd, none)`,
    );
  }
  const blockSize = options.blockSize ?? 1024 * 1024;
  checkBlockSize(blockSize);
  const frameSize = options.frameSize ?? Math.min(64 * 1024, blockSize);
  const shift = Math.log2(frameSize);
  if (!isPowerOfTwo(frameSize) || shift < MIN_FRAME_SHIFT || shift > MAX_FRAME_SHIFT) {
    throw new IvmrError(
      ErrorCode.INVALID_ARGUMENT,
      `frame size must be a power of two from 4 KiB to 4 MiB, got ${frameSize}`,
    );
  }
  const packSize = options.packSize ?? 16 * 1024 * 1024;
  if (!Number.isInteger(packSize) || packSize < 1024 * 1024 || packSize > 1024 ** 3) {
    throw new IvmrError(
      ErrorCode.INVALID_ARGUMENT,
      `pack size must be from 1 MiB to 1 GiB, got ${packSize}`,
    );
  }
  return {
    version: 1,
    id: randomBytes(16).toString('hex'),
    created: new Date().toISOString(),
    codec,
    blockSize,
    frameSize,
    packSize,
  };
}

/** Parses and validates a stored config object. */
export function parseConfig(bytes: Uint8Array, location: string): RepositoryConfig {
  const what = `config of repository ${location}`;
  let raw: unknown;
  try {
    raw = JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch {
    throw formatError(what, 'not valid JSON');
  }
  const c = raw as Partial<RepositoryConfig>;
  if (typeof c !== 'object' || c === null) throw formatError(what, 'not an object');
  if (c.version !== 1) {
    throw new IvmrError(
      ErrorCode.UNSUPPORTED,
      `${what}: format version ${String(c.version)} is not supported (this ivmr reads version 1)`,
    );
  }
  if (typeof c.id !== 'string' || !/^[0-9a-f]{32}$/.test(c.id)) throw formatError(what, 'bad id');
  if (typeof c.codec !== 'string' || !isCodecName(c.codec))
    throw formatError(what, `unknown codec ${String(c.codec)}`);
  for (const [field, lo, hi] of [
    ['blockSize', MIN_BLOCK_SIZE, MAX_BLOCK_SIZE],
    ['frameSize', 2 ** MIN_FRAME_SHIFT, 2 ** MAX_FRAME_SHIFT],
    ['packSize', 1024 * 1024, 1024 ** 3],
  ] as const) {
    const v = c[field];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < lo || v > hi)
      throw formatError(what, `bad ${field}`);
  }
  return c as RepositoryConfig;
}

function isPowerOfTwo(n: number): boolean {
  return n > 0 && Number.isInteger(Math.log2(n));
}
