/**
 * Timed reads of an opened restore point through `RestoreDisk.read`, the path an NFS READ takes.
 * Every pass compares what it read with the raw image at the same offsets and throws on the
 * first difference, so a speed is only reported for right bytes.
 */
import { closeSync, openSync } from 'node:fs';
import { openLocalRepository } from '@ivmr/core';
import { BLOCK, prng, readFully } from './image.mjs';
import { addTimings, runQueue, timed } from './measure.mjs';

/**
 * @typedef {object} OpenedPoint
 * @property {import('@ivmr/core').RestoreDisk} disk
 * @property {number} openMs time to open the repository (load its index) and the point (resolve
 *   its chain)
 * @property {() => Promise<void>} close
 */

/**
 * Opens a new Repository object (so an empty frame cache: "cold"; the OS page cache stays warm)
 * and the point.
 * @param {string} dir
 * @param {string} vm
 * @param {string} point
 * @param {number | undefined} cacheBytes frame cache size; undefined keeps core's default
 * @returns {Promise<OpenedPoint>}
 */
export async function openCold(dir, vm, point, cacheBytes) {
  const start = performance.now();
  const repo = await openLocalRepository(
    dir,
    cacheBytes === undefined ? {} : { frameCache: { maxBytes: cacheBytes } },
  );
  const opened = await repo.openPoint(vm, point);
  const openMs = performance.now() - start;
  return {
    disk: opened.disk(),
    openMs,
    close: async () => {
      await opened.close();
      await repo.close();
    },
  };
}

/**
 * Reads the whole disk in order, `chunk` bytes at a time at queue depth 1, timing the reads only;
 * each chunk is compared with the image after its read, outside the timed part. The rest of the
 * machine's load is taken over the whole pass (per read it is below /proc/stat's resolution).
 * @param {import('@ivmr/core').RestoreDisk} disk
 * @param {string} imagePath
 * @param {number} [chunk]
 * @returns {Promise<import('./measure.mjs').Timing>} time spent in reads
 */
export async function sequentialPass(disk, imagePath, chunk = BLOCK) {
  const got = Buffer.alloc(chunk);
  const want = Buffer.alloc(chunk);
  const fd = openSync(imagePath, 'r');
  const parts = [];
  try {
    const whole = await timed(async () => {
      for (let pos = 0; pos < disk.size; pos += chunk) {
        const n = Math.min(chunk, disk.size - pos);
        parts.push(
          await timed(async () => {
            await disk.read(pos, n, got);
          }),
        );
        readFully(fd, want.subarray(0, n), pos);
        if (!got.subarray(0, n).equals(want.subarray(0, n))) {
          throw new Error(`restore point returned wrong bytes in ${n} bytes at offset ${pos}`);
        }
      }
    });
    const reads = addTimings(...parts);
    const othersLoad =
      whole.othersCpuSeconds === null ? null : whole.othersCpuSeconds / whole.seconds;
    return {
      ...reads,
      othersCpuSeconds: othersLoad === null ? null : othersLoad * reads.seconds,
    };
  } finally {
    closeSync(fd);
  }
}

/**
 * `count` random 4 KiB-aligned offsets inside the image's non-zero blocks (what a booting guest
 * reads; zero blocks cost nothing to serve), from a fixed seed.
 * @param {string[]} hashes
 * @param {number} count
 * @param {number} length
 * @param {number} seed
 */
export function randomOffsets(hashes, count, length, seed) {
  const allocated = [];
  for (let i = 0; i < hashes.length; i++) if (hashes[i] !== '') allocated.push(i);
  if (allocated.length === 0) throw new Error('the image has no allocated block to read');
  const rnd = prng(seed ^ 0x4ead);
  const pages = BLOCK / length;
  return Array.from(
    { length: count },
    () =>
      allocated[Math.floor(rnd() * allocated.length)] * BLOCK + Math.floor(rnd() * pages) * length,
  );
}

/**
 * Reads `length` bytes at each offset, `depth` reads in flight, into one buffer; then compares
 * it with `expected` (the raw image's bytes at the same offsets).
 * @param {import('@ivmr/core').RestoreDisk} disk
 * @param {number[]} offsets
 * @param {number} length
 * @param {number} depth
 * @param {Buffer} expected
 * @returns {Promise<import('./measure.mjs').Timing>} time for all reads
 */
export async function randomPass(disk, offsets, length, depth, expected) {
  const got = Buffer.alloc(offsets.length * length);
  const t = await timed(() =>
    runQueue(offsets.length, depth, async (i) => {
      await disk.read(offsets[i], length, got.subarray(i * length, (i + 1) * length));
    }),
  );
  if (!got.equals(expected)) {
    const at = (b, i) => b.subarray(i * length, (i + 1) * length);
    let i = 0;
    while (at(got, i).equals(at(expected, i))) i++;
    throw new Error(
      `restore point returned wrong bytes for the ${length}-byte read at ${offsets[i]}`,
    );
  }
  return t;
}

/**
 * Distinct frames the reads touch: the decodes a cold pass needs when its cache holds them all.
 * @param {number[]} offsets
 * @param {number} frame
 */
export function distinctFrames(offsets, frame) {
  return new Set(offsets.map((o) => Math.floor(o / frame))).size;
}
