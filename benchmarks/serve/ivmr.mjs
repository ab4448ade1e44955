/**
 * The ivmr side of the serve benchmark, driven the way a user drives it: `ivmr backup` of the
 * test disk into a repository, and `ivmr serve` (the built command, packages/cli/dist/cli.js) in
 * the benchmark's network namespace, serving the VM's flat VMDK over NFSv3.
 */
import { spawn } from 'node:child_process';
import { createWriteStream, existsSync, readFileSync } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { Child, waitFor } from '../nfs/processes.mjs';

export const CLI = fileURLToPath(new URL('../../packages/cli/dist/cli.js', import.meta.url));
export const VM = 'bench';
const EXPORT = '/ivmr';

/** Fails with what to do when the command has not been built. */
export function checkBuilt() {
  if (!existsSync(CLI)) {
    throw new Error(`${CLI} is missing: build first (npx -y pnpm@10.34.8 -r run build)`);
  }
}

/**
 * `ivmr backup` of `image` into a new repository `repo` (full backup, `codec`, 1 MiB blocks).
 * `changedBlocks` is a changed-blocks file: for this first backup, the image's allocated areas.
 * `ns` (optional) runs it inside the benchmark's network namespace (an s3:// repository there).
 * @param {{ image: string, repo: string, codec: 'lz4' | 'zstd', changedBlocks?: string,
 *   ns?: Pick<import('../nfs/namespace.mjs').Namespace, 'spawn'> }} o
 * @returns {Promise<{ seconds: number, point: any }>}
 */
export async function backUp(o) {
  const started = performance.now();
  const args = [CLI, 'backup', o.image, '--repo', o.repo, '--vm', VM, '--codec', o.codec];
  if (o.changedBlocks) args.push('--changed-blocks', o.changedBlocks);
  const argv = [process.execPath, ...args, '--json'];
  const stdio = /** @type {const} */ (['ignore', 'pipe', 'pipe']);
  const proc = o.ns ? o.ns.spawn(argv, { stdio }) : spawn(argv[0], argv.slice(1), { stdio });
  let stdout = '';
  let stderr = '';
  proc.stdout.on('data', (d) => {
    stdout += d;
  });
  proc.stderr.on('data', (d) => {
    stderr = (stderr + d).slice(-4096);
  });
  const code = await new Promise((resolve, reject) => {
    proc.once('error', reject);
    proc.once('close', resolve);
  });
  if (code !== 0) throw new Error(`ivmr backup (${o.codec}) exited with ${code}: ${stderr.trim()}`);
  return { seconds: (performance.now() - started) / 1000, point: JSON.parse(stdout) };
}

/**
 * @typedef {import('../nfs/servers.mjs').Server & {
 *   pid: number,
 *   diskPath: string,
 *   startedAt: number,
 *   readyAt: number,
 *   portmapUrl: (file: string) => string,
 *   memory: () => { rssBytes: number, peakRssBytes: number } | null,
 * }} ServeServer
 */

/**
 * Starts `ivmr serve` for the benchmark VM of `repo` with the cache folder `cache` (created),
 * on 127.0.0.1 with free ports and no portmapper, and waits for its JSON readiness line.
 * `fresh` first removes the cache folder: an empty overlay and an empty read cache. `ns` spawns
 * the server: the benchmark's network namespace, or anything with the same `spawn`.
 * `portmap: 'embedded'` also answers portmapper calls on port 111, for clients that cannot be
 * given the ports (qemu's nfs driver); only inside a namespace, where 111 is free.
 * @param {Pick<import('../nfs/namespace.mjs').Namespace, 'spawn'>} ns
 * @param {{ name: string, repo: string, cache: string, readCacheBytes: number, fresh: boolean,
 *   logFile: string, cpuProfDir?: string, portmap?: 'off' | 'embedded' }} o
 * @returns {Promise<ServeServer>}
 */
export async function startServe(ns, o) {
  checkBuilt();
  if (o.fresh) await rm(o.cache, { recursive: true, force: true });
  await mkdir(o.cache, { recursive: true });
  const prof = o.cpuProfDir ? ['--cpu-prof', `--cpu-prof-dir=${o.cpuProfDir}`] : [];
  const args = [
    ...['serve', '--repo', o.repo, '--vm', VM, '--cache', o.cache],
    ...['--listen', '127.0.0.1', '--nfs-port', '0', '--portmap', o.portmap ?? 'off'],
    ...['--export', EXPORT],
    // The benchmark's cache volume is the machine's disk: ask for no more than the VM needs.
    ...['--min-free', '1M', '--read-cache', String(o.readCacheBytes)],
    ...['--log-level', 'info', '--json'],
    ...(process.env.IVMR_BENCH_SERVE_ARGS ? process.env.IVMR_BENCH_SERVE_ARGS.split(' ') : []),
  ];
  // performance.now() just before the spawn and when the readiness line's end arrived.
  const startedAt = performance.now();
  let readyAt = Number.NaN;
  const proc = ns.spawn([process.execPath, ...prof, CLI, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const child = new Child(o.name, proc);
  // The server's log (JSON lines: warnings and errors), kept across restarts.
  proc.stderr?.pipe(createWriteStream(o.logFile, { flags: 'a' }));
  let line = '';
  const firstLine = () =>
    line.includes('\n') ? JSON.parse(line.slice(0, line.indexOf('\n'))) : null;
  /** @type {(v: any) => void} */
  let seen = () => {};
  // Resolves as the line arrives, not at waitFor's next poll: the time to first byte counts it.
  const lineSeen = new Promise((resolve) => {
    seen = resolve;
  });
  proc.stdout?.on('data', (d) => {
    line += d;
    if (Number.isNaN(readyAt) && line.includes('\n')) {
      readyAt = performance.now();
      seen(undefined);
    }
  });
  const ready = await Promise.race([
    waitFor(child, firstLine, 120_000, 'readiness line'),
    lineSeen.then(firstLine),
  ]);
  const disk = ready.sessions?.[0]?.disks?.[0];
  if (typeof disk !== 'string') {
    await child.stop(10_000);
    throw new Error(`${o.name}: no disk in the readiness line ${line.trim()}`);
  }
  const q = `?nfsport=${ready.nfsPort}&mountport=${ready.mountPort}&version=3`;
  return {
    name: /** @type {any} */ (o.name),
    pid: child.pid,
    diskPath: disk,
    startedAt,
    readyAt,
    exportUrl: `nfs://127.0.0.1${EXPORT}${q}`,
    fileUrl: (file) => `nfs://127.0.0.1${EXPORT}/${file}${q}`,
    // For clients that find the ports through the portmapper (with `portmap: 'embedded'`).
    portmapUrl: (file) => `nfs://127.0.0.1${EXPORT}/${file}`,
    cpuSeconds: () => child.cpuSeconds(),
    assertRunning: () => child.assertRunning(),
    memory: () => memoryOf(child.pid),
    stop: async () => {
      await child.stop(30_000);
      const code = child.proc.exitCode;
      if (code !== 0) {
        throw new Error(`${o.name} exited with ${code ?? child.proc.signalCode} on SIGTERM`);
      }
    },
  };
}

/**
 * Resident and peak resident memory of a process (Linux /proc/<pid>/status), null once gone.
 * @param {number} pid
 */
export function memoryOf(pid) {
  let status;
  try {
    status = readFileSync(`/proc/${pid}/status`, 'latin1');
  } catch {
    return null;
  }
  const kib = (key) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
  return { rssBytes: kib('VmRSS') * 1024, peakRssBytes: kib('VmHWM') * 1024 };
}
