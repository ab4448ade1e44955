/**
 * Micro-benchmarks (tinybench) of the read path's parts: decoding one 64 KiB frame, a 4 KiB
 * `RestoreDisk.read` with and without the frame cache, and opening a restore point, each on the
 * 1st and the 50th point of a forward chain to show what does and does not depend on chain
 * length. Run alone with `node core/micro.mjs [--ms N] [--seed N]`.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { MemoryBlockSource, MemoryStore, Repository } from '@ivmr/core';
import { xxh64 } from '@node-rs/xxhash';
import { compressSync as lz4Compress, uncompressSync as lz4Uncompress } from 'lz4-napi';
import { Bench } from 'tinybench';
import { MiB, prng, writeImage } from './image.mjs';
import { FRAME } from './limits.mjs';

export const CHAIN = 50;
export const DISK_SIZE = 32 * MiB;
/** Small blocks, so the chain's maps have 512 entries each and resolving them costs something. */
const CHAIN_BLOCK = 64 * 1024;
const READ = 4096;

/**
 * @typedef {object} MicroResult
 * @property {string} name
 * @property {number} opsPerSec 1 / mean latency (tinybench's own throughput mean averages 1/latency
 *   per sample, which overstates it)
 * @property {number} meanUs mean latency in microseconds
 * @property {number} medianUs
 * @property {number} p99Us
 * @property {number} rmePercent relative margin of error of the mean latency
 * @property {number} samples
 * @property {number | null} bytesPerOp bytes each operation returns, for a MB/s figure
 */

/**
 * @param {{ seed: number, ms: number, tmp: string }} options
 * @returns {Promise<{ results: MicroResult[], chain: number, diskSize: number, blockSize: number }>}
 */
export async function runMicro({ seed, ms, tmp }) {
  const dir = await mkdtemp(join(tmp, 'ivmr-micro-'));
  let image;
  try {
    const info = writeImage(join(dir, 'disk.img'), DISK_SIZE, seed);
    image = await readFile(info.path);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }

  // Frames of the mix, stored as core stores them: compressed unless that does not shrink.
  const frames = [];
  for (let pos = 0; pos < image.length; pos += FRAME) {
    const raw = image.subarray(pos, pos + FRAME);
    const packed = lz4Compress(raw);
    if (packed.length < raw.length && !raw.equals(Buffer.alloc(FRAME))) {
      frames.push({ raw, packed, sum: xxh64(packed, 1n) });
    }
  }
  for (const f of frames) {
    if (!lz4Uncompress(f.packed).equals(f.raw)) throw new Error('lz4 round trip gave other bytes');
  }

  const chain = await buildChain(image, seed);
  const offsets = chainOffsets(seed);
  const warm = await Repository.open(chain.store, { frameCache: { maxBytes: 2 * DISK_SIZE } });
  const uncached = await Repository.open(chain.store, { frameCache: { maxBytes: 0 } });
  const disks = {};
  const opened = [];
  for (const [label, repo] of [
    ['warm', warm],
    ['nocache', uncached],
  ]) {
    for (const [n, point] of [
      [1, chain.first],
      [CHAIN, chain.last],
    ]) {
      const p = await repo.openPoint('micro', point.id);
      opened.push(p);
      disks[`${label}${n}`] = p.disk();
    }
  }
  // Right bytes first (and the warm cache filled): every read of the rotation, on every disk.
  for (const [key, disk] of Object.entries(disks)) {
    const want = key.endsWith(String(CHAIN)) ? chain.lastBytes : chain.firstBytes;
    for (const o of offsets) {
      const got = await disk.read(o, READ);
      if (!Buffer.from(got).equals(want.subarray(o, o + READ)))
        throw new Error(`micro: ${key} returned wrong bytes at ${o}`);
    }
  }

  const bench = new Bench({ time: ms, warmupTime: Math.min(ms, 100), iterations: 16 });
  const buf = new Uint8Array(READ);
  let f = 0;
  let r = 0;
  bench.add('lz4 decode, 64 KiB frame', () => {
    const fr = frames[f++ % frames.length];
    lz4Uncompress(fr.packed);
  });
  bench.add('frame decode (xxh64 check + lz4), 64 KiB', () => {
    const fr = frames[f++ % frames.length];
    if (xxh64(fr.packed, 1n) !== fr.sum) throw new Error('checksum changed');
    lz4Uncompress(fr.packed);
  });
  for (const [key, label] of [
    ['warm1', `RestoreDisk.read 4 KiB, warm frame cache, point 1 of ${CHAIN}`],
    [`warm${CHAIN}`, `RestoreDisk.read 4 KiB, warm frame cache, point ${CHAIN} of ${CHAIN}`],
    ['nocache1', `RestoreDisk.read 4 KiB, frame cache off, point 1 of ${CHAIN}`],
    [`nocache${CHAIN}`, `RestoreDisk.read 4 KiB, frame cache off, point ${CHAIN} of ${CHAIN}`],
  ]) {
    const disk = disks[key];
    bench.add(label, () => disk.read(offsets[r++ % offsets.length], READ, buf));
  }
  for (const [n, point] of [
    [1, chain.first],
    [CHAIN, chain.last],
  ]) {
    bench.add(`openPoint + close, chain length ${n}`, async () => {
      const p = await warm.openPoint('micro', point.id);
      await p.close();
    });
  }
  await bench.run();
  for (const p of opened) await p.close();

  const results = bench.tasks.map((task) =>
    microResult(
      task,
      task.name.includes('64 KiB') ? FRAME : task.name.includes('4 KiB') ? READ : null,
    ),
  );
  return { results, chain: CHAIN, diskSize: DISK_SIZE, blockSize: CHAIN_BLOCK };
}

