/**
 * The serve benchmark: fio's nfs engine (libnfs) against `ivmr serve` serving a backed-up VM's
 * flat VMDK (one server per store: lz4 and zstd) and against nfs-ganesha serving the same disk as
 * a raw file, side by side in one run, alternating between the servers job by job. Cold runs
 * start from an empty read cache and a dropped page cache; warm runs follow a whole read of the
 * disk. Bytes are checked through every server before any speed counts. See ../README.md,
 * "serve: ivmr serve against nfs-ganesha".
 *
 * Usage: node serve/run.mjs [--size 2G] [--runtime 10] [--ramp 1] [--rounds 3] [--jobs a,b]
 *        [--stores lz4,zstd] [--no-ganesha] [--temps cold,warm] [--seed 1] [--out DIR]
 *        [--tmp DIR] [--fio PATH] [--cpu-prof DIR]
 */

import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, createReadStream, readFileSync, statSync, writeFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { writeImage } from '../core/image.mjs';
import { startCeph } from '../nfs/ceph.mjs';
import {
  Cleanups,
  checkRead,
  describeHang,
  findTools,
  lastLine,
  parseSize,
  pickJobs,
  progressLog,
  serverStats,
  timedRunRetrying,
  verifyWrites,
  wholeNumber,
} from '../nfs/common.mjs';
import { latencyBySecond, timedArgs } from '../nfs/fio.mjs';
import { DEFAULT_CONGESTION_CONTROL, openNamespace } from '../nfs/namespace.mjs';
import { startGanesha } from '../nfs/servers.mjs';
import { backUp, checkBuilt, startServe } from './ivmr.mjs';
import { SERVE_JOBS, TARGETS } from './jobs.mjs';
import { writeResults } from './report.mjs';

const MiB = 1024 * 1024;
const DISK_FILE = 'disk.raw';
const WRITE_FILE = 'write.raw';
const USAGE = `node serve/run.mjs [options]          (npx -y pnpm@10.34.8 bench:serve)

fio (nfs engine) against \`ivmr serve\` (a backed-up VM, one server per store) and nfs-ganesha
(the same disk as a raw file), alternating, cold and warm. Needs root (apt-get on the first
run, a private network namespace, dropping the page cache). The first run builds fio with its
nfs engine (setup/fio-nfs.sh) and installs nfs-ganesha (setup/ganesha.sh).

  --size N[M|G]        size of the test disk (default 2G; at least 128M)
  --runtime S          seconds measured per job, temperature, server and round (default 10)
  --ramp S             seconds of warm-up before each measurement (default 1)
  --rounds N           rounds; each runs every job on every server (default 3)
  --jobs LIST          jobs, comma-separated (default all): ${SERVE_JOBS.map((j) => j.id).join(', ')}
  --stores LIST        ivmr stores: lz4, zstd (local folders), s3 (lz4 on a single-node Ceph
                       RADOS Gateway in the namespace: scripts/ceph/cluster.sh) (default lz4,zstd)
  --temps LIST         cold,warm (default both)
  --no-ganesha         ivmr only (no ratios)
  --seed N             seed of the disk's content (default 1)
  --out DIR            where serve.json, serve.md and serve.svg go (default benchmarks/results)
  --tmp DIR            where the disk, repositories and caches live (default the OS temp dir;
                       needs about 5× the disk size; a disk, not tmpfs, so that cold means cold)
  --fio PATH           a fio built with the nfs engine (default: built by setup/fio-nfs.sh)
  --cpu-prof DIR       run the ivmr servers under node --cpu-prof, profiles into DIR
  --congestion-control NAME
                       TCP congestion control on the namespace's loopback (default cubic, Linux's
                       default; system: this machine's default)
  -h, --help           this text`;

