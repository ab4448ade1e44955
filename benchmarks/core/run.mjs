/**
 * The foundation benchmark: backup throughput of a synthetic disk image (full with lz4 and zstd,
 * incremental by hashing and with a changed-block list) and in-process read throughput of the
 * restore point (sequential and random, cold and warm), each divided by limits of this machine
 * measured in the same run. See ../README.md for what each figure means.
 *
 * Usage: node core/run.mjs [--size 1G] [--reads 20000] [--seed 1] [--repeat 3] [--out DIR]
 *        [--tmp DIR] [--limit-ms 500] [--micro-ms 500] [--micro | --no-micro]
 */
import { execFile } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs, promisify } from 'node:util';
import { timeBackup, VM } from './backup-runs.mjs';
import { BLOCK, changeBlocks, MiB, readFully, writeImage } from './image.mjs';
import {
  FRAME,
  measureCpuLimits,
  measureDurableWrite,
  measureRandomRead,
  measureSequentialRead,
  ZSTD_LEVEL,
} from './limits.mjs';
import { median, timed } from './measure.mjs';
import { microTable } from './micro.mjs';
import { markdown, mb, row, writeResults } from './report.mjs';
import {
  distinctFrames,
  openCold,
  randomOffsets,
  randomPass,
  sequentialPass,
} from './restore-reads.mjs';

const execFileAsync = promisify(execFile);
const CHANGED_SHARE = 0.05;
const READ = 4096;
const DEPTHS = [1, 16];
/** Most bytes of the image used as the codec and hash sample. */
const SAMPLE_MAX = 64 * MiB;

