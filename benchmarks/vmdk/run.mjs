/**
 * Sparse VMDK read throughput: @ivmr/vmdk's SparseVmdk reading a monolithicSparse and a
 * streamOptimized file from start to end, against `qemu-img convert` of the same file to raw in
 * the same run. Reads the built package (packages/vmdk/dist). See ../README.md, "vmdk".
 *
 * Usage: node vmdk/run.mjs [--size 256M] [--repeat 3] [--seed 1] [--out DIR] [--tmp DIR]
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, open, rm, stat } from 'node:fs/promises';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs, promisify } from 'node:util';
import { deflateSync, inflateSync } from 'node:zlib';
import { SparseVmdk } from '@ivmr/vmdk';
import { runQueue, timed } from '../core/measure.mjs';
import { writeImage } from './image.mjs';
import { markdown, writeResults } from './report.mjs';

const execFileAsync = promisify(execFile);
const MiB = 1024 * 1024;
const CHUNK = MiB;
const GRAIN = 64 * 1024;
const KINDS = ['monolithicSparse', 'streamOptimized'];
const DEPTHS = [1, 4];

const { values: opts } = parseArgs({
  options: {
    size: { type: 'string', default: '256M' },
    repeat: { type: 'string', default: '3' },
    seed: { type: 'string', default: '1' },
    out: { type: 'string', default: fileURLToPath(new URL('../results', import.meta.url)) },
    tmp: { type: 'string', default: tmpdir() },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (opts.help) {
  console.log('node vmdk/run.mjs [--size 256M] [--repeat 3] [--seed 1] [--out DIR] [--tmp DIR]');
  process.exit(0);
}
const options = {
  size: parseSize(opts.size),
  repeat: positiveInt(opts.repeat, '--repeat'),
  seed: positiveInt(opts.seed, '--seed'),
};
const log = (/** @type {string} */ m) => process.stderr.write(`vmdk bench: ${m}\n`);

const results = {
  benchmark: 'ivmr-vmdk',
  version: 1,
  command: `node vmdk/run.mjs ${process.argv.slice(2).join(' ')}`.trim(),
  date: new Date().toISOString(),
  node: process.versions.node,
  qemu: '',
  platform: `${process.platform}-${process.arch}`,
  cpu: { model: cpus()[0]?.model ?? 'unknown', count: cpus().length },
  memory: totalmem(),
  options,
  seconds: 0,
  image: null,
  files: {},
  limits: {},
  rows: [],
  load: null,
};

const started = performance.now();
const tmp = await mkdtemp(join(opts.tmp, 'ivmr-vmdk-bench-'));
try {
  results.qemu = (await execFileAsync('qemu-img', ['--version'])).stdout.split('\n')[0];
  results.load = await timed(() => benchmark(tmp));
} finally {
  await rm(tmp, { recursive: true, force: true });
}
results.seconds = (performance.now() - started) / 1000;
await writeResults(opts.out, 'vmdk', results);
console.log(markdown(results));
log(`wrote ${join(opts.out, 'vmdk.json')} and vmdk.md`);

