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
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { machineBusySeconds, median } from '../core/measure.mjs';
import { generate } from './content.mjs';
import {
  FIO_SPAWN,
  figures,
  JOBS,
  runFio,
  timedArgs,
  VERIFY_JOBS,
  verifyArgs,
  verifyResult,
} from './fio.mjs';
import { openNamespace } from './namespace.mjs';
import { reapedChildrenCpuSeconds } from './processes.mjs';
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
const pipes = /** @type {const} */ (['ignore', 'pipe', 'pipe']);
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
  runtime: positiveInt(opts.runtime, '--runtime'),
  ramp: nonNegativeInt(opts.ramp, '--ramp'),
  rounds: positiveInt(opts.rounds, '--rounds'),
  seed: positiveInt(opts.seed, '--seed'),
};
const jobs = pick(opts.jobs, JOBS, '--jobs');
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
const here = fileURLToPath(new URL('.', import.meta.url));

const cleanups = [];
let interrupted = false;
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => {
    interrupted = true;
    log(`${signal}: stopping`);
    cleanup().finally(() => process.exit(130));
  });
}

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
  if (!interrupted) {
    process.stderr.write(`\nnfs benchmark failed: ${err?.message ?? err}\n`);
    process.exitCode = 1;
  }
} finally {
  await cleanup();
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
  const tools = setup();
  results.versions = tools.versions;
  const tmp = await mkdtemp(join(resolve(opts.tmp), 'ivmr-bench-nfs-'));
  cleanups.push(() => rm(tmp, { recursive: true, force: true }));
  const ns = await openNamespace();
  cleanups.push(async () => ns.close());

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
    cleanups.unshift(() => g.stop());
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
    cleanups.unshift(() => s.stop());
    servers.unshift(s);
  }

  // Bytes first (STYLE.md, rule 16): every byte of the read file through each server, and fio's
  // own write-then-verify in the shapes of the timed jobs.
  for (const s of servers) {
    log(`${s.name}: checking every byte of ${READ_FILE} with nfs-cat`);
    const got = await catHash(ns, s.fileUrl(READ_FILE), 120_000);
    const ok = got.hash === expected && got.bytes === options.size;
    results.checks.push({ server: s.name, what: `nfs-cat ${READ_FILE} sha256`, ok, ...got });
    if (!ok) {
      throw new Error(
        `${s.name} served wrong bytes: ${got.bytes} bytes, sha256 ${got.hash}, expected ${options.size} bytes, ${expected}${got.error ? ` (${got.error})` : ''}`,
      );
    }
    for (const v of VERIFY_JOBS) {
      log(`${s.name}: fio ${v.id} (write ${v.size / MiB} MiB, read back, crc32c of each block)`);
      const args = verifyArgs(v, { url: s.exportUrl, fileName: WRITE_FILE });
      let error = null;
      for (const dir of /** @type {const} */ (['write', 'read'])) {
        const run = await runFio(() => ns.spawn([tools.fio, ...args[dir]], FIO_SPAWN), 120_000);
        error = verifyResult(run, dir, v);
        if (error !== null) break;
      }
      results.checks.push({ server: s.name, what: `fio ${v.id}`, ok: error === null, error });
      if (error !== null) throw new Error(`${s.name}: fio ${v.id} failed: ${error}`);
    }
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
        const before = snapshot(s, others);
        const run = await runFio(() => ns.spawn([tools.fio, ...args], FIO_SPAWN), deadlineMs);
        const after = snapshot(s, others);
        const f = run.hung ? { error: 'hung' } : figures(run, job);
        const wall = run.wallSeconds;
        const serverCpu = after.server - before.server;
        const fioCpu = after.children - before.children;
        const busy = after.busy === null || before.busy === null ? null : after.busy - before.busy;
        const rest = after.others - before.others + (after.self - before.self);
        const entry = {
          job: job.id,
          server: s.name,
          round,
          hung: run.hung,
          ...f,
          wallSeconds: wall,
          serverCpuSeconds: serverCpu,
          fioCpuSecondsTotal: fioCpu,
          othersCpuSeconds: busy === null ? null : Math.max(0, busy - serverCpu - fioCpu - rest),
          fioArgs: args,
        };
        runs.push(entry);
        if (run.hung) {
          hung.add(key);
          failed = true;
          log(
            `${key} round ${round}: HUNG, fio killed after ${wall.toFixed(0)} s (${lastLine(run.stderr)})`,
          );
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
    const mine = runs.filter((r) => r.job === job.id && r.server === s.name);
    const bad = mine.find((r) => r.hung || r.error);
    if (bad) {
      byServer[s.name] = { hung: bad.hung, error: bad.error, rounds: mine.length };
      continue;
    }
    const m = (/** @type {(r: any) => number} */ pick) => median(mine.map(pick));
    const iops = m((r) => r.iops);
    const serverCores = m((r) => r.serverCpuSeconds / r.wallSeconds);
    byServer[s.name] = {
      rounds: mine.length,
      iops,
      bytesPerSecond: m((r) => r.bytesPerSecond),
      p50Us: m((r) => r.p50Us),
      p99Us: m((r) => r.p99Us),
      serverCores,
      serverCpuUsPerIo: (serverCores / iops) * 1e6,
      fioCores: m((r) => r.fioCpuSecondsTotal / r.wallSeconds),
      othersCores: mine.some((r) => r.othersCpuSeconds === null)
        ? null
        : m((r) => r.othersCpuSeconds / r.wallSeconds),
    };
  }
  const a = byServer.ivmr;
  const b = byServer.ganesha;
  const ok = (x) => x && !x.hung && !x.error;
  const ratio = ok(a) && ok(b) ? a.iops / b.iops : null;
  const roundRatios = [];
  if (ratio !== null) {
    for (let round = 1; round <= options.rounds; round++) {
      const x = runs.find((r) => r.job === job.id && r.server === 'ivmr' && r.round === round);
      const y = runs.find((r) => r.job === job.id && r.server === 'ganesha' && r.round === round);
      if (x && y) roundRatios.push(x.iops / y.iops);
    }
  }
  return { ...job, servers: byServer, ratio, roundRatios };
}

