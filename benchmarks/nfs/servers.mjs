/**
 * The two servers compared, each started inside the benchmark's namespace (see namespace.mjs):
 * ivmr's `NfsServer` in a child node process, and nfs-ganesha (VFS FSAL) with the rpcbind it
 * registers with. Both serve `read.bin` (the benchmark's content) and `write.bin` (zeros).
 */
import { createHash } from 'node:crypto';
import { closeSync, existsSync, openSync, readFileSync, readSync, writeSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { generate } from './content.mjs';
import { Child, waitFor } from './processes.mjs';

export const READ_FILE = 'read.bin';
export const WRITE_FILE = 'write.bin';

/**
 * ganesha's ports. Inside the private namespace every port is free; these lie below the
 * ephemeral range that ivmr's port 0 draws from.
 */
const GANESHA_NFS_PORT = 2049;
const GANESHA_MNT_PORT = 20048;

/**
 * @typedef {object} Server
 * @property {'ivmr' | 'ganesha'} name
 * @property {string} exportUrl `nfs://` URL of the export, with ports and version
 * @property {(file: string) => string} fileUrl `nfs://` URL of a file in the export
 * @property {() => number} cpuSeconds CPU seconds the server has used so far
 * @property {() => void} assertRunning
 * @property {() => Promise<void>} stop
 */

/**
 * @param {string} host
 * @param {string} path
 * @param {number} nfsPort
 * @param {number} mountPort
 */
function urls(host, path, nfsPort, mountPort) {
  const q = `?nfsport=${nfsPort}&mountport=${mountPort}&version=3`;
  return {
    exportUrl: `nfs://${host}${path}${q}`,
    fileUrl: (/** @type {string} */ file) => `nfs://${host}${path}/${file}${q}`,
  };
}

/**
 * Starts ivmr's server in a child node process.
 * @param {import('./namespace.mjs').Namespace} ns
 * @param {{ size: number, writeSize: number, seed: number, cpuProfDir?: string }} o
 * @returns {Promise<Server>}
 */
export async function startIvmr(ns, o) {
  const script = fileURLToPath(new URL('./ivmr-server.mjs', import.meta.url));
  const dist = fileURLToPath(new URL('../../packages/nfs/dist/index.js', import.meta.url));
  if (!existsSync(dist)) {
    throw new Error(
      `${dist} is missing: build @ivmr/nfs first (npx -y pnpm@10.34.8 --filter @ivmr/nfs run build)`,
    );
  }
  const prof = o.cpuProfDir ? ['--cpu-prof', `--cpu-prof-dir=${o.cpuProfDir}`] : [];
  const args = ['--size', String(o.size), '--write-size', String(o.writeSize)];
  const proc = ns.spawn([process.execPath, ...prof, script, ...args, '--seed', String(o.seed)], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const child = new Child('ivmr server', proc);
  let line = '';
  proc.stdout?.on('data', (d) => {
    line += d;
  });
  const ready = await waitFor(
    child,
    () => (line.includes('\n') ? JSON.parse(line.slice(0, line.indexOf('\n'))) : null),
    120_000,
    'ready line',
  );
  if (ready.pid !== child.pid) {
    throw new Error(`ivmr server reports pid ${ready.pid}, spawned ${child.pid}: nsenter forked?`);
  }
  return {
    name: 'ivmr',
    ...urls('127.0.0.1', '/export', ready.nfsPort, ready.mountPort),
    cpuSeconds: () => child.cpuSeconds(),
    assertRunning: () => child.assertRunning(),
    stop: () => child.stop(10_000),
  };
}

/**
 * Writes the export directory of ganesha: `read.bin` with the benchmark's content and `write.bin`
 * with zeros (written, not sparse: pages allocated, as ivmr's buffer is). Returns the SHA-256 of
 * `read.bin`, the bytes every server must serve.
 * @param {string} dir
 * @param {{ size: number, writeSize: number, seed: number }} o
 */
export async function writeExport(dir, o) {
  await mkdir(dir, { recursive: true });
  const hash = createHash('sha256');
  const fd = openSync(join(dir, READ_FILE), 'w');
  try {
    generate(o.size, o.seed, (chunk) => {
      hash.update(chunk);
      writeFully(fd, chunk);
    });
  } finally {
    closeSync(fd);
  }
  const zeros = Buffer.alloc(16 * 1024 * 1024);
  const wfd = openSync(join(dir, WRITE_FILE), 'w');
  try {
    for (let at = 0; at < o.writeSize; at += zeros.length) {
      writeFully(wfd, zeros.subarray(0, Math.min(zeros.length, o.writeSize - at)));
    }
  } finally {
    closeSync(wfd);
  }
  return hash.digest('hex');
}

/**
 * Reads a file once, so that it is in the page cache (a no-op on tmpfs, where it always is).
 * @param {string} path
 */
export function warm(path) {
  const buf = Buffer.allocUnsafe(16 * 1024 * 1024);
  const fd = openSync(path, 'r');
  try {
    while (readSync(fd, buf, 0, buf.length, null) > 0);
  } finally {
    closeSync(fd);
  }
}

/**
 * ganesha 4.x configuration: NFSv3 over TCP only, no NLM, RQUOTA or UDP, the VFS FSAL exporting
 * `exportDir` read-write without root squashing (as ivmr's export).
 * @param {string} exportDir
 * @param {string} pluginsDir
 */
export function ganeshaConfig(exportDir, pluginsDir) {
  return `# Written by benchmarks/nfs (ivmr's NFS benchmark); see benchmarks/README.md.
NFS_CORE_PARAM {
  NFS_Port = ${GANESHA_NFS_PORT};
  MNT_Port = ${GANESHA_MNT_PORT};
  Bind_addr = 127.0.0.1;
  Protocols = 3;
  Enable_NLM = false;
  Enable_RQUOTA = false;
  Enable_UDP = false;
  Plugins_Dir = "${pluginsDir}";
}
NFSV4 {
  Graceless = true;
}
EXPORT {
  Export_Id = 1;
  Path = "${exportDir}";
  Pseudo = "${exportDir}";
  Protocols = 3;
  Transports = TCP;
  Access_Type = RW;
  Squash = No_Root_Squash;
  SecType = sys;
  FSAL {
    Name = VFS;
  }
}
`;
}

/**
 * Starts rpcbind and ganesha.nfsd (foreground, logging to `workDir/ganesha.log`) in the
 * namespace.
 * @param {import('./namespace.mjs').Namespace} ns
 * @param {{ exportDir: string, workDir: string, ganeshaBin: string }} o
 * @returns {Promise<Server>}
 */
export async function startGanesha(ns, o) {
  const plugins = findPluginsDir();
  const conf = join(o.workDir, 'ganesha.conf');
  const log = join(o.workDir, 'ganesha.log');
  await writeFile(conf, ganeshaConfig(o.exportDir, plugins));
  await writeFile(log, '');

  const rpcbind = new Child(
    'rpcbind',
    ns.spawn(['rpcbind', '-f'], { stdio: ['ignore', 'ignore', 'pipe'] }),
  );
  // The namespace's /run, seen through the process's root.
  await waitFor(
    rpcbind,
    () => existsSync(`/proc/${rpcbind.pid}/root/run/rpcbind.sock`),
    10_000,
    '/run/rpcbind.sock',
  );
  const args = [
    '-F',
    '-f',
    conf,
    '-L',
    log,
    '-p',
    join(o.workDir, 'ganesha.pid'),
    '-N',
    'NIV_EVENT',
  ];
  const ganesha = new Child(
    'ganesha.nfsd',
    ns.spawn([o.ganeshaBin, ...args], { stdio: ['ignore', 'ignore', 'pipe'] }),
  );
  const stop = async () => {
    await ganesha.stop(10_000);
    await rpcbind.stop(5000);
  };
  try {
    await waitFor(
      ganesha,
      () => readFileSync(log, 'utf8').includes('NFS SERVER INITIALIZED'),
      60_000,
      'NFS SERVER INITIALIZED in its log',
    );
  } catch (err) {
    await stop();
    const tail = readFileSync(log, 'utf8').trim().split('\n').slice(-15).join('\n');
    throw new Error(`${err.message}\nganesha.log:\n${tail}`);
  }
  return {
    name: 'ganesha',
    ...urls('127.0.0.1', o.exportDir, GANESHA_NFS_PORT, GANESHA_MNT_PORT),
    cpuSeconds: () => ganesha.cpuSeconds(),
    assertRunning: () => {
      ganesha.assertRunning();
      rpcbind.assertRunning();
    },
    stop,
  };
}

/** Where Debian (or another layout) keeps ganesha's FSAL modules. */
function findPluginsDir() {
  const dirs = [
    '/usr/lib/x86_64-linux-gnu/ganesha',
    '/usr/lib/aarch64-linux-gnu/ganesha',
    '/usr/lib64/ganesha',
    '/usr/lib/ganesha',
  ];
  const dir = dirs.find((d) => existsSync(join(d, 'libfsalvfs.so')));
  if (!dir) {
    throw new Error(
      `ganesha's VFS FSAL (libfsalvfs.so) is not in ${dirs.join(', ')}: run bash setup/ganesha.sh`,
    );
  }
  return dir;
}

/**
 * @param {number} fd
 * @param {Buffer} buf
 */
function writeFully(fd, buf) {
  let done = 0;
  while (done < buf.length) done += writeSync(fd, buf, done, buf.length - done);
}