/** @param {string} dir */
async function benchmark(dir) {
  const { size, seed, repeat } = options;
  const imagePath = join(dir, 'disk.raw');
  log(`writing a ${size / MiB} MiB image (seed ${seed})`);
  results.image = writeImage(imagePath, size, seed);

  for (const kind of KINDS) {
    const path = join(dir, `${kind}.vmdk`);
    const t = await qemu([
      'convert',
      '-f',
      'raw',
      '-O',
      'vmdk',
      '-o',
      `subformat=${kind}`,
      imagePath,
      path,
    ]);
    results.files[kind] = { bytes: (await stat(path)).size, createSeconds: t.seconds };
  }

  log('limits: page-cache reads of the raw image, zlib inflate of its grains');
  results.limits.rawRead = await rawReadRate(imagePath, size, repeat);
  results.limits.inflate = inflateRate(imagePath, size, repeat);

  for (const kind of KINDS) {
    const path = join(dir, `${kind}.vmdk`);
    const outPath = join(dir, `${kind}.out.raw`);
    log(`${kind}: qemu-img convert to a raw file and to null-co (${repeat} times each)`);
    const toFile = [];
    const toNull = [];
    for (let i = 0; i < repeat; i++) {
      await rm(outPath, { force: true });
      toFile.push(await qemu(['convert', '-f', 'vmdk', '-O', 'raw', path, outPath]));
      toNull.push(
        await qemu([
          'convert',
          '-n',
          '-f',
          'vmdk',
          path,
          '--target-image-opts',
          `driver=null-co,size=${size}`,
        ]),
      );
    }
    log(`${kind}: checking the bytes of qemu-img's raw output and of SparseVmdk against the image`);
    await verify(imagePath, outPath, path, size);
    await rm(outPath, { force: true });

    for (const depth of DEPTHS) {
      log(`${kind}: SparseVmdk sequential 1 MiB reads, QD${depth} (${repeat} times)`);
      const passes = [];
      for (let i = 0; i < repeat; i++) passes.push(await readPass(path, size, depth));
      const limit =
        kind === 'streamOptimized'
          ? { name: 'zlib inflate of the grains (in memory)', value: results.limits.inflate }
          : { name: 'raw image sequential read (page cache)', value: results.limits.rawRead };
      results.rows.push(
        row(
          `vmdk.${kind}.qd${depth}`,
          `${kind}, sequential 1 MiB reads, QD${depth}`,
          size,
          passes,
          toFile,
          toNull,
          limit,
        ),
      );
    }
  }
}

/**
 * Runs qemu-img under bash's `time`, which counts the child's CPU time too.
 * @param {string[]} args
 * @returns {Promise<{ seconds: number, cpuSeconds: number }>}
 */
async function qemu(args) {
  const script = 'TIMEFORMAT="%R %U %S"; time qemu-img "$@" >/dev/null';
  const { stderr } = await execFileAsync('bash', ['-c', script, 'bash', ...args], {
    maxBuffer: 1 << 20,
  });
  const [real, user, sys] = stderr.trim().split('\n').pop().split(' ').map(Number);
  return { seconds: real, cpuSeconds: user + sys };
}

/** One timed pass of SparseVmdk: open (cold caches), read every byte in order, close. */
async function readPass(path, size, depth) {
  const buffers = Array.from({ length: depth }, () => new Uint8Array(CHUNK));
  const chunks = Math.ceil(size / CHUNK);
  return timed(async () => {
    const vmdk = await SparseVmdk.open(path);
    try {
      await runQueue(chunks, depth, (i) => {
        const at = i * CHUNK;
        return vmdk.read(at, Math.min(CHUNK, size - at), buffers[i % depth]).then(() => undefined);
      });
    } finally {
      await vmdk.close();
    }
  });
}

/** Throws unless qemu-img's output and every SparseVmdk read equal the image (before any timing). */
async function verify(imagePath, outPath, vmdkPath, size) {
  const image = await open(imagePath, 'r');
  const out = await open(outPath, 'r');
  const vmdk = await SparseVmdk.open(vmdkPath);
  try {
    if ((await out.stat()).size !== size)
      throw new Error(`qemu-img wrote ${outPath} with the wrong size`);
    const a = Buffer.alloc(CHUNK);
    const b = Buffer.alloc(CHUNK);
    for (let at = 0; at < size; at += CHUNK) {
      const n = Math.min(CHUNK, size - at);
      await image.read(a, 0, n, at);
      await out.read(b, 0, n, at);
      if (!a.subarray(0, n).equals(b.subarray(0, n)))
        throw new Error(`qemu-img output differs at ${at}`);
      const got = await vmdk.read(at, n);
      if (!a.subarray(0, n).equals(got)) throw new Error(`SparseVmdk ${vmdkPath} differs at ${at}`);
    }
  } finally {
    await vmdk.close();
    await out.close();
    await image.close();
  }
}