/**
 * CPU counters around one fio run.
 * @param {import('./servers.mjs').Server} server
 * @param {import('./servers.mjs').Server[]} others
 */
function snapshot(server, others) {
  const self = process.cpuUsage();
  return {
    server: server.cpuSeconds(),
    others: others.reduce((a, o) => a + o.cpuSeconds(), 0),
    children: reapedChildrenCpuSeconds(),
    self: (self.user + self.system) / 1e6,
    busy: machineBusySeconds(),
  };
}

/**
 * SHA-256 and length of a file read through a server with libnfs's nfs-cat.
 * @param {import('./namespace.mjs').Namespace} ns
 * @param {string} url
 * @param {number} deadlineMs
 */
async function catHash(ns, url, deadlineMs) {
  const proc = ns.spawn(['nfs-cat', url], { stdio: pipes });
  const hash = createHash('sha256');
  let bytes = 0;
  let stderr = '';
  proc.stdout.on('data', (d) => {
    hash.update(d);
    bytes += d.length;
  });
  proc.stderr.on('data', (d) => {
    stderr += d;
  });
  let hungUp = false;
  const timer = setTimeout(() => {
    hungUp = true;
    proc.kill('SIGKILL');
  }, deadlineMs);
  const code = await new Promise((res, rej) => {
    proc.once('error', rej);
    proc.once('close', res);
  }).finally(() => clearTimeout(timer));
  const error = hungUp
    ? `nfs-cat killed after ${deadlineMs / 1000} s`
    : code !== 0
      ? `nfs-cat exited with ${code}: ${stderr.trim()}`
      : undefined;
  return { hash: hash.digest('hex'), bytes, error };
}

/**
 * Finds or builds the tools (setup scripts), checks the rest; fails with what to do.
 */
function setup() {
  const need = (cmd, hint) => {
    if (spawnSync('sh', ['-c', `command -v ${cmd}`]).status !== 0) {
      throw new Error(`${cmd} not found: ${hint}`);
    }
  };
  need('nfs-cat', 'install libnfs-utils (bash scripts/setup.sh does, as root)');
  need('rpcbind', 'install rpcbind (bash setup/ganesha.sh does, as root)');
  const script = (name) => {
    log(`setup/${name}`);
    const r = spawnSync('bash', [join(here, '..', 'setup', name)], {
      stdio: ['ignore', 'pipe', 'inherit'],
      encoding: 'utf8',
    });
    if (r.status !== 0) throw new Error(`setup/${name} failed (exit ${r.status}); see above`);
    return r.stdout.trim().split('\n').at(-1);
  };
  const fio = opts.fio ?? script('fio-nfs.sh');
  const help = spawnSync(fio, ['--enghelp=nfs'], { encoding: 'utf8' });
  if (help.status !== 0 || !help.stdout.includes('nfs_url')) {
    throw new Error(`${fio} has no nfs engine (fio --enghelp=nfs); use setup/fio-nfs.sh`);
  }
  const ganesha = serverNames.includes('ganesha') ? script('ganesha.sh') : null;
  const version = (cmd, args) => {
    try {
      return execFileSync(cmd, args, { encoding: 'utf8' }).trim().split('\n')[0];
    } catch {
      return 'unknown';
    }
  };
  const pkg = (p) => `${p} ${version('dpkg-query', ['-W', '-f', '$' + '{Version}', p])}`;
  return {
    fio,
    ganesha,
    versions: {
      fio: version(fio, ['--version']),
      libnfs: pkg('libnfs13'),
      ganesha: ganesha ? pkg('nfs-ganesha') : 'not run',
    },
  };
}

async function cleanup() {
  const fns = cleanups.splice(0);
  for (const fn of fns) {
    try {
      await fn();
    } catch (err) {
      process.stderr.write(`cleanup: ${err?.message ?? err}\n`);
    }
  }
}

/**
 * @param {string | undefined} list
 * @param {import('./fio.mjs').Job[]} all
 * @param {string} flag
 */
function pick(list, all, flag) {
  if (!list) return all;
  return list.split(',').map((id) => {
    const job = all.find((j) => j.id === id.trim());
    if (!job)
      throw new Error(`${flag}: unknown job ${id}; jobs: ${all.map((j) => j.id).join(', ')}`);
    return job;
  });
}

/**
 * @param {string} text
 * @param {string} flag
 */
function parseSize(text, flag) {
  const m = /^(\d+)([KMG]?)i?B?$/i.exec(text);
  if (!m) throw new Error(`${flag}: expected e.g. 256M or 1G, got ${text}`);
  const mult = { '': 1, K: 1024, M: MiB, G: 1024 * MiB }[m[2].toUpperCase()];
  const bytes = Number(m[1]) * mult;
  if (bytes < MiB || bytes % MiB !== 0) {
    throw new Error(`${flag} must be a whole number of MiB, at least 1M; got ${text}`);
  }
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

/**
 * @param {string} text
 * @param {string} flag
 */
function nonNegativeInt(text, flag) {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 0) throw new Error(`${flag} must be a non-negative integer`);
  return n;
}

/** @param {string} text */
function lastLine(text) {
  return text.trim().split('\n').at(-1) ?? '';
}

/** @param {string} msg */
function log(msg) {
  const t = ((performance.now() - started) / 1000).toFixed(1);
  process.stderr.write(`[${t.padStart(6)} s] ${msg}\n`);
}
