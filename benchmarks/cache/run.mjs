/**
 * The cache benchmark: random 4 KiB write IOPS of the write overlay (a flush every 64 writes)
 * and read-cache hit throughput, each divided by the raw speed of the same file system measured
 * in the same run (fio psync on a plain file; a node FileHandle loop where fio is missing).
 * Runs the built package (`packages/cache/dist`). See ../README.md, section "Cache".
 *
 * Usage: node cache/run.mjs [--size 256M] [--seconds 5] [--seed 1] [--tmp DIR] [--out DIR]
 */
import { execFileSync } from 'node:child_process';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { overlayWriteRate } from './overlay-writes.mjs';
import { Prng } from './prng.mjs';
import { fioJob, hasFio, nodeJob } from './raw-limits.mjs';
import { filledCache, hitRate } from './read-cache-hits.mjs';
import { markdown, row, writeResults } from './report.mjs';

const { values: opts } = parseArgs({
  options: {
    size: { type: 'string', default: '256M' },
    seconds: { type: 'string', default: '5' },
    seed: { type: 'string', default: '1' },
    tmp: { type: 'string', default: tmpdir() },
    out: { type: 'string', default: fileURLToPath(new URL('../results', import.meta.url)) },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (opts.help) {
  process.stdout.write(
    'node cache/run.mjs [--size 256M] [--seconds 5] [--seed 1] [--tmp DIR] [--out DIR]\n',
  );
  process.exit(0);
}
const MiB = 1 << 20;
const size = Number.parseInt(opts.size, 10) * { K: 1024, M: MiB, G: 1024 * MiB }[opts.size.at(-1)];
if (!Number.isSafeInteger(size) || size < 16 * MiB) {
  throw new Error(`--size ${opts.size}: a whole number of K, M or G, at least 16M`);
}
const seconds = Number(opts.seconds);
const seed = Number(opts.seed);
const log = (msg) => process.stderr.write(`${msg}\n`);

const dir = await mkdtemp(join(opts.tmp, 'ivmr-cache-bench-'));
try {
  const fio = await hasFio();
  const rawFile = join(dir, 'raw.img');
  await (await open(rawFile, 'w')).close();
  const rng = new Prng(seed);
  const readSecs = Math.max(0.5, seconds / 2);
  /** The pattern by fio (when installed) and by a node FileHandle loop, on the plain file. */
  const limit = async (job) => ({
    fio: fio ? await fioJob({ file: rawFile, size, ...job }) : null,
    node: await nodeJob({ file: rawFile, size, rng, ...job }),
  });
  log(`raw limits (${fio ? 'fio and ' : ''}a node FileHandle loop)…`);
  const rawWrite = await limit({ rw: 'randwrite', bs: 4096, seconds, syncEvery: 64 });
  const rawRead4k = await limit({ rw: 'randread', bs: 4096, seconds: readSecs });
  const rawRead64k = await limit({ rw: 'randread', bs: 65536, seconds: readSecs });
  const iops = (l) => ({ fio: l.fio?.iops ?? null, node: l.node.iops });
  const mbps = (l) => ({
    fio: l.fio ? l.fio.bytesPerSec / 1e6 : null,
    node: l.node.bytesPerSec / 1e6,
  });

  const rows = [];
  for (const depth of [1, 16]) {
    log(`overlay writes, QD${depth}…`);
    const w = await overlayWriteRate({ dir, size, seconds, depth, seed });
    rows.push(
      row(
        `Overlay random 4 KiB writes, flush every 64, QD${depth}`,
        'IOPS',
        w.iops,
        { pattern: 'random 4 KiB writes, fdatasync every 64, QD1', ...iops(rawWrite) },
        w.timing,
      ),
    );
  }

  log('read cache: fill…');
  const bytes = new Prng(seed + 7).fill(new Uint8Array(size));
  const { cache, fill } = await filledCache({ dir, bytes });
  rows.push(
    row(
      'Read cache fill, sequential 1 MiB reads of an in-memory source',
      'MB/s',
      size / fill.seconds / 1e6,
      {},
      fill,
    ),
  );
  const hitFigures = [
    { bs: 4096, count: 40_000, depth: 1, limit: rawRead4k },
    { bs: 4096, count: 40_000, depth: 16, limit: rawRead4k },
    { bs: 65536, count: 2_000, depth: 1, limit: rawRead64k },
  ];
  for (const f of hitFigures) {
    log(`read cache hits, ${f.bs / 1024} KiB QD${f.depth}…`);
    const h = await hitRate({ cache, bytes, ...f, seed: seed + f.depth + f.bs });
    const small = f.bs === 4096;
    rows.push(
      row(
        `Read cache hits, random ${f.bs / 1024} KiB, QD${f.depth}`,
        small ? 'reads/s' : 'MB/s',
        small ? h.readsPerSec : h.bytesPerSec / 1e6,
        {
          pattern: `random ${f.bs / 1024} KiB reads from the page cache, QD1`,
          ...(small ? iops(f.limit) : mbps(f.limit)),
        },
        h.timing,
      ),
    );
  }
  await cache.close();

  let tmpFs = '';
  try {
    tmpFs = execFileSync('df', ['--output=source,fstype', dir], { encoding: 'utf8' })
      .trim()
      .split('\n')[1]
      .replace(/\s+/, ' (')
      .concat(')');
  } catch {
    tmpFs = 'unknown file system';
  }
  const results = {
    date: new Date().toISOString(),
    node: process.versions.node,
    cpu: cpus()[0]?.model ?? 'unknown',
    cores: cpus().length,
    tmpFs: `temp dir on ${tmpFs}`,
    sizeMiB: size / MiB,
    seconds,
    seed,
    fioNote: fio
      ? 'fio 3 with the psync engine (one synchronous call at a time), and a node FileHandle loop (one awaited call at a time).'
      : 'fio is not installed (`apt-get install fio`), so only a node FileHandle loop (one awaited call at a time).',
    limits: { rawWrite, rawRead4k, rawRead64k },
    rows,
  };
  await writeResults(opts.out, results);
  process.stdout.write(markdown(results));
} finally {
  await rm(dir, { recursive: true, force: true });
}
