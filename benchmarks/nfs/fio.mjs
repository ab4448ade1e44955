/**
 * fio's nfs engine (libnfs, user space) as the client: the jobs, one run with a deadline, and
 * the figures taken from fio's JSON.
 *
 * fio's nfs engine mounts the URL's whole path and opens `--filename` relative to it, so the URL
 * names the export (`nfs://127.0.0.1/export?nfsport=N&mountport=M&version=3`) and the file is
 * `--filename=read.bin`. It creates no files and does not know their size: `--size` is given.
 */

import { readFileSync } from 'node:fs';

/**
 * @typedef {object} Job
 * @property {string} id stable key
 * @property {string} title
 * @property {'randread' | 'read' | 'randwrite' | 'write' | 'randrw'} rw
 * @property {number} [readShare] percent of reads in a `randrw` job (fio's rwmixread)
 * @property {number} bs bytes
 * @property {number} iodepth
 * @property {'read' | 'write'} file which of the two files
 * @property {number | null} target least ivmr ÷ ganesha IOPS the issue asks for
 */

const KiB = 1024;

/** @type {Job[]} */
export const JOBS = [
  {
    id: 'randread-4k-qd16',
    title: '4 KiB random read, QD16',
    rw: 'randread',
    bs: 4 * KiB,
    iodepth: 16,
    file: 'read',
    target: 1.5,
  },
  {
    id: 'read-512k-qd4',
    title: '512 KiB sequential read, QD4',
    rw: 'read',
    bs: 512 * KiB,
    iodepth: 4,
    file: 'read',
    target: 1.0,
  },
  {
    id: 'randread-4k-qd1',
    title: '4 KiB random read, QD1',
    rw: 'randread',
    bs: 4 * KiB,
    iodepth: 1,
    file: 'read',
    target: null,
  },
  {
    id: 'randwrite-4k-qd16',
    title: '4 KiB random write, QD16',
    rw: 'randwrite',
    bs: 4 * KiB,
    iodepth: 16,
    file: 'write',
    target: null,
  },
];

/**
 * fio's arguments for a timed job. `once` ends the job after one pass over the file even when
 * the runtime is not over: a cold sequential read must not wrap around into blocks it has just
 * read (they are warm by then).
 * `latLog` names a path prefix for fio's per-I/O latency logs (see {@link latencyBySecond}).
 * @param {Job} job
 * @param {{ url: string, fileName: string, size: number, runtime: number, ramp: number,
 *   once?: boolean, latLog?: string }} o
 */
export function timedArgs(job, o) {
  return [
    `--name=${job.id}`,
    '--ioengine=nfs',
    `--nfs_url=${o.url}`,
    `--filename=${o.fileName}`,
    `--rw=${job.rw}`,
    ...(job.rw === 'randrw' ? [`--rwmixread=${job.readShare ?? 50}`] : []),
    `--bs=${job.bs}`,
    `--iodepth=${job.iodepth}`,
    `--size=${o.size}`,
    ...(o.once ? [] : ['--time_based']),
    `--runtime=${o.runtime}`,
    `--ramp_time=${o.ramp}`,
    // Same offsets for both servers (fixed seed), and no random map: fio's own CPU matters on a
    // 2-core machine it shares with the server.
    '--randrepeat=1',
    '--norandommap',
    '--output-format=json',
    ...(o.latLog ? [`--write_lat_log=${o.latLog}`, '--per_job_logs=0'] : []),
  ];
}

/**
 * The completion latencies of a run, second by second, from the log fio writes with
 * `--write_lat_log=PREFIX` (`PREFIX_clat.log`: one line per I/O of the measured part, its time
 * in ms and latency in ns first). A p99 over a whole run hides when its slow I/Os happened;
 * this shows it, for instance that a cold run's tail is its first seconds. `tailShare` is the
 * share of the run's slowest 1% (at or above its p99) that fell in that second.
 * @param {string} clatLog
 * @returns {{ second: number, ios: number, p50Us: number, p99Us: number, maxUs: number,
 *   tailShare: number }[]}
 */
