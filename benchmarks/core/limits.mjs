/**
 * The machine's limits, measured in the same run as the figures they divide: what one core does
 * with the data the benchmark stores (SHA-256, lz4 and zstd over 64 KiB frames), and what node's
 * file API does on the page cache and the disk. Every pass checks its output before it counts.
 */
import { createHash } from 'node:crypto';
import { mkdir, open, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { compressSync as lz4Compress, uncompressSync as lz4Uncompress } from 'lz4-napi';
import { compress as zstdCompress, decompress as zstdDecompress } from 'zstd-napi';
import { BLOCK } from './image.mjs';
import { rate, runQueue } from './measure.mjs';

/** zstd level of core's codec (packages/core/src/format/codec.ts, ZSTD_LEVEL). */
export const ZSTD_LEVEL = 3;
/** Core's default frame size: the unit a small read decodes. */
export const FRAME = 64 * 1024;

/**
 * CPU limits over `blocks` (1 MiB buffers of the image's non-zero blocks): SHA-256 per block, as
 * backup hashes; lz4 and zstd per 64 KiB frame, as packs store them.
 * @param {Buffer[]} blocks
 * @param {number} minMs
 */
export async function measureCpuLimits(blocks, minMs) {
  const frames = blocks.flatMap((b) => {
    const out = [];
    for (let pos = 0; pos < b.length; pos += FRAME) out.push(b.subarray(pos, pos + FRAME));
    return out;
  });
  const bytes = blocks.length * BLOCK;
  const lz4 = frames.map((f) => lz4Compress(f));
  const zstd = frames.map((f) => zstdCompress(f, { compressionLevel: ZSTD_LEVEL }));
  for (let i = 0; i < frames.length; i++) {
    if (!lz4Uncompress(lz4[i]).equals(frames[i]) || !zstdDecompress(zstd[i]).equals(frames[i])) {
      throw new Error(`codec round trip of sample frame ${i} gave other bytes`);
    }
  }
  const digests = blocks.map((b) => createHash('sha256').update(b).digest('hex'));
  let sink = 0;
  const limits = {
    sha256: await rate(bytes, minMs, () => {
      for (let i = 0; i < blocks.length; i++) {
        if (createHash('sha256').update(blocks[i]).digest('hex') !== digests[i])
          throw new Error('SHA-256 is not deterministic');
      }
    }),
    lz4Compress: await rate(bytes, minMs, () => {
      for (const f of frames) sink += lz4Compress(f).length;
    }),
    lz4Decompress: await rate(bytes, minMs, () => {
      for (const c of lz4) sink += lz4Uncompress(c).length;
    }),
    zstdCompress: await rate(bytes, minMs, () => {
      for (const f of frames) sink += zstdCompress(f, { compressionLevel: ZSTD_LEVEL }).length;
    }),
    zstdDecompress: await rate(bytes, minMs, () => {
      for (const c of zstd) sink += zstdDecompress(c).length;
    }),
  };
  if (sink === 0) throw new Error('codecs produced nothing');
  const lz4Bytes = lz4.reduce((a, c, i) => a + Math.min(c.length, frames[i].length), 0);
  const zstdBytes = zstd.reduce((a, c, i) => a + Math.min(c.length, frames[i].length), 0);
  return {
    limits,
    sampleBytes: bytes,
    lz4Ratio: lz4Bytes / bytes,
    zstdRatio: zstdBytes / bytes,
  };
}

/**
 * Sequential 1 MiB reads of a file through a node FileHandle (core's read API), from the page
 * cache when the file was just written or read. Checks each read against `hashes` (SHA-256 hex
 * per 1 MiB block, '' for zero) in a first, untimed pass.
 * @param {string} path
 * @param {number} size
 * @param {string[]} hashes
 * @param {number} minMs
 */
export async function measureSequentialRead(path, size, hashes, minMs) {
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(BLOCK);
    const readAll = async (check) => {
      for (let pos = 0; pos < size; pos += BLOCK) {
        const { bytesRead } = await fh.read(buf, 0, BLOCK, pos);
        if (bytesRead !== BLOCK) throw new Error(`short read of ${path} at ${pos}`);
        if (check) {
          const h = hashes[pos / BLOCK];
          if (h === '' ? !buf.equals(Buffer.alloc(BLOCK)) : sha256(buf) !== h)
            throw new Error(`${path} changed under the benchmark at ${pos}`);
        }
      }
    };
    await readAll(true);
    return await rate(size, minMs, () => readAll(false));
  } finally {
    await fh.close();
  }
}

/**
 * 4 KiB reads of a file at `offsets`, `depth` at a time; returns the rate (reads/s) and the bytes read
 * (read i at `i * length`), which are what a restore point must return for the same offsets.
 * @param {string} path
 * @param {number[]} offsets
 * @param {number} length
 * @param {number} depth
 * @param {number} minMs
 */
export async function measureRandomRead(path, offsets, length, depth, minMs) {
  const fh = await open(path, 'r');
  try {
    const out = Buffer.alloc(offsets.length * length);
    const pass = () =>
      runQueue(offsets.length, depth, async (i) => {
        const { bytesRead } = await fh.read(out, i * length, length, offsets[i]);
        if (bytesRead !== length) throw new Error(`short read of ${path} at ${offsets[i]}`);
      });
    return { ...(await rate(offsets.length, minMs, pass)), bytes: out };
  } finally {
    await fh.close();
  }
}

/**
 * Writes 16 MiB files the way LocalStore stores a pack (write, fsync, rename, fsync of the
 * directory) and returns the rate: the ceiling for storing a backup's new bytes.
 * @param {string} dir
 * @param {number} minMs
 */
export async function measureDurableWrite(dir, minMs) {
  const size = 16 * 1024 * 1024;
  const data = Buffer.alloc(size, 0x5a);
  await mkdir(join(dir, 'tmp'), { recursive: true });
  let n = 0;
  try {
    return await rate(size, minMs, async () => {
      const tmp = join(dir, 'tmp', `w${n}`);
      const fh = await open(tmp, 'wx');
      try {
        await fh.writeFile(data);
        await fh.sync();
      } finally {
        await fh.close();
      }
      await rename(tmp, join(dir, `w${n++ % 4}`));
      const d = await open(dir, 'r');
      try {
        await d.sync();
      } finally {
        await d.close();
      }
    });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** @param {Uint8Array} bytes */
function sha256(bytes) {
  return createHash('sha256').update(bytes).digest('hex');
}