/**
 * A finished tinybench task as a {@link MicroResult}; throws when it did not complete.
 * @param {import('tinybench').Task} task
 * @param {number | null} bytesPerOp
 * @returns {MicroResult}
 */
export function microResult(task, bytesPerOp) {
  const res = task.result;
  if (res.state !== 'completed') {
    throw new Error(`micro-benchmark ${task.name} ${res.state}: ${res.error?.message ?? ''}`);
  }
  return {
    name: task.name,
    opsPerSec: 1000 / res.latency.mean,
    meanUs: res.latency.mean * 1000,
    medianUs: res.latency.p50 * 1000,
    p99Us: res.latency.p99 * 1000,
    rmePercent: res.latency.rme,
    samples: res.latency.samplesCount,
    bytesPerOp,
  };
}

/**
 * A full backup of `image` and CHAIN - 1 forward increments, each rewriting the header of 11
 * random allocated blocks (about 2% of the disk's, reported as changed ranges), in a memory
 * store: fsync does not blur the CPU cost.
 * @param {Buffer} image
 * @param {number} seed
 */
export async function buildChain(image, seed) {
  const store = new MemoryStore();
  const repo = await Repository.init(store, { blockSize: CHAIN_BLOCK });
  const bytes = Buffer.from(image);
  const firstBytes = Buffer.from(image);
  const source = new MemoryBlockSource(bytes);
  const first = await repo.backup({ vm: 'micro', disks: [{ name: 'd', source }] });
  let last = first;
  const rnd = prng(seed ^ 0xc4a1);
  const zero = Buffer.alloc(CHAIN_BLOCK);
  const allocated = [];
  for (let off = 0; off < DISK_SIZE; off += CHAIN_BLOCK) {
    if (!bytes.subarray(off, off + CHAIN_BLOCK).equals(zero)) allocated.push(off);
  }
  for (let k = 2; k <= CHAIN; k++) {
    const changedRanges = [];
    for (let j = 0; j < DISK_SIZE / CHAIN_BLOCK / 50; j++) {
      // A new 16-byte header in an allocated block: the block changes, its kind (text, random,
      // zero) does not, so point 1 and point 50 decode the same mix.
      const offset = allocated[Math.floor(rnd() * allocated.length)];
      bytes.writeUInt32LE(k, offset);
      bytes.writeUInt32LE(j, offset + 4);
      bytes.writeDoubleLE(rnd(), offset + 8);
      changedRanges.push({ offset, length: 16 });
    }
    last = await repo.backup({ vm: 'micro', disks: [{ name: 'd', source, changedRanges }] });
  }
  await repo.close();
  return { store, first, last, firstBytes, lastBytes: bytes };
}

/** 1024 fixed 4 KiB-aligned offsets over the chain's disk. */
function chainOffsets(seed) {
  const rnd = prng(seed ^ 0x0ff5);
  return Array.from({ length: 1024 }, () => Math.floor(rnd() * (DISK_SIZE / READ)) * READ);
}

/**
 * Micro results as a markdown table.
 * @param {MicroResult[]} results
 */
export function microTable(results) {
  const lines = [
    '| Micro-benchmark | ops/s | MB/s | mean µs | median µs | p99 µs | ± % |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: |',
  ];
  for (const m of results) {
    const mbps = m.bytesPerOp === null ? '' : ((m.opsPerSec * m.bytesPerOp) / 1e6).toFixed(0);
    lines.push(
      `| ${m.name} | ${Math.round(m.opsPerSec).toLocaleString('en-US')} | ${mbps} | ${m.meanUs.toFixed(1)} | ${m.medianUs.toFixed(1)} | ${m.p99Us.toFixed(1)} | ${m.rmePercent.toFixed(1)} |`,
    );
  }
  return lines.join('\n');
}

// Run alone, or by run.mjs in a child process (--json) so its heap starts clean.
if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const { values } = parseArgs({
    options: {
      ms: { type: 'string', default: '500' },
      seed: { type: 'string', default: '1' },
      tmp: { type: 'string', default: tmpdir() },
      json: { type: 'boolean', default: false },
    },
  });
  const micro = await runMicro({
    seed: Number(values.seed),
    ms: Number(values.ms),
    tmp: values.tmp,
  });
  console.log(values.json ? JSON.stringify(micro) : microTable(micro.results));
}