export function latencyBySecond(clatLog) {
  /** @type {number[][]} */
  const seconds = [];
  /** @type {number[]} */
  const all = [];
  for (const line of readFileSync(clatLog, 'latin1').split('\n')) {
    const comma = line.indexOf(',');
    if (comma < 0) continue;
    const ms = Number(line.slice(0, comma));
    const ns = Number(line.slice(comma + 1, line.indexOf(',', comma + 1)));
    if (!Number.isFinite(ms) || !Number.isFinite(ns)) continue;
    const second = Math.floor(ms / 1000);
    seconds[second] ??= [];
    seconds[second].push(ns);
    all.push(ns);
  }
  const at = (/** @type {Float64Array} */ sorted, /** @type {number} */ q) =>
    sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? Number.NaN;
  const p99 = at(Float64Array.from(all).sort(), 0.99);
  const tail = all.filter((ns) => ns >= p99).length;
  const out = [];
  for (let second = 0; second < seconds.length; second++) {
    const ns = seconds[second];
    if (!ns) continue;
    const sorted = Float64Array.from(ns).sort();
    out.push({
      second,
      ios: ns.length,
      p50Us: at(sorted, 0.5) / 1000,
      p99Us: at(sorted, 0.99) / 1000,
      maxUs: sorted[sorted.length - 1] / 1000,
      tailShare: tail === 0 ? 0 : ns.filter((x) => x >= p99).length / tail,
    });
  }
  return out;
}

/**
 * Checks of the write and read paths with fio's own verification, in the shapes of the timed
 * jobs. A first fio writes blocks that carry a header (magic, length, offset, a seed, crc32c of
 * the block); a second reads them back in the same order at the same depth and checks every
 * one: fio's nfs engine cannot run the verify phase of a write job (it starts with an fsync the
 * engine does not implement), and a second fio with the same job draws the same seeds. The
 * 512 KiB one reads back in the shape that hung libnfs against a server gluing replies together
 * (NFS-ESXI-FACTS.md, "Client bugs").
 *
 * The engine stops without reaping its last I/Os (up to `iodepth` of them end as "Failed NFS
 * operation" when it tears down), so the write pass writes `spare` bytes more than the read pass
 * checks: every block read back was certainly written.
 */
export const VERIFY_JOBS = [
  { id: 'verify-4k-qd16', bs: 4 * KiB, iodepth: 16, size: 16 * 1024 * KiB, spare: 1024 * KiB },
  { id: 'verify-512k-qd4', bs: 512 * KiB, iodepth: 4, size: 64 * 1024 * KiB, spare: 4096 * KiB },
];

/**
 * fio's arguments for the write pass and the read pass of a verification job.
 * @param {(typeof VERIFY_JOBS)[number]} job
 * @param {{ url: string, fileName: string }} o
 * @returns {{ write: string[], read: string[] }}
 */
export function verifyArgs(job, o) {
  const common = [
    `--name=${job.id}`,
    '--ioengine=nfs',
    `--nfs_url=${o.url}`,
    `--filename=${o.fileName}`,
    `--bs=${job.bs}`,
    `--iodepth=${job.iodepth}`,
    '--verify=crc32c',
    '--do_verify=0',
    '--output-format=json',
  ];
  return {
    write: [...common, '--rw=write', `--size=${job.size + job.spare}`],
    read: [...common, '--rw=read', `--size=${job.size}`, '--verify_fatal=1'],
  };
}

/**
 * @typedef {object} FioRun
 * @property {boolean} hung fio did not finish before its deadline and was killed
 * @property {number} wallSeconds
 * @property {any} json fio's JSON output, when it finished
 * @property {string} stderr the tail of fio's stderr
 * @property {number | null} exitCode
 * @property {string} [atDeadline] what `atDeadline` returned, for a run that hung
 */

/** Spawn options for fio: its own process group, so that a deadline kills its job processes too. */
export const FIO_SPAWN = /** @type {const} */ ({
  stdio: ['ignore', 'pipe', 'pipe'],
  detached: true,
});

/**
 * Runs fio (spawned by `spawnFio`, with {@link FIO_SPAWN}) and kills it when it is not done
 * within `deadlineMs`: a libnfs client that hangs must not hang the benchmark. `atDeadline` is
 * called just before the kill, while the hung connection is still open (a snapshot of the
 * sockets, for the report).
 * @param {() => import('node:child_process').ChildProcess} spawnFio
 * @param {number} deadlineMs
 * @param {() => string} [atDeadline]
 * @returns {Promise<FioRun>}
 */
