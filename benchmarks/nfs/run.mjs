/**
 * The NFS benchmark: fio's nfs engine (libnfs) against ivmr's NfsServer (the built @ivmr/nfs,
 * serving a file from memory in a child process) and against nfs-ganesha (VFS FSAL, serving a
 * file of the same size and bytes from tmpfs), side by side in the same run, alternating
 * between the two. Bytes are checked through each server before any speed is measured. See
 * ../README.md, "NFS benchmark".
 *
 * Usage: node nfs/run.mjs [--size 1G] [--write-size 256M] [--runtime 10] [--ramp 1] [--rounds 2]
 *        [--jobs a,b] [--servers ivmr,ganesha] [--seed 1] [--out DIR] [--tmp DIR] [--fio PATH]
 *        [--cpu-prof DIR]
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import {
  Cleanups,
  checkRead,
  describeHang,
  findTools,
  parseSize,
  pickJobs,
  progressLog,
  serverStats,
  timedRunRetrying,
  verifyWrites,
  wholeNumber,
} from './common.mjs';
import { generate } from './content.mjs';
import { JOBS, timedArgs, VERIFY_JOBS } from './fio.mjs';
import { DEFAULT_CONGESTION_CONTROL, openNamespace } from './namespace.mjs';
import { markdown, writeResults } from './report.mjs';
import {
  ganeshaConfig,
  READ_FILE,
  startGanesha,
  startIvmr,
  WRITE_FILE,
  warm,
  writeExport,
} from './servers.mjs';

const MiB = 1024 * 1024;
const USAGE = `node nfs/run.mjs [options]          (npx -y pnpm@10.34.8 bench:nfs)

fio (nfs engine) against ivmr's NfsServer and nfs-ganesha, alternating, same file and bytes.
Needs root (apt-get on the first run, a private network namespace for rpcbind and the servers).
The first run builds fio with its nfs engine (setup/fio-nfs.sh, about a minute) and installs
nfs-ganesha (setup/ganesha.sh); later runs reuse them.

  --size N[K|M|G]      size of the read file (default 1G)
  --write-size N       size of the file the write job writes into (default 256M)
  --runtime S          seconds measured per job, server and round (default 10)
  --ramp S             seconds of warm-up before each measurement (default 1)
  --rounds N           rounds per job; each round runs ivmr, then ganesha (default 2)
  --jobs LIST          jobs to run, comma-separated (default all): ${JOBS.map((j) => j.id).join(', ')}
  --servers LIST       ivmr,ganesha (default both; one alone gives no ratio)
  --seed N             seed of the file's content (default 1)
  --out DIR            where nfs.json and nfs.md go (default benchmarks/results)
  --tmp DIR            where ganesha's export lives (default /dev/shm, else the OS temp dir)
  --fio PATH           a fio built with the nfs engine (default: built by setup/fio-nfs.sh)
  --cpu-prof DIR       run the ivmr server under node --cpu-prof, profiles into DIR
  --congestion-control NAME
                       TCP congestion control on the namespace's loopback (default cubic, Linux's
                       default; system: this machine's default)
  -h, --help           this text`;

const { values: opts } = parseArgs({
  options: {
    size: { type: 'string', default: '1G' },
    'write-size': { type: 'string', default: '256M' },
    runtime: { type: 'string', default: '10' },
    ramp: { type: 'string', default: '1' },
    rounds: { type: 'string', default: '2' },
    jobs: { type: 'string' },
    servers: { type: 'string', default: 'ivmr,ganesha' },
    seed: { type: 'string', default: '1' },
    out: { type: 'string', default: fileURLToPath(new URL('../results', import.meta.url)) },
    tmp: { type: 'string', default: existsSync('/dev/shm') ? '/dev/shm' : tmpdir() },
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
  size: parseSize(opts.size, '--size'),
  writeSize: parseSize(opts['write-size'], '--write-size'),
  runtime: wholeNumber(opts.runtime, '--runtime'),
  ramp: wholeNumber(opts.ramp, '--ramp', 0),
  rounds: wholeNumber(opts.rounds, '--rounds'),
  seed: wholeNumber(opts.seed, '--seed'),
};
const jobs = pickJobs(opts.jobs, JOBS, '--jobs');
const serverNames = /** @type {('ivmr' | 'ganesha')[]} */ (
  opts.servers.split(',').map((s) => s.trim())
);
for (const s of serverNames) {
  if (s !== 'ivmr' && s !== 'ganesha') throw new Error(`--servers: unknown server ${s}`);
}
const maxVerify = Math.max(...VERIFY_JOBS.map((v) => v.size));
if (options.writeSize < maxVerify) {
  throw new Error(`--write-size must be at least ${maxVerify / MiB}M (the verification jobs)`);
}
const command = `node nfs/run.mjs ${process.argv.slice(2).join(' ')}`.trim();
const started = performance.now();

const log = progressLog(started);
const cleanups = new Cleanups(log);

const results = {
  benchmark: 'ivmr-nfs',
  version: 1,
  command,
  date: new Date().toISOString(),
  node: process.versions.node,
  platform: `${process.platform}-${process.arch}`,
  cpu: { model: cpus()[0]?.model ?? 'unknown', count: cpus().length },
  options: { ...options, jobs: jobs.map((j) => j.id), servers: serverNames },
  versions: {},
  seconds: 0,
  checks: [],
  jobs: [],
  runs: [],
  ganeshaConfig: null,
};

let failed = false;
try {
  await main();
} catch (err) {
  if (!cleanups.interrupted) {
    process.stderr.write(`\nnfs benchmark failed: ${err?.message ?? err}\n`);
    process.exitCode = 1;
  }
} finally {
  await cleanups.run();
}
if (results.jobs.length > 0) {
  results.seconds = (performance.now() - started) / 1000;
  await writeResults(opts.out, results);
  console.log(markdown(results));
  log(`wrote ${join(opts.out, 'nfs.json')} and nfs.md`);
}
if (failed) {
  process.stderr.write('nfs benchmark: some runs hung or failed (see the table)\n');
  process.exitCode = 1;
}