/** Best pass, in logical bytes/s, of reading the raw image with 1 MiB reads (page cache). */
async function rawReadRate(path, size, repeat) {
  const fh = await open(path, 'r');
  const buf = Buffer.alloc(CHUNK);
  const rates = [];
  try {
    for (let i = 0; i < repeat + 1; i++) {
      const t = performance.now();
      for (let at = 0; at < size; at += CHUNK)
        await fh.read(buf, 0, Math.min(CHUNK, size - at), at);
      rates.push(size / ((performance.now() - t) / 1000));
    }
  } finally {
    await fh.close();
  }
  return Math.max(...rates);
}

/**
 * Best pass, in logical bytes/s of the whole disk, of inflating every non-zero 64 KiB grain of
 * the image from memory with zlib (deflated at zlib's default level, as qemu-img writes them;
 * inflated into one output chunk, as SparseVmdk does): the decompression a streamOptimized read
 * cannot avoid. Zero grains cost nothing.
 */
function inflateRate(path, size, repeat) {
  const image = readFileSync(path);
  const grains = [];
  for (let at = 0; at < size; at += GRAIN) {
    const g = image.subarray(at, Math.min(size, at + GRAIN));
    if (g.some((x) => x !== 0)) grains.push(deflateSync(g));
  }
  const rates = [];
  for (let i = 0; i < repeat + 1; i++) {
    const t = performance.now();
    for (const z of grains) inflateSync(z, { chunkSize: GRAIN + 1024 });
    rates.push(size / ((performance.now() - t) / 1000));
  }
  return Math.max(...rates);
}

/** A result row; rates in bytes/s of the logical disk. */
function row(id, figure, size, passes, toFile, toNull, limit) {
  // The median pass (the lower middle one for an even count), as a whole timing.
  const mid = (/** @type {{ seconds: number }[]} */ xs) =>
    [...xs].sort((a, b) => a.seconds - b.seconds)[Math.floor((xs.length - 1) / 2)];
  const ours = mid(passes);
  const file = mid(toFile);
  const nul = mid(toNull);
  const value = size / ours.seconds;
  return {
    id,
    figure,
    unit: 'MB/s',
    value: value / 1e6,
    seconds: ours.seconds,
    cpuSeconds: ours.cpuSeconds,
    othersCpuSeconds: ours.othersCpuSeconds,
    passes: passes.map((p) => size / p.seconds / 1e6),
    qemuToFile: {
      value: size / file.seconds / 1e6,
      seconds: file.seconds,
      cpuSeconds: file.cpuSeconds,
    },
    qemuToNull: {
      value: size / nul.seconds / 1e6,
      seconds: nul.seconds,
      cpuSeconds: nul.cpuSeconds,
    },
    ratioToFile: file.seconds / ours.seconds,
    ratioToNull: nul.seconds / ours.seconds,
    limit: { name: limit.name, value: limit.value / 1e6 },
    limitRatio: value / limit.value,
  };
}

/** @param {string} s */
function parseSize(s) {
  const m = /^(\d+)([KMG]?)$/i.exec(s);
  if (!m) throw new Error(`--size: expected N[K|M|G], got ${s}`);
  const mult = { '': 1, K: 1024, M: MiB, G: 1024 * MiB }[m[2].toUpperCase()];
  const size = Number(m[1]) * mult;
  if (size < MiB || size % GRAIN !== 0) throw new Error('--size: at least 1M, a multiple of 64K');
  return size;
}

/** @param {string} s @param {string} name */
function positiveInt(s, name) {
  const n = Number(s);
  if (!Number.isInteger(n) || n < 1)
    throw new Error(`${name}: expected a whole number >= 1, got ${s}`);
  return n;
}