export async function runFio(spawnFio, deadlineMs, atDeadline) {
  const started = performance.now();
  const proc = spawnFio();
  let stdout = '';
  let stderr = '';
  proc.stdout?.on('data', (d) => {
    stdout += d;
  });
  proc.stderr?.on('data', (d) => {
    stderr = (stderr + d).slice(-16384);
  });
  let hung = false;
  /** @type {string | undefined} */
  let snapshot;
  /** @type {NodeJS.Timeout | undefined} */
  let orphanTimer;
  const timer = setTimeout(() => {
    hung = true;
    try {
      snapshot = atDeadline?.();
    } catch (err) {
      snapshot = `(no snapshot: ${err})`;
    }
    // fio forks a process per job, which holds the pipes open: kill the whole group.
    try {
      if (proc.pid !== undefined) process.kill(-proc.pid, 'SIGKILL');
    } catch {
      proc.kill('SIGKILL');
    }
    // Should anything outside the group still hold the pipes, stop waiting for them.
    orphanTimer = setTimeout(() => {
      proc.stdout?.destroy();
      proc.stderr?.destroy();
    }, 5000);
  }, deadlineMs);
  const exitCode = await new Promise((resolve, reject) => {
    proc.once('error', reject);
    proc.once('close', (code) => resolve(code));
  }).finally(() => {
    clearTimeout(timer);
    clearTimeout(orphanTimer);
  });
  const wallSeconds = (performance.now() - started) / 1000;
  let json = null;
  if (!hung) {
    // fio may print notices before the JSON document.
    const at = stdout.indexOf('{');
    try {
      json = at >= 0 ? JSON.parse(stdout.slice(at)) : null;
    } catch {
      json = null;
    }
  }
  return { hung, wallSeconds, json, stderr, exitCode, atDeadline: snapshot };
}

/**
 * The figures of a finished timed run, or an error message.
 * @param {FioRun} run
 * @param {Job} job
 */
export function figures(run, job) {
  const j = run.json?.jobs?.[0];
  if (!j) {
    return { error: `fio exited with ${run.exitCode} and no JSON: ${lastLines(run.stderr)}` };
  }
  if (j.error !== 0) return { error: `fio job error ${j.error}: ${lastLines(run.stderr)}` };
  // A mixed job counts the I/O of both directions; its latencies are those of its reads.
  const dirs =
    job.rw === 'randrw' ? [j.read, j.write] : [job.rw.endsWith('write') ? j.write : j.read];
  const ioBytes = dirs.reduce((a, d) => a + (d?.io_bytes ?? 0), 0);
  if (ioBytes === 0) return { error: `no I/O done: ${lastLines(run.stderr)}` };
  const sum = (/** @type {string} */ key) => dirs.reduce((a, d) => a + d[key], 0);
  const pct = dirs[0].clat_ns?.percentile ?? {};
  const seconds = Math.max(...dirs.map((d) => d.runtime)) / 1000;
  return {
    error: null,
    iops: sum('iops'),
    bytesPerSecond: sum('bw_bytes'),
    ios: sum('total_ios'),
    bytes: ioBytes,
    seconds,
    p50Us: (pct['50.000000'] ?? Number.NaN) / 1000,
    p99Us: (pct['99.000000'] ?? Number.NaN) / 1000,
    // fio's own CPU over the measured part (its figures are percentages of the job's runtime).
    fioCpuSeconds: ((j.usr_cpu + j.sys_cpu) / 100) * (j.job_runtime / 1000),
  };
}

/**
 * Whether a pass of a verification job did its I/O (and, reading, found every block right), with
 * the reason when not. Up to `iodepth` blocks may be missing at the end (see VERIFY_JOBS).
 * @param {FioRun} run
 * @param {'write' | 'read'} dir
 * @param {(typeof VERIFY_JOBS)[number]} job
 * @returns {string | null}
 */
export function verifyResult(run, dir, job) {
  if (run.hung) return `hung (killed after ${run.wallSeconds.toFixed(0)} s)`;
  const j = run.json?.jobs?.[0];
  if (run.exitCode !== 0 || !j || j.error !== 0) {
    return `fio exited with ${run.exitCode}, job error ${j?.error}: ${lastLines(run.stderr)}`;
  }
  const least = job.size - job.iodepth * job.bs;
  if (j[dir].io_bytes < least) {
    return `${dir} ${j[dir].io_bytes} bytes, expected at least ${least}: ${lastLines(run.stderr)}`;
  }
  return null;
}

/**
 * fio's last lines of output on one line (at most five, joined with ` | `).
 * @param {string} text
 */
export function lastLines(text) {
  return text.trim().split('\n').slice(-5).join(' | ') || '(no output)';
}