async function main() {
  const tools = findTools({ fio: opts.fio, ganesha: serverNames.includes('ganesha'), log });
  results.versions = tools.versions;
  const tmp = await mkdtemp(join(resolve(opts.tmp), 'ivmr-bench-nfs-'));
  cleanups.push(() => rm(tmp, { recursive: true, force: true }));
  const ns = await openNamespace({ congestionControl: opts['congestion-control'] });
  cleanups.push(async () => ns.close());
  results.congestionControl = ns.congestionControl;

  /** @type {import('./servers.mjs').Server[]} */
  const servers = [];
  let expected;
  if (serverNames.includes('ganesha')) {
    const exportDir = join(tmp, 'export');
    log(`writing ${opts.size} of content and ${opts['write-size']} of zeros into ${exportDir}`);
    expected = await writeExport(exportDir, options);
    warm(join(exportDir, READ_FILE));
    log('starting rpcbind and ganesha.nfsd in the namespace');
    const g = await startGanesha(ns, { exportDir, workDir: tmp, ganeshaBin: tools.ganesha });
    cleanups.first(() => g.stop());
    results.ganeshaConfig = ganeshaConfig(exportDir, '<plugins>');
    servers.push(g);
  } else {
    const hash = createHash('sha256');
    generate(options.size, options.seed, (chunk) => hash.update(chunk));
    expected = hash.digest('hex');
  }
  if (serverNames.includes('ivmr')) {
    log('starting the ivmr server (child process, memory-backed)');
    const s = await startIvmr(ns, { ...options, cpuProfDir: opts['cpu-prof'] });
    cleanups.first(() => s.stop());
    servers.unshift(s);
  }

  // Bytes first (STYLE.md, rule 16): every byte of the read file through each server, and fio's
  // own write-then-verify in the shapes of the timed jobs.
  for (const s of servers) {
    log(`${s.name}: checking every byte of ${READ_FILE} with nfs-cat`);
    await checkRead({
      ns,
      server: s,
      file: READ_FILE,
      expected,
      size: options.size,
      checks: results.checks,
    });
    await verifyWrites({
      ns,
      fio: tools.fio,
      server: s,
      fileName: WRITE_FILE,
      checks: results.checks,
      log,
      onHang: (h) => log(describeHang(`${s.name}: fio ${h.job}, ${h.dir} pass`, h, h.attempt < 2)),
    });
  }

  const deadlineMs = (options.ramp + options.runtime + 30) * 1000;
  const runs = [];
  const hung = new Set();
  for (const job of jobs) {
    for (let round = 1; round <= options.rounds; round++) {
      for (const s of servers) {
        const key = `${job.id}/${s.name}`;
        if (hung.has(key)) continue;
        s.assertRunning();
        const others = servers.filter((o) => o !== s);
        const size = job.file === 'read' ? options.size : options.writeSize;
        const file = job.file === 'read' ? READ_FILE : WRITE_FILE;
        const args = timedArgs(job, { ...options, url: s.exportUrl, fileName: file, size });
        const attempts = await timedRunRetrying(
          { ns, fio: tools.fio, args, job, server: s, others, deadlineMs },
          (r) => log(describeHang(`${key} round ${round}`, r, true)),
        );
        const base = { job: job.id, server: s.name, round };
        for (const r of attempts.slice(0, -1)) runs.push({ ...base, ...r, superseded: true });
        const entry = { ...base, ...attempts.at(-1) };
        const f = entry;
        const wall = entry.wallSeconds;
        const serverCpu = entry.serverCpuSeconds;
        runs.push(entry);
        if (entry.hung) {
          hung.add(key);
          failed = true;
          log(describeHang(`${key} round ${round}`, entry, false));
        } else if (f.error) {
          failed = true;
          log(`${key} round ${round}: FAILED: ${f.error}`);
        } else {
          log(
            `${key} round ${round}: ${Math.round(f.iops)} IOPS, ${(f.bytesPerSecond / 1e6).toFixed(0)} MB/s, p50 ${f.p50Us.toFixed(0)} µs, p99 ${f.p99Us.toFixed(0)} µs, server ${(serverCpu / wall).toFixed(2)} cores`,
          );
        }
      }
    }
  }
  results.runs = runs;
  results.jobs = jobs.map((job) => summarize(job, runs, servers));
}

/**
 * Per job: each server's median over its rounds, and the ratio ivmr ÷ ganesha.
 * @param {import('./fio.mjs').Job} job
 * @param {any[]} runs
 * @param {import('./servers.mjs').Server[]} servers
 */
function summarize(job, runs, servers) {
  const byServer = {};
  for (const s of servers) {
    const mine = runs.filter((r) => r.job === job.id && r.server === s.name && !r.superseded);
    byServer[s.name] = serverStats(mine);
  }
  const a = byServer.ivmr;
  const b = byServer.ganesha;
  const ok = (x) => x && !x.hung && !x.error;
  const ratio = ok(a) && ok(b) ? a.iops / b.iops : null;
  const roundRatios = [];
  if (ratio !== null) {
    for (let round = 1; round <= options.rounds; round++) {
      const of = (name) =>
        runs.find(
          (r) => r.job === job.id && r.server === name && r.round === round && !r.superseded,
        );
      const x = of('ivmr');
      const y = of('ganesha');
      if (x && y) roundRatios.push(x.iops / y.iops);
    }
  }
  return { ...job, servers: byServer, ratio, roundRatios };
}
