/**
 * Read cache hits: a ReadCache over an in-memory source is filled by one sequential pass (that
 * stores what it reads ahead at once), then random reads that all hit run at queue depth 1 and
 * 16. Every pass lands its reads in one buffer that is compared with the source afterwards,
 * before the rate counts.
 */
import { join } from 'node:path';
import { ReadCache } from '@ivmr/cache';
import { MemoryBlockSource } from '@ivmr/core';
import { Prng } from './prng.mjs';
import { timed } from './timing.mjs';

/** Opens a cache over `bytes` in `dir` and fills it; returns it with the fill's timing. */
export async function filledCache({ dir, bytes }) {
  const source = new MemoryBlockSource(bytes);
  const cache = await ReadCache.open(source, {
    path: join(dir, 'bench.rcache'),
    maxBytes: bytes.length,
    sourceId: 'benchmark',
    minFreeBytes: 0,
    // The fill is the figure: one pass stores every block (by default a stream's blocks are
    // stored on their second read).
    streamAdmission: 'first-read',
  });
  const buf = new Uint8Array(1 << 20);
  const fill = await timed(async () => {
    for (let at = 0; at < bytes.length; at += buf.length) {
      await cache.read(at, Math.min(buf.length, bytes.length - at), buf);
    }
    // Reads answer before their blocks are stored; the fill is over once they are.
    await cache.settle();
  });
  const s = cache.stats();
  if (s.cachedBytes !== bytes.length) {
    throw new Error(`read cache benchmark: only ${s.cachedBytes} of ${bytes.length} bytes cached`);
  }
  return { cache, fill };
}

/**
 * `count` random reads of `bs` bytes at 4 KiB-aligned offsets, queue depth `depth`, all hits,
 * checked afterwards.
 * @returns {Promise<{ readsPerSec: number, bytesPerSec: number, timing: object }>}
 */
export async function hitRate({ cache, bytes, bs, count, depth, seed }) {
  const rng = new Prng(seed);
  // 4 KiB-aligned, as a hypervisor's reads are: a 64 KiB read then mostly spans two blocks.
  const offsets = Array.from(
    { length: count },
    () => rng.int(0, (bytes.length - bs) / 4096) * 4096,
  );
  const out = new Uint8Array(count * bs);
  const before = cache.stats();
  let next = 0;
  const timing = await timed(async () => {
    const worker = async () => {
      while (next < count) {
        const i = next++;
        await cache.read(offsets[i], bs, out.subarray(i * bs, (i + 1) * bs));
      }
    };
    await Promise.all(Array.from({ length: depth }, worker));
  });
  for (let i = 0; i < count; i++) {
    const want = bytes.subarray(offsets[i], offsets[i] + bs);
    if (Buffer.compare(out.subarray(i * bs, (i + 1) * bs), want) !== 0) {
      throw new Error(`read cache benchmark: wrong bytes at offset ${offsets[i]}`);
    }
  }
  const after = cache.stats();
  if (after.misses !== before.misses || after.sourceReads !== before.sourceReads) {
    throw new Error('read cache benchmark: a hit pass missed');
  }
  return {
    readsPerSec: count / timing.seconds,
    bytesPerSec: (count * bs) / timing.seconds,
    timing,
  };
}
