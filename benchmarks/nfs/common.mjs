/**
 * What the fio-over-NFS benchmarks share (nfs/run.mjs, serve/run.mjs): finding or building the
 * tools, reading a whole file through a server with libnfs's nfs-cat, option parsing, progress
 * lines and clean-up on exit or signal.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { machineBusySeconds, median } from '../core/measure.mjs';
import {
  FIO_SPAWN,
  figures,
  lastLines,
  runFio,
  VERIFY_JOBS,
  verifyArgs,
  verifyResult,
} from './fio.mjs';
import { reapedChildrenCpuSeconds } from './processes.mjs';

const MiB = 1024 * 1024;
const SETUP_DIR = fileURLToPath(new URL('../setup', import.meta.url));

/**
 * Finds or builds the tools (setup/fio-nfs.sh, setup/ganesha.sh), checks the rest, and fails
 * with what to do.
 * @param {{ fio?: string, ganesha: boolean, log: (msg: string) => void }} o
 * @returns {{ fio: string, ganesha: string | null, versions: Record<string, string> }}
 */
export function findTools(o) {
  const need = (cmd, hint) => {
    if (spawnSync('sh', ['-c', `command -v ${cmd}`]).status !== 0) {
      throw new Error(`${cmd} not found: ${hint}`);
    }
  };
  need('nfs-cat', 'install libnfs-utils (bash scripts/setup.sh does, as root)');
  need('rpcbind', 'install rpcbind (bash setup/ganesha.sh does, as root)');
  const script = (name) => {
    o.log(`setup/${name}`);
    const r = spawnSync('bash', [join(SETUP_DIR, name)], {
      stdio: ['ignore', 'pipe', 'inherit'],
      encoding: 'utf8',
    });
    if (r.status !== 0) throw new Error(`setup/${name} failed (exit ${r.status}); see above`);
    return r.stdout.trim().split('\n').at(-1) ?? '';
  };
  const fio = o.fio ?? script('fio-nfs.sh');
  const help = spawnSync(fio, ['--enghelp=nfs'], { encoding: 'utf8' });
  if (help.status !== 0 || !help.stdout.includes('nfs_url')) {
    throw new Error(`${fio} has no nfs engine (fio --enghelp=nfs); use setup/fio-nfs.sh`);
  }
  const ganesha = o.ganesha ? script('ganesha.sh') : null;
  const version = (cmd, args) => {
    try {
      return execFileSync(cmd, args, { encoding: 'utf8' }).trim().split('\n')[0] ?? 'unknown';
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

/**
 * SHA-256 and length of a file read through a server with libnfs's nfs-cat (run in `ns`).
 * @param {import('./namespace.mjs').Namespace} ns
 * @param {string} url
 * @param {number} deadlineMs
 * @returns {Promise<{ hash: string, bytes: number, seconds: number, error?: string }>}
 */
export async function catHash(ns, url, deadlineMs) {
  const started = performance.now();
  const proc = ns.spawn(['nfs-cat', url], { stdio: ['ignore', 'pipe', 'pipe'] });
  const hash = createHash('sha256');
  let bytes = 0;
  let stderr = '';
  proc.stdout?.on('data', (d) => {
    hash.update(d);
    bytes += d.length;
  });
  proc.stderr?.on('data', (d) => {
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
  const seconds = (performance.now() - started) / 1000;
  return { hash: hash.digest('hex'), bytes, seconds, ...(error ? { error } : {}) };
}

/**
 * Clean-up steps run once, newest first where pushed with `first`, also on SIGINT/SIGTERM (then
 * the process exits with 130).
 */
export class Cleanups {
  /** @param {(msg: string) => void} log */
  constructor(log) {
    /** @type {(() => unknown)[]} */
    this.fns = [];
    this.interrupted = false;
    for (const signal of /** @type {const} */ (['SIGINT', 'SIGTERM'])) {
      process.once(signal, () => {
        this.interrupted = true;
        log(`${signal}: stopping`);
        this.run().finally(() => process.exit(130));
      });
    }
  }

  /** @param {() => unknown} fn runs after the ones already there */
  push(fn) {
    this.fns.push(fn);
  }

  /** @param {() => unknown} fn runs before the ones already there */
  first(fn) {
    this.fns.unshift(fn);
  }

  async run() {
    for (const fn of this.fns.splice(0)) {
      try {
        await fn();
      } catch (err) {
        process.stderr.write(`cleanup: ${err?.message ?? err}\n`);
      }
    }
  }
}

/**
 * A progress logger: lines on stderr with the seconds since `started`.
 * @param {number} started performance.now() at the start
 */
export function progressLog(started) {
  return (/** @type {string} */ msg) => {
    const t = ((performance.now() - started) / 1000).toFixed(1);
    process.stderr.write(`[${t.padStart(6)} s] ${msg}\n`);
  };
}

/**
 * A size such as 256M or 2G, a whole number of MiB of at least `least` bytes.
 * @param {string} text
 * @param {string} flag
 * @param {number} [least]
 */
export function parseSize(text, flag, least = MiB) {
  const m = /^(\d+)([KMGT]?)i?B?$/i.exec(text);
  if (!m) throw new Error(`${flag}: expected e.g. 256M or 1G, got ${text}`);
  const mult = { '': 1, K: 1024, M: MiB, G: 1024 * MiB, T: 1024 * 1024 * MiB }[
    /** @type {string} */ (m[2]).toUpperCase()
  ];
  const bytes = Number(m[1]) * /** @type {number} */ (mult);
  if (bytes < least || bytes % MiB !== 0) {
    throw new Error(`${flag} must be a whole number of MiB, at least ${least / MiB}M; got ${text}`);
  }
  return bytes;
}

/**
 * @param {string} text
 * @param {string} flag
 * @param {number} [least]
 */
export function wholeNumber(text, flag, least = 1) {
  const n = Number(text);
  if (!Number.isInteger(n) || n < least) {
    throw new Error(`${flag} must be a whole number of at least ${least}, got ${text}`);
  }
  return n;
}

/**
 * Jobs named in a comma-separated list, in the list's order; all of them without a list.
 * @template {{ id: string }} J
 * @param {string | undefined} list
 * @param {J[]} all
 * @param {string} flag
 * @returns {J[]}
 */
export function pickJobs(list, all, flag) {
  if (!list) return all;
  return list.split(',').map((id) => {
    const job = all.find((j) => j.id === id.trim());
    if (!job) {
      throw new Error(`${flag}: unknown job ${id}; jobs: ${all.map((j) => j.id).join(', ')}`);
    }
    return job;
  });
}

/** @param {string} text */
export function lastLine(text) {
  return text.trim().split('\n').at(-1) ?? '';
}

/**
 * CPU counters around one fio run: the server's, the other servers', this process's reaped
 * children (fio), this process, and the whole machine.
 * @param {{ cpuSeconds: () => number }} server
 * @param {{ cpuSeconds: () => number }[]} others
 */
function cpuSnapshot(server, others) {
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
 * {@link timedRun}, once more when it hangs: libnfs 4.0 hangs now and then, against ganesha as
 * well as ivmr (README, "The fio patch"). Returns every attempt, the last one last.
 * @param {Parameters<typeof timedRun>[0]} o
 * @param {(hung: any) => void} onHang called with a hung attempt before the next one
 */
export async function timedRunRetrying(o, onHang) {
  const attempts = [];
  for (let attempt = 1; attempt <= 2; attempt++) {
    const r = { attempt, ...(await timedRun(o)) };
    attempts.push(r);
    if (!r.hung) break;
    if (attempt < 2) onHang(r);
  }
  return attempts;
}

/**
 * One timed fio run against `server` (fio spawned in `ns`), with the CPU each side used: the
 * entry a benchmark records per run. A run that hangs is killed at `deadlineMs`.
 * @param {{ ns: import('./namespace.mjs').Namespace, fio: string, args: string[],
 *   job: import('./fio.mjs').Job, server: { cpuSeconds: () => number },
 *   others: { cpuSeconds: () => number }[], deadlineMs: number }} o
 */
export async function timedRun(o) {
  const before = cpuSnapshot(o.server, o.others);
  const run = await runFio(
    () => o.ns.spawn([o.fio, ...o.args], FIO_SPAWN),
    o.deadlineMs,
    () => socketsOf(o.ns),
  );
  const after = cpuSnapshot(o.server, o.others);
  const f = run.hung ? { error: 'hung' } : figures(run, o.job);
  const serverCpu = after.server - before.server;
  const fioCpu = after.children - before.children;
  const busy = after.busy === null || before.busy === null ? null : after.busy - before.busy;
  const rest = after.others - before.others + (after.self - before.self);
  return {
    hung: run.hung,
    ...f,
    stderrTail: run.hung || f.error ? lastLines(run.stderr) : undefined,
    socketsAtDeadline: run.atDeadline,
    wallSeconds: run.wallSeconds,
    serverCpuSeconds: serverCpu,
    fioCpuSecondsTotal: fioCpu,
    othersCpuSeconds: busy === null ? null : Math.max(0, busy - serverCpu - fioCpu - rest),
    fioArgs: o.args,
  };
}

/**
 * One server's figures for one job: the median over its rounds of each, or what went wrong.
 * @param {any[]} runs that server's entries from {@link timedRun}, one per round
 */
export function serverStats(runs) {
  const bad = runs.find((r) => r.hung || r.error);
  if (bad) return { hung: bad.hung, error: bad.error, rounds: runs.length };
  const m = (/** @type {(r: any) => number} */ pick) => median(runs.map(pick));
  const iops = m((r) => r.iops);
  const serverCores = m((r) => r.serverCpuSeconds / r.wallSeconds);
  return {
    rounds: runs.length,
    iops,
    bytesPerSecond: m((r) => r.bytesPerSecond),
    p50Us: m((r) => r.p50Us),
    p99Us: m((r) => r.p99Us),
    serverCores,
    serverCpuUsPerIo: (serverCores / iops) * 1e6,
    fioCores: m((r) => r.fioCpuSecondsTotal / r.wallSeconds),
    othersCores: runs.some((r) => r.othersCpuSeconds === null)
      ? null
      : m((r) => r.othersCpuSeconds / r.wallSeconds),
  };
}

/**
 * fio's own write-then-verify in the shapes of the timed jobs (VERIFY_JOBS) on `fileName` of
 * `server`'s export; each result goes into `checks`. Throws at the first failure. A pass that
 * hangs is killed and run once more, as a timed run is (libnfs 4.0 hangs now and then: README,
 * "Client hangs"); `onHang` gets each hung attempt first, with fio's last lines and the
 * namespace's TCP sockets as they were at the deadline, and the check keeps them (`hung`). Bytes
 * are never taken on trust: the pass after a hung write writes every block again, and only a
 * read pass that finishes counts.
 * @param {{ ns: import('./namespace.mjs').Namespace, fio: string,
 *   server: { name: string, exportUrl: string }, fileName: string, checks: any[],
 *   log: (msg: string) => void, onHang?: (hung: HungPass) => void, deadlineMs?: number }} o
 */
export async function verifyWrites(o) {
  for (const v of VERIFY_JOBS) {
    o.log(
      `${o.server.name}: fio ${v.id} (write ${v.size / MiB} MiB, read back, crc32c of each block)`,
    );
    const args = verifyArgs(v, { url: o.server.exportUrl, fileName: o.fileName });
    /** @type {HungPass[]} */
    const hung = [];
    let error = null;
    for (const dir of /** @type {const} */ (['write', 'read'])) {
      for (let attempt = 1; attempt <= 2; attempt++) {
        const run = await runFio(
          () => o.ns.spawn([o.fio, ...args[dir]], FIO_SPAWN),
          o.deadlineMs ?? 120_000,
          () => socketsOf(o.ns),
        );
        error = verifyResult(run, dir, v);
        if (!run.hung) break;
        const h = {
          job: v.id,
          dir,
          attempt,
          wallSeconds: run.wallSeconds,
          stderr: lastLines(run.stderr),
          sockets: run.atDeadline ?? '',
        };
        hung.push(h);
        o.onHang?.(h);
      }
      if (error !== null) break;
    }
    o.checks.push({
      server: o.server.name,
      what: `fio ${v.id}`,
      ok: error === null,
      error,
      ...(hung.length > 0 ? { hung } : {}),
    });
    if (error !== null) throw new Error(`${o.server.name}: fio ${v.id} failed: ${error}`);
  }
}

/**
 * @typedef {object} HungPass
 * @property {string} job
 * @property {'write' | 'read'} dir
 * @property {number} attempt
 * @property {number} wallSeconds
 * @property {string} stderr fio's last lines
 * @property {string} sockets `ss -tnoi` in the namespace at the deadline
 */

/**
 * The namespace's TCP sockets with their queues and timers (`ss -tnoi`), for a hang's report:
 * a reply the server still holds, or one the client never read, shows as a Send-Q or Recv-Q.
 * @param {import('./namespace.mjs').Namespace} ns
 */
export function socketsOf(ns) {
  const [cmd, ...args] = ns.argv(['ss', '-tnoi']);
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 5000 });
  return r.status === 0 ? r.stdout.trim() : `(ss failed: ${r.stderr?.trim() || r.error})`;
}

/**
 * A hang for the progress log: what hung (`what`), after how long, whether it runs again, fio's
 * last lines and the namespace's sockets at the deadline. For timed runs ({@link timedRun}'s
 * entries) and verify passes ({@link HungPass}) alike.
 * @param {string} what
 * @param {{ wallSeconds: number, stderr?: string, stderrTail?: string, sockets?: string,
 *   socketsAtDeadline?: string }} h
 * @param {boolean} again
 */
export function describeHang(what, h, again) {
  const sockets = (h.sockets ?? h.socketsAtDeadline) || '(nothing)';
  return [
    `${what}: HUNG, fio killed after ${h.wallSeconds.toFixed(0)} s${again ? '; again' : ''}`,
    `  fio's last lines: ${(h.stderr ?? h.stderrTail) || '(nothing)'}`,
    '  TCP sockets in the namespace at the deadline (ss -tnoi):',
    sockets.replace(/^/gm, '    '),
  ].join('\n');
}

/**
 * Reads `file` of `server`'s export whole with nfs-cat and checks its length and SHA-256; the
 * result goes into `checks`. Throws when the bytes are wrong.
 * @param {{ ns: import('./namespace.mjs').Namespace,
 *   server: { name: string, fileUrl: (file: string) => string }, file: string,
 *   expected: string, size: number, checks: any[], what?: string }} o
 */
export async function checkRead(o) {
  const got = await catHash(o.ns, o.server.fileUrl(o.file), 600_000);
  const ok = got.hash === o.expected && got.bytes === o.size;
  const what = o.what ?? `nfs-cat ${o.file} sha256`;
  o.checks.push({ server: o.server.name, what, ok, ...got });
  if (!ok) {
    throw new Error(
      `${o.server.name} served wrong bytes of ${o.file}: ${got.bytes} bytes, sha256 ${got.hash}, expected ${o.size} bytes, ${o.expected}${got.error ? ` (${got.error})` : ''}`,
    );
  }
  return got;
}