const { values: opts } = parseArgs({
  options: {
    size: { type: 'string', default: '2G' },
    runtime: { type: 'string', default: '10' },
    ramp: { type: 'string', default: '1' },
    rounds: { type: 'string', default: '3' },
    jobs: { type: 'string' },
    stores: { type: 'string', default: 'lz4,zstd' },
    temps: { type: 'string', default: 'cold,warm' },
    'no-ganesha': { type: 'boolean', default: false },
    seed: { type: 'string', default: '1' },
    out: { type: 'string', default: fileURLToPath(new URL('../results', import.meta.url)) },
    tmp: { type: 'string', default: tmpdir() },
    fio: { type: 'string' },
    'cpu-prof': { type: 'string' },
    'congestion-control': { type: 'string', default: DEFAULT_CONGESTION_CONTROL },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (opts.help) {
  console.log(USAGE);
  process.exit(0);
}

const options = {
  size: parseSize(opts.size, '--size', 128 * MiB),
  runtime: wholeNumber(opts.runtime, '--runtime'),
  ramp: wholeNumber(opts.ramp, '--ramp', 0),
  rounds: wholeNumber(opts.rounds, '--rounds'),
  seed: wholeNumber(opts.seed, '--seed'),
};
const jobs = pickJobs(opts.jobs, SERVE_JOBS, '--jobs');
const stores = list(opts.stores, ['lz4', 'zstd', 's3'], '--stores');
const temps = list(opts.temps, ['cold', 'warm'], '--temps');
const withGanesha = !opts['no-ganesha'];
const command = `node serve/run.mjs ${process.argv.slice(2).join(' ')}`.trim();
const started = performance.now();
const log = progressLog(started);
const cleanups = new Cleanups(log);

const results = {
  benchmark: 'ivmr-serve',
  version: 1,
  command,
  date: new Date().toISOString(),
  node: process.versions.node,
  platform: `${process.platform}-${process.arch}`,
  cpu: { model: cpus()[0]?.model ?? 'unknown', count: cpus().length },
  memoryBytes: totalmem(),
  options: { ...options, jobs: jobs.map((j) => j.id), stores, temps, ganesha: withGanesha },
  versions: {},
  seconds: 0,
  disk: null,
  backups: [],
  pageCacheDropped: null,
  checks: [],
  jobs: [],
  targets: [],
  memory: [],
  runs: [],
};

let failed = false;
try {
  await main();
} catch (err) {
  if (!cleanups.interrupted) {
    process.stderr.write(`\nserve benchmark failed: ${err?.stack ?? err}\n`);
    process.exitCode = 1;
  }
} finally {
  await cleanups.run();
}
if (results.jobs.length > 0) {
  results.seconds = (performance.now() - started) / 1000;
  const md = await writeResults(opts.out, results);
  console.log(md);
  log(`wrote serve.json, serve.md and serve.svg into ${opts.out}`);
}
if (failed) {
  process.stderr.write('serve benchmark: some runs hung or failed (see the table)\n');
  process.exitCode = 1;
}

async function main() {
  checkBuilt();
  const tools = findTools({ fio: opts.fio, ganesha: withGanesha, log });
  results.versions = tools.versions;
  const tmp = await mkdtemp(join(resolve(opts.tmp), 'ivmr-bench-serve-'));
  cleanups.push(() => rm(tmp, { recursive: true, force: true }));

  // The disk: the core benchmark's realistic mix (zero, compressible text, random, duplicates).
  const exportDir = join(tmp, 'export');
  await mkdir(exportDir);
  const image = join(exportDir, DISK_FILE);
  log(`writing a ${opts.size} test disk`);
  const info = writeImage(image, options.size, options.seed);
  const expected = await sha256File(image);
  results.disk = {
    size: options.size,
    seed: options.seed,
    sha256: expected,
    bytes: info.bytes,
    zeroBlocks: info.zeroBlocks,
    dupBlocks: info.dupBlocks,
  };
  if (withGanesha && jobs.some((j) => j.file === 'write')) {
    // ganesha's write jobs get their own copy, so that its read file stays the backed-up disk.
    copyFileSync(image, join(exportDir, WRITE_FILE));
  }

  const ns = await openNamespace({ congestionControl: opts['congestion-control'] });
  cleanups.push(async () => ns.close());
  results.congestionControl = ns.congestionControl;
  if (stores.includes('s3')) {
    log('starting a Ceph cluster with its S3 gateway in the namespace (scripts/ceph/cluster.sh)');
    const ceph = await startCeph(ns, join(tmp, 'ceph'));
    cleanups.first(() => ceph.stop());
  }

  const repos = {};
  for (const store of stores) {
    // s3: the lz4 codec, in a bucket of the cluster (reached from inside the namespace).
    const codec = store === 's3' ? 'lz4' : store;
    const repo = store === 's3' ? 's3://ivmr-bench/serve' : join(tmp, `repo-${codec}`);
    log(`ivmr backup --codec ${codec} --repo ${repo}`);
    const b = await backUp({ image, repo, codec: /** @type {'lz4' | 'zstd'} */ (codec), ns });
    const stored = b.point?.disks?.[0]?.stats?.storedBytes ?? null;
    results.backups.push({
      codec: store,
      seconds: b.seconds,
      storedBytes: stored,
      point: b.point?.id,
    });
    repos[store] = repo;
  }

  /** @type {Map<string, any>} */
  const servers = new Map();
  /** @type {Map<string, () => Promise<any>>} */
  const restart = new Map();
  const dirty = new Set();
  for (const codec of stores) {
    const name = `ivmr-${codec}`;
    const start = async () => {
      const old = servers.get(name);
      if (old) await old.stop();
      const s = await startServe(ns, {
        name,
        repo: repos[codec],
        cache: join(tmp, `cache-${codec}`),
        readCacheBytes: options.size,
        fresh: true,
        logFile: join(tmp, `${name}.log`),
        cpuProfDir: opts['cpu-prof'],
      });
      servers.set(name, s);
      dirty.delete(name);
      return s;
    };
    restart.set(name, start);
    log(`starting ${name} (ivmr serve)`);
    await start();
  }
  cleanups.first(async () => {
    for (const s of servers.values()) await s.stop();
  });
  if (withGanesha) {
    log('starting rpcbind and ganesha.nfsd in the namespace');
    const g = await startGanesha(ns, { exportDir, workDir: tmp, ganeshaBin: tools.ganesha });
    cleanups.first(() => g.stop());
    servers.set('ganesha', g);
  }
  const fileOf = (/** @type {string} */ name, /** @type {'read' | 'write'} */ kind) =>
    name === 'ganesha' ? (kind === 'read' ? DISK_FILE : WRITE_FILE) : servers.get(name).diskPath;
  const names = [...servers.keys()];

  // Bytes first (STYLE.md, rule 16): the whole disk through every server, and fio's own
  // write-then-verify through each (ivmr: into the VM's disk, whose overlay is then dropped by a
  // restart with a fresh cache folder; ganesha: into its write copy).
  for (const name of names) {
    const s = servers.get(name);
    log(`${name}: checking every byte of the disk with nfs-cat`);
    await checkRead({
      ns,
      server: s,
      file: fileOf(name, 'read'),
      expected,
      size: options.size,
      checks: results.checks,
    });
    if (jobs.some((j) => j.file === 'write')) {
      await verifyWrites({
        ns,
        fio: tools.fio,
        server: s,
        fileName: fileOf(name, 'write'),
        checks: results.checks,
        log,
        onHang: (h) => {
          log(describeHang(`${name}: fio ${h.job}, ${h.dir} pass`, h, h.attempt < 2));
          if (name !== 'ganesha') log(`${name}'s log ends:\n${tail(join(tmp, `${name}.log`))}`);
        },
      });
      if (name !== 'ganesha') dirty.add(name);
    }
  }

  const deadlineMs = (options.ramp + options.runtime + 60) * 1000;
  const runs = [];
  const broken = new Set();
  for (let round = 1; round <= options.rounds; round++) {
    for (const temp of temps) {
      const mine = jobs.filter((j) => j.temps.includes(temp));
      if (mine.length === 0) continue;
      if (temp === 'warm') {
        for (const name of names) {
          if (dirty.has(name)) await restart.get(name)?.();
          // Twice: ivmr's read cache stores a sequential stream's blocks on their second read
          // (@ivmr/cache streamAdmission), so one pass leaves it cold; ganesha's page cache is
          // warm after the first.
          log(`${name}: warming (whole disk twice through nfs-cat, bytes checked again)`);
          for (const pass of [1, 2]) {
            await checkRead({
              ns,
              server: servers.get(name),
              file: fileOf(name, 'read'),
              expected,
              size: options.size,
              checks: results.checks,
              what: `round ${round}: nfs-cat of the disk before the warm runs (${pass} of 2)`,
            });
          }
        }
        // The cache files' new pages reach the disk now, not during the timed runs: warm means
        // settled, for every server.
        execFileSync('sync');
      }
      for (const job of mine) {
        for (const name of names) {
          const key = `${job.id}/${temp}/${name}`;
          if (broken.has(key)) continue;
          if (temp === 'cold') {
            // An empty read cache and overlay for ivmr; for everyone, no page cache.
            if (name !== 'ganesha') await restart.get(name)?.();
            dropPageCache();
          }
          const s = servers.get(name);
          s.assertRunning();
          const others = [...servers.values()].filter((o) => o !== s);
          // A job with a latency target logs every I/O's latency, to show when its tail happened.
          const latLog = TARGETS.some(
            (t) => t.kind === 'p99Us' && t.job === job.id && t.temp === temp,
          )
            ? join(tmp, 'latency')
            : undefined;
          const args = timedArgs(job, {
            ...options,
            // Cold sequential: one pass at most, so that every byte read is a first read.
            once: temp === 'cold' && job.rw === 'read',
            url: s.exportUrl,
            fileName: fileOf(name, job.file),
            size: options.size,
            latLog,
          });
          const attempts = await timedRunRetrying(
            { ns, fio: tools.fio, args, job, server: s, others, deadlineMs },
            (r) => {
              if (name !== 'ganesha') log(`${name}'s log ends:\n${tail(join(tmp, `${name}.log`))}`);
              log(describeHang(`${key} round ${round}`, r, true));
            },
          );
          const base = { job: job.id, temp, server: name, round };
          for (const r of attempts.slice(0, -1)) runs.push({ ...base, ...r });
          const entry = { ...base, ...attempts.at(-1) };
          if (latLog) {
            if (!entry.hung && !entry.error) entry.bySecond = latencyBySecond(`${latLog}_clat.log`);
            for (const kind of ['lat', 'clat', 'slat'])
              await rm(`${latLog}_${kind}.log`, { force: true });
          }
          runs.push(entry);
          if (job.file === 'write' && name !== 'ganesha') dirty.add(name);
          if (entry.hung || entry.error) {
            if (name !== 'ganesha') log(`${name}'s log ends:\n${tail(join(tmp, `${name}.log`))}`);
            broken.add(key);
            failed = true;
            log(
              entry.hung
                ? describeHang(`${key} round ${round}`, entry, false)
                : `${key} round ${round}: FAILED: ${entry.error}`,
            );
          } else {
            log(
              `${key} round ${round}: ${Math.round(entry.iops)} IOPS, ${(entry.bytesPerSecond / 1e6).toFixed(0)} MB/s, p50 ${entry.p50Us.toFixed(0)} µs, p99 ${entry.p99Us.toFixed(0)} µs, server ${(entry.serverCpuSeconds / entry.wallSeconds).toFixed(2)} cores`,
            );
          }
        }
      }
      for (const name of names) {
        const m = servers.get(name).memory?.();
        if (m) results.memory.push({ server: name, round, after: temp, ...m });
      }
    }
  }
  results.runs = runs;
  results.jobs = summarize(runs, names);
  results.targets = evaluate(results.jobs);
  if (stores.includes('s3')) {
    // The S3 store's peer: S3Store's own GETs against the same gateway, nothing on top.
    log('raw S3 GETs against the gateway (serve/s3-gets.mjs)');
    const [cmd, ...args] = ns.argv([
      process.execPath,
      fileURLToPath(new URL('./s3-gets.mjs', import.meta.url)),
      repos.s3,
      String(Math.max(2, options.runtime)),
    ]);
    results.s3Gets = JSON.parse(lastLine(execFileSync(cmd, args, { encoding: 'utf8' })));
  }
}

/**
 * Per job and temperature: each server's median over its rounds (the last attempt of each), and
 * ivmr ÷ ganesha per store, at the same temperature and against ganesha warm.
 * @param {any[]} runs
 * @param {string[]} names
 */
function summarize(runs, names) {
  const out = [];
  for (const job of jobs) {
    for (const temp of job.temps.filter((t) => temps.includes(t))) {
      const final = runs.filter(
        (r) =>
          r.job === job.id && r.temp === temp && !(r.hung && r.attempt === 1 && hasRetry(runs, r)),
      );
      const servers = {};
      for (const name of names) servers[name] = serverStats(final.filter((r) => r.server === name));
      const ratios = {};
      const roundRatios = {};
      const g = servers.ganesha;
      for (const name of names.filter((n) => n !== 'ganesha')) {
        const x = servers[name];
        const ok = g && !g.error && !g.hung && !x.error && !x.hung;
        ratios[name] = ok ? x.iops / g.iops : null;
        roundRatios[name] = [];
        for (let round = 1; round <= options.rounds && ok; round++) {
          const a = final.find((r) => r.server === name && r.round === round);
          const b = final.find((r) => r.server === 'ganesha' && r.round === round);
          if (a && b) roundRatios[name].push(a.iops / b.iops);
        }
      }
      out.push({ ...job, temp, servers, ratios, roundRatios });
    }
  }
  return out;
}

/**
 * @param {any[]} runs
 * @param {any} r
 */
function hasRetry(runs, r) {
  return runs.some(
    (x) =>
      x !== r &&
      x.job === r.job &&
      x.temp === r.temp &&
      x.server === r.server &&
      x.round === r.round,
  );
}

/**
 * The issue's targets against the summaries.
 * @param {any[]} summaries
 */
function evaluate(summaries) {
  const out = [];
  for (const t of TARGETS) {
    const s = summaries.find((x) => x.id === t.job && x.temp === t.temp);
    if (!s) continue;
    for (const store of t.stores.filter((x) => stores.includes(x))) {
      const name = `ivmr-${store}`;
      const mine = s.servers[name];
      let value = null;
      if (t.kind === 'ratio') value = s.ratios[name] ?? null;
      if (t.kind === 'p99Us') value = mine && !mine.error && !mine.hung ? mine.p99Us : null;
      if (t.kind === 'ratioToWarm') {
        const warm = summaries.find((x) => x.id === t.job && x.temp === 'warm')?.servers.ganesha;
        value =
          warm && !warm.error && !warm.hung && mine && !mine.error ? mine.iops / warm.iops : null;
      }
      const met =
        value === null ? null : t.sense === 'at-least' ? value >= t.value : value <= t.value;
      out.push({ ...t, store, server: name, measured: value, met });
    }
  }
  return out;
}

/**
 * Drops the kernel's page cache (clean pages), so that the next read comes from the disk. Needs
 * root; where it cannot, the run records that "cold" kept the page cache.
 */
function dropPageCache() {
  try {
    execFileSync('sync');
    writeFileSync('/proc/sys/vm/drop_caches', '3');
    if (results.pageCacheDropped === null) results.pageCacheDropped = true;
  } catch (err) {
    if (results.pageCacheDropped !== false) log(`cannot drop the page cache: ${err.message}`);
    results.pageCacheDropped = false;
  }
}

/**
 * The last lines of a log file.
 * @param {string} path
 */
function tail(path) {
  try {
    return readFileSync(path, 'utf8').trim().split('\n').slice(-8).join('\n');
  } catch {
    return '(no log)';
  }
}

/** @param {string} path */
async function sha256File(path) {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 4 * MiB })) hash.update(chunk);
  if (statSync(path).size !== options.size) throw new Error(`${path}: wrong size`);
  return hash.digest('hex');
}

/**
 * @param {string} text
 * @param {string[]} allowed
 * @param {string} flag
 */
function list(text, allowed, flag) {
  const items = text
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  for (const x of items) {
    if (!allowed.includes(x))
      throw new Error(`${flag}: unknown ${x}; one of ${allowed.join(', ')}`);
  }
  if (items.length === 0) throw new Error(`${flag}: empty`);
  return items;
}
