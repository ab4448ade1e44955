/**
 * Random 4 KiB writes to a WriteOverlay, a flush every 64 writes (as an NFS client's COMMITs),
 * at a given queue depth. The written bytes are checked afterwards, through the overlay and
 * after reopening it, before the rate counts.
 */
import { join } from 'node:path';
import { WriteOverlay } from '@ivmr/cache';
import { Prng } from './prng.mjs';
import { timed } from './timing.mjs';

const BS = 4096;
const FLUSH_EVERY = 64;
const PATTERNS = 256;

/** A base of zeros that costs no memory: aligned 4 KiB writes never read it anyway. */
function zeroBase(size) {
  return {
    size,
    async read(_offset, length, into) {
      const out = into ? into.subarray(0, length) : new Uint8Array(length);
      out.fill(0);
      return out;
    },
  };
}

/** `PATTERNS` distinct 4 KiB buffers; write `i` uses pattern `i % PATTERNS`. */
function patterns(seed) {
  const rng = new Prng(seed);
  return Array.from({ length: PATTERNS }, () => rng.fill(new Uint8Array(BS)));
}

/**
 * Runs `seconds` of writes at queue depth `depth` into a new overlay in `dir`.
 * @returns {Promise<{ iops: number, writes: number, flushes: number, timing: object }>}
 */
export async function overlayWriteRate({ dir, size, seconds, depth, seed }) {
  const base = zeroBase(size);
  const bufs = patterns(seed);
  const overlay = await WriteOverlay.open(base, { dir: join(dir, `ov-qd${depth}`) });
  const rng = new Prng(seed + depth);
  const slots = Math.floor(size / BS);
  /** offset -> pattern index of the last acknowledged write there */
  const last = new Map();
  /** offset -> writes issued there */
  const times = new Map();
  let issued = 0;
  let flushes = 0;
  const timing = await timed(async () => {
    const end = performance.now() + seconds * 1000;
    const worker = async () => {
      while (performance.now() < end) {
        const i = issued++;
        const offset = rng.int(0, slots - 1) * BS;
        times.set(offset, (times.get(offset) ?? 0) + 1);
        await overlay.write(offset, bufs[i % PATTERNS]);
        last.set(offset, i % PATTERNS);
        if ((i + 1) % FLUSH_EVERY === 0) {
          await overlay.flush();
          flushes++;
        }
      }
    };
    await Promise.all(Array.from({ length: depth }, worker));
    await overlay.flush();
  });
  // With depth > 1, two writes to one offset may finish out of order: only check offsets
  // written once (the others are covered by the single-writer runs).
  await verify(overlay, last, bufs, depth > 1 ? times : undefined);
  await overlay.close();
  const again = await WriteOverlay.open(base, { dir: join(dir, `ov-qd${depth}`) });
  await verify(again, last, bufs, depth > 1 ? times : undefined);
  await again.close();
  return { iops: issued / timing.seconds, writes: issued, flushes, timing };
}

/** Reads back every offset in `last` (but those `times` says were written more than once). */
async function verify(overlay, last, bufs, times) {
  const got = new Uint8Array(BS);
  let checked = 0;
  for (const [offset, p] of last) {
    if (times && times.get(offset) > 1) continue;
    await overlay.read(offset, BS, got);
    if (Buffer.compare(got, bufs[p]) !== 0) {
      throw new Error(`overlay benchmark: wrong bytes at offset ${offset}`);
    }
    checked++;
  }
  if (checked === 0) throw new Error('overlay benchmark: nothing checked');
}