const { values: opts } = parseArgs({
  options: {
    size: { type: 'string', default: '1G' },
    reads: { type: 'string', default: '20000' },
    seed: { type: 'string', default: '1' },
    out: { type: 'string', default: fileURLToPath(new URL('../results', import.meta.url)) },
    tmp: { type: 'string', default: tmpdir() },
    'limit-ms': { type: 'string', default: '500' },
    'micro-ms': { type: 'string', default: '500' },
    repeat: { type: 'string', default: '3' },
    micro: { type: 'boolean', default: false },
    'no-micro': { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (opts.help) {
  console.log(
    'node core/run.mjs [--size 1G] [--reads 20000] [--seed 1] [--repeat 3] [--out DIR]\n' +
      '                  [--tmp DIR] [--limit-ms 500] [--micro-ms 500] [--micro | --no-micro]',
  );
  process.exit(0);
}
if (opts.micro && opts['no-micro']) throw new Error('--micro and --no-micro exclude each other');
const options = {
  size: parseSize(opts.size),
  reads: positiveInt(opts.reads, '--reads'),
  seed: positiveInt(opts.seed, '--seed'),
  limitMs: positiveInt(opts['limit-ms'], '--limit-ms'),
  microMs: positiveInt(opts['micro-ms'], '--micro-ms'),
  repeat: positiveInt(opts.repeat, '--repeat'),
};
const command = `node core/run.mjs ${process.argv.slice(2).join(' ')}`.trim();
const started = performance.now();

const results = {
  benchmark: 'ivmr-core',
  version: 1,
  command,
  date: new Date().toISOString(),
  node: process.versions.node,
  v8: process.versions.v8,
  platform: `${process.platform}-${process.arch}`,
  cpu: { model: cpus()[0]?.model ?? 'unknown', count: cpus().length },
  memory: totalmem(),
  options,
  seconds: 0,
  image: null,
  limits: [],
  backups: [],
  reads: null,
  sample: null,
  storage: [],
  rows: [],
  openMs: 0,
  cache: { sequential: 0, random: 0 },
  micro: null,
  load: null,
};

if (!opts.micro) results.load = await timed(runMain);
if (!opts['no-micro']) {
  log('micro-benchmarks (in a child process: a clean heap)');
  const { stdout } = await execFileAsync(
    process.execPath,
    [
      fileURLToPath(new URL('./micro.mjs', import.meta.url)),
      '--json',
      '--ms',
      String(options.microMs),
      '--seed',
      String(options.seed),
      '--tmp',
      opts.tmp,
    ],
    { maxBuffer: 1 << 24 },
  );
  results.micro = JSON.parse(stdout);
}
results.seconds = (performance.now() - started) / 1000;
const name = opts.micro ? 'core-micro' : 'core';
await writeResults(opts.out, name, results);
console.log(opts.micro ? microTable(results.micro.results) : markdown(results));
log(`wrote ${join(opts.out, `${name}.json`)} and ${name}.md`);

async function runMain() {
  const tmp = await mkdtemp(join(opts.tmp, 'ivmr-bench-'));
  try {
    await benchmark(tmp);
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

/** @param {string} tmp */
async function benchmark(tmp) {
  const { size, seed, limitMs, repeat } = options;
  log(`writing a ${size / MiB} MiB image (seed ${seed})`);
  const image = writeImage(join(tmp, 'disk0.img'), size, seed);
  const blocks = size / BLOCK;

  log('measuring limits: SHA-256, lz4, zstd, durable writes');
  const sample = await sampleBlocks(image);
  const cpuStart = await measureCpuLimits(sample, limitMs);
  const write = await measureDurableWrite(join(tmp, 'write-test'), limitMs);

  log('full backups: lz4 (twice, into two repositories), zstd');
  const repoHash = join(tmp, 'repo-hash');
  const repoCbt = join(tmp, 'repo-cbt');
  const repoZstd = join(tmp, 'repo-zstd');
  const fullA = await timeBackup('full lz4 (1)', repoHash, image);
  const fullB = await timeBackup('full lz4 (2)', repoCbt, image);
  const fullZ = await timeBackup('full zstd', repoZstd, image, { codec: 'zstd' });

  log('sequential reads of the zstd point (before the image changes)');
  const zstdCold = await repeated(repeat, async () => {
    const p = await openCold(repoZstd, VM, fullZ.point, undefined);
    try {
      return await sequentialPass(p.disk, image.path);
    } finally {
      await p.close();
    }
  });

  log(`changing ${CHANGED_SHARE * 100}% of the blocks; incremental backups`);
  const changes = changeBlocks(image, CHANGED_SHARE, seed);
  const incHash = await timeBackup('incremental, by hashing', repoHash, image);
  const incCbt = await timeBackup('incremental, changed-block list', repoCbt, image, {
    changedRanges: changes.ranges,
  });
  results.backups = [fullA, fullB, fullZ, incHash, incCbt];

  log('measuring limits: page-cache reads of the raw image');
  const offsets = randomOffsets(image.hashes, options.reads, READ, seed);
  const seqLimit = await measureSequentialRead(image.path, size, image.hashes, limitMs);
  const raw = {};
  for (const depth of DEPTHS) {
    raw[depth] = await measureRandomRead(image.path, offsets, READ, depth, limitMs);
  }
  const expected = raw[1].bytes;
  if (!raw[16].bytes.equals(expected)) throw new Error('raw image reads differ between depths');

  log(`reads of the restore point (${repeat} times each)`);
  const nonZero = image.hashes.filter((h) => h !== '').length;
  const frames = distinctFrames(offsets, FRAME);
  results.cache.sequential = nonZero * BLOCK + 16 * MiB;
  results.cache.random = frames * FRAME + 16 * MiB;
  const openMs = [];
  /**
   * Opens the point `repeat` times with a new Repository (frame cache of `cacheBytes`, core's
   * default when undefined); each time runs `pass` cold, then again warm on the same objects.
   * Returns the median cold and warm timings.
   */
  const coldWarm = async (cacheBytes, pass) => {
    const cold = [];
    const warm = [];
    for (let i = 0; i < repeat; i++) {
      const p = await openCold(repoHash, VM, incHash.point, cacheBytes);
      openMs.push(p.openMs);
      try {
        cold.push(await pass(p.disk));
        warm.push(await pass(p.disk));
      } finally {
        await p.close();
      }
    }
    return { cold: medianTiming(cold), warm: medianTiming(warm) };
  };
  const seqPass = (d) => sequentialPass(d, image.path);
  const seqDefault = await repeated(repeat, async () => {
    const p = await openCold(repoHash, VM, incHash.point, undefined);
    openMs.push(p.openMs);
    try {
      return await seqPass(p.disk);
    } finally {
      await p.close();
    }
  });
  const seq = await coldWarm(results.cache.sequential, seqPass);
  const random = {};
  for (const depth of DEPTHS) {
    random[depth] = await coldWarm(results.cache.random, (d) =>
      randomPass(d, offsets, READ, depth, expected),
    );
  }
  const dflt = await coldWarm(undefined, (d) => randomPass(d, offsets, READ, 1, expected));
  results.openMs = median(openMs);

  log('measuring limits again (drift)');
  const cpuEnd = await measureCpuLimits(sample, limitMs);

  // Limits: the fastest pass of both measurements (start and end of the run).
  const both = (k) => Math.max(cpuStart.limits[k].best, cpuEnd.limits[k].best);
  const L = {
    sha: both('sha256'),
    lz4c: both('lz4Compress'),
    lz4d: both('lz4Decompress'),
    zstdc: both('zstdCompress'),
    zstdd: both('zstdDecompress'),
    seq: seqLimit.best,
    write: write.best,
    raw1: raw[1].best,
    raw16: raw[16].best,
  };
  const cpuLimit = (name, k) => {
    const passes = cpuStart.limits[k].passes.length + cpuEnd.limits[k].passes.length;
    const drift = cpuEnd.limits[k].median / cpuStart.limits[k].median;
    return limitEntry(name, mb(both(k)), 'MB/s', passes, drift);
  };
  results.limits = [
    cpuLimit('SHA-256, 1 MiB blocks', 'sha256'),
    cpuLimit('lz4 compress, 64 KiB frames', 'lz4Compress'),
    cpuLimit('lz4 decompress, 64 KiB frames', 'lz4Decompress'),
    cpuLimit(`zstd -${ZSTD_LEVEL} compress, 64 KiB frames`, 'zstdCompress'),
    cpuLimit('zstd decompress, 64 KiB frames', 'zstdDecompress'),
    limitEntry(
      'raw image sequential 1 MiB reads (page cache)',
      mb(L.seq),
      'MB/s',
      seqLimit.passes.length,
      null,
    ),
    limitEntry('raw image random 4 KiB reads, QD1', L.raw1, 'reads/s', raw[1].passes.length, null),
    limitEntry(
      'raw image random 4 KiB reads, QD16',
      L.raw16,
      'reads/s',
      raw[16].passes.length,
      null,
    ),
    limitEntry(
      'durable 16 MiB writes (write + fsync + rename)',
      mb(L.write),
      'MB/s',
      write.passes.length,
      null,
    ),
  ];
  results.sample = {
    bytes: cpuStart.sampleBytes,
    lz4StoredRatio: cpuStart.lz4Ratio,
    zstdStoredRatio: cpuStart.zstdRatio,
  };

  // Work bounds add up, on one core, the time each step of the figure's work takes at its
  // measured limit (README, "Ratios").
  const backupBound = (run, compress) => {
    const s = run.stats;
    const hashed = s.readBytes - s.zeroBlocks * BLOCK;
    const t =
      s.readBytes / L.seq + hashed / L.sha + s.newBytes / compress + s.storedBytes / L.write;
    return mb(size / t);
  };
  const backupRow = (id, figure, run, limitName, limit, compress) =>
    row(
      id,
      figure,
      'MB/s',
      mb(size / run.seconds),
      run,
      limitName,
      mb(limit),
      backupBound(run, compress),
    );
  const minShaLz4 = Math.min(L.sha, L.lz4c);
  const rows = [
    backupRow(
      'backup.full.lz4.1',
      'Full backup, lz4, run 1',
      fullA,
      'min(SHA-256, lz4 compress)',
      minShaLz4,
      L.lz4c,
    ),
    backupRow(
      'backup.full.lz4.2',
      'Full backup, lz4, run 2',
      fullB,
      'min(SHA-256, lz4 compress)',
      minShaLz4,
      L.lz4c,
    ),
    backupRow(
      'backup.full.zstd',
      `Full backup, zstd -${ZSTD_LEVEL}`,
      fullZ,
      'min(SHA-256, zstd compress)',
      Math.min(L.sha, L.zstdc),
      L.zstdc,
    ),
    backupRow(
      'backup.incremental.hash',
      'Incremental backup, 5% changed, found by hashing',
      incHash,
      'SHA-256',
      L.sha,
      L.lz4c,
    ),
    backupRow(
      'backup.incremental.cbt',
      'Incremental backup, 5% changed, changed-block list',
      incCbt,
      'min(SHA-256, lz4 compress) × logical ÷ read',
      (minShaLz4 * size) / Math.max(incCbt.stats.readBytes, 1),
      L.lz4c,
    ),
  ];
  const decoded = nonZero * BLOCK;
  const seqBound = (decode, storedRatio) =>
    mb(size / (decoded / decode + (decoded * storedRatio) / L.seq));
  const seqRow = (id, figure, t, limitName, limit, bound) =>
    row(id, figure, 'MB/s', mb(size / t.seconds), t, limitName, mb(limit), bound);
  rows.push(
    seqRow(
      'read.sequential.cold',
      'Sequential 1 MiB reads, cold',
      seqDefault,
      'lz4 decompress',
      L.lz4d,
      seqBound(L.lz4d, cpuStart.lz4Ratio),
    ),
    seqRow(
      'read.sequential.cold.big-cache',
      'Sequential 1 MiB reads, cold, filling a cache that holds the disk',
      seq.cold,
      'lz4 decompress',
      L.lz4d,
      seqBound(L.lz4d, cpuStart.lz4Ratio),
    ),
    seqRow(
      'read.sequential.warm',
      'Sequential 1 MiB reads, warm (that cache)',
      seq.warm,
      'raw image sequential read',
      L.seq,
      mb(L.seq),
    ),
    seqRow(
      'read.sequential.cold.zstd',
      'Sequential 1 MiB reads, cold, zstd point',
      zstdCold,
      'zstd decompress',
      L.zstdd,
      seqBound(L.zstdd, cpuStart.zstdRatio),
    ),
  );
  const n = options.reads;
  const frameTime = FRAME / L.lz4d;
  const perFrame = 'lz4 decompress, one 64 KiB frame per read';
  // QD1 waits for each step in turn; at QD16 file reads overlap decoding, so the slower wins.
  const coldBound = (depth, decodes) =>
    n /
    (depth === 1
      ? decodes * (frameTime + 1 / L.raw1)
      : Math.max(decodes * frameTime, decodes / L.raw16));
  // The default cache holds 256 frames of the thousands the reads touch: nearly every read decodes.
  rows.push(
    row(
      'read.random.qd1.cold',
      'Random 4 KiB reads, QD1, cold',
      'reads/s',
      n / dflt.cold.seconds,
      dflt.cold,
      perFrame,
      L.lz4d / FRAME,
      coldBound(1, n),
    ),
    row(
      'read.random.qd1.repeat',
      'Random 4 KiB reads, QD1, repeated (default cache)',
      'reads/s',
      n / dflt.warm.seconds,
      dflt.warm,
      perFrame,
      L.lz4d / FRAME,
      coldBound(1, n),
    ),
  );
  for (const depth of DEPTHS) {
    const rawIops = depth === 1 ? L.raw1 : L.raw16;
    const { cold, warm } = random[depth];
    rows.push(
      row(
        `read.random.qd${depth}.cold.big-cache`,
        `Random 4 KiB reads, QD${depth}, cold, filling a cache that holds them`,
        'reads/s',
        n / cold.seconds,
        cold,
        perFrame,
        L.lz4d / FRAME,
        coldBound(depth, frames),
      ),
      row(
        `read.random.qd${depth}.warm`,
        `Random 4 KiB reads, QD${depth}, warm (that cache)`,
        'reads/s',
        n / warm.seconds,
        warm,
        `raw image random 4 KiB reads, QD${depth}`,
        rawIops,
        rawIops,
      ),
    );
  }
  results.rows = rows;
  results.reads = {
    reads: n,
    readBytes: READ,
    distinctFrames: frames,
    repeat,
    sequentialDefaultCache: seqDefault,
    sequential: seq,
    sequentialZstdCold: zstdCold,
    random,
    defaultCache: dflt,
  };

  const nonZeroOriginal = fullA.stats.blocks - fullA.stats.zeroBlocks;
  results.storage = [
    storage('lz4: full', 1, size, nonZeroOriginal * BLOCK, fullA.repoBytes, fullA.stats),
    storage(
      'lz4: full + incremental',
      2,
      2 * size,
      (nonZeroOriginal + nonZero) * BLOCK,
      incHash.repoBytes,
      incHash.stats,
    ),
    storage('zstd: full', 1, size, nonZeroOriginal * BLOCK, fullZ.repoBytes, fullZ.stats),
  ];
  results.image = {
    size,
    blocks,
    bytes: image.bytes,
    zeroBlocks: fullA.stats.zeroBlocks,
    dupBlocks: image.dupBlocks,
    changedBlocks: changes.blocks.length,
    changedBytes: changes.ranges.reduce((a, r) => a + r.length, 0),
  };
}

/**
 * Runs `fn` `n` times; returns the run of median wall time, with every run's timing.
 * @param {number} n
 * @param {() => Promise<import('./measure.mjs').Timing>} fn
 */
async function repeated(n, fn) {
  const runs = [];
  for (let i = 0; i < n; i++) runs.push(await fn());
  return medianTiming(runs);
}

/**
 * The timing of median wall time, with all of them.
 * @param {import('./measure.mjs').Timing[]} runs
 */
function medianTiming(runs) {
  const sorted = [...runs].sort((a, b) => a.seconds - b.seconds);
  return { ...sorted[(sorted.length - 1) >> 1], runs: runs.map((r) => r.seconds) };
}

/**
 * @param {string} name
 * @param {number} value
 * @param {string} unit
 * @param {number} passes
 * @param {number | null} drift
 */
function limitEntry(name, value, unit, passes, drift) {
  return { name, value, unit, passes, drift };
}

/**
 * @param {string} name
 * @param {number} points
 * @param {number} logicalBytes
 * @param {number} nonZeroBytes
 * @param {number} storedBytes
 * @param {import('@ivmr/core').DiskBackupStats} last
 */
function storage(name, points, logicalBytes, nonZeroBytes, storedBytes, last) {
  return {
    name,
    points,
    logicalBytes,
    nonZeroBytes,
    storedBytes,
    storedPerLogical: storedBytes / logicalBytes,
    storedPerNonZero: storedBytes / nonZeroBytes,
    dedupBlocks: last.dedupBlocks,
  };
}

/**
 * Up to SAMPLE_MAX bytes of the image's non-zero blocks, spread evenly over the image.
 * @param {import('./image.mjs').ImageInfo} image
 */
async function sampleBlocks(image) {
  const nonZero = [];
  for (let i = 0; i < image.hashes.length; i++) if (image.hashes[i] !== '') nonZero.push(i);
  const want = Math.min(nonZero.length, SAMPLE_MAX / BLOCK);
  const fd = openSync(image.path, 'r');
  try {
    return Array.from({ length: want }, (_, k) => {
      const b = nonZero[Math.floor((k * nonZero.length) / want)];
      const block = Buffer.alloc(BLOCK);
      readFully(fd, block, b * BLOCK);
      return block;
    });
  } finally {
    closeSync(fd);
  }
}

/** @param {string} text */
function parseSize(text) {
  const m = /^(\d+)([KMG]?)i?B?$/i.exec(text);
  if (!m) throw new Error(`--size: expected e.g. 64M or 1G, got ${text}`);
  const mult = { '': 1, K: 1024, M: MiB, G: 1024 * MiB }[m[2].toUpperCase()];
  const bytes = Number(m[1]) * mult;
  if (bytes < 4 * MiB || bytes % MiB !== 0)
    throw new Error(`--size must be a whole number of MiB, at least 4M; got ${text}`);
  return bytes;
}

/**
 * @param {string} text
 * @param {string} flag
 */
function positiveInt(text, flag) {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${flag} must be a positive integer`);
  return n;
}

/** @param {string} msg */
function log(msg) {
  const t = ((performance.now() - started) / 1000).toFixed(1);
  process.stderr.write(`[${t.padStart(6)} s] ${msg}\n`);
}
