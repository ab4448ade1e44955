import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { accessSync, constants, existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { NfsServer, type NfsServerAddress, type NfsServerOptions } from '../../src/index.js';
import { MemoryFileSystem } from '../helpers/memory-fs.js';

/** The real clients these tests start, and the Debian package of each. */
const TOOLS = {
  'nfs-ls': 'libnfs-utils',
  'nfs-cp': 'libnfs-utils',
  'nfs-cat': 'libnfs-utils',
  'qemu-img': 'qemu-utils',
  'qemu-io': 'qemu-utils',
  'qemu-system-x86_64': 'qemu-system-x86',
  rpcbind: 'rpcbind',
  rpcinfo: 'rpcbind',
} as const;

/** qemu's nfs:// driver: a module, not a command. */
const QEMU_NFS_MODULE = '/usr/lib/x86_64-linux-gnu/qemu/block-nfs.so';

export type Tool = keyof typeof TOOLS;

/**
 * The paths of the tools, or an error naming what is missing. The tests never skip: a missing
 * client is a failure, because a green run must mean the real clients were exercised.
 */
export function requireTools(...tools: Tool[]): Record<Tool, string> {
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/sbin', '/sbin'];
  const found = {} as Record<Tool, string>;
  const missing: string[] = [];
  for (const tool of tools) {
    const path = dirs.map((d) => join(d, tool)).find(isExecutable);
    if (path) found[tool] = path;
    else missing.push(`${tool} (Debian package ${TOOLS[tool]})`);
  }
  if (tools.includes('qemu-img') && !existsSync(QEMU_NFS_MODULE)) {
    missing.push(`qemu's nfs driver ${QEMU_NFS_MODULE} (Debian package qemu-block-extra)`);
  }
  if (missing.length > 0) {
    throw new Error(
      `real NFS clients are missing: ${missing.join(', ')}. Run scripts/setup.sh (as root) to install them.`,
    );
  }
  return found;
}

function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** What a finished process left behind. */
export interface RunResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: Buffer;
  readonly stderr: string;
}

/**
 * Runs a program to completion (killed after `timeoutMs`: a hung client must fail the test, not
 * stall the run). Rejects when it cannot start.
 */
export function run(
  command: string,
  args: readonly string[],
  timeoutMs = 30_000,
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({
        code,
        signal,
        stdout: Buffer.concat(out),
        stderr: Buffer.concat(err).toString('utf8'),
      });
    });
  });
}

/** Runs a program and resolves with its stdout; rejects, quoting it, unless it exits with 0. */
export async function runOk(
  command: string,
  args: readonly string[],
  timeoutMs?: number,
): Promise<Buffer> {
  const r = await run(command, args, timeoutMs);
  if (r.code !== 0) {
    const how = r.signal ? `was killed by ${r.signal} (timeout?)` : `exited with ${r.code}`;
    throw new Error(
      `${command} ${args.join(' ')} ${how}: ${r.stderr.trim() || r.stdout.toString('utf8').trim()}`,
    );
  }
  return r.stdout;
}

/** A long-running child (a daemon under test) that can be stopped and awaited. */
export interface Daemon {
  readonly child: ChildProcess;
  /** Output so far, for error messages. */
  output(): string;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves when the process has exited. */
  stop(graceMs?: number): Promise<void>;
}

/** Starts a long-running process with its output collected. */
export function startDaemon(command: string, args: readonly string[]): Daemon {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let text = '';
  child.stdout?.on('data', (b: Buffer) => {
    text += b.toString('utf8');
  });
  child.stderr?.on('data', (b: Buffer) => {
    text += b.toString('utf8');
  });
  const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
  child.on('error', () => {});
  return {
    child,
    output: () => text,
    async stop(graceMs = 3000) {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** Resolves when something accepts TCP connections on 127.0.0.1:`port`; rejects after `timeoutMs`. */
export async function waitForPort(port: number, timeoutMs = 5000, why = ''): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect({ port, host: '127.0.0.1' });
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline)
      throw new Error(`nothing listens on 127.0.0.1:${port} after ${timeoutMs} ms${why}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const PORT_111_LOCK = '/tmp/ivmr-test-port-111.lock';

/**
 * Takes the machine-wide test lock for port 111, waiting (up to `timeoutMs`) while another test
 * process holds it: test files run in parallel, and only one at a time can own the portmapper
 * port. A lock whose process is gone is taken over. Returns the release function.
 */
export async function lockPort111(timeoutMs = 180_000): Promise<() => Promise<void>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      await writeFile(PORT_111_LOCK, String(process.pid), { flag: 'wx' });
      return () => rm(PORT_111_LOCK, { force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const holder = Number(await readFile(PORT_111_LOCK, 'utf8').catch(() => ''));
    let alive = Number.isInteger(holder) && holder > 0;
    if (alive) {
      try {
        process.kill(holder, 0);
      } catch {
        alive = false;
      }
    }
    if (!alive) await rm(PORT_111_LOCK, { force: true });
    else if (Date.now() > deadline)
      throw new Error(`port 111 test lock still held by pid ${holder}`);
    else await new Promise((r) => setTimeout(r, 200));
  }
}

/** Throws a clear error when 127.0.0.1:`port` cannot be bound (111 taken by a running rpcbind). */
export async function requirePortFree(port: number): Promise<void> {
  const probe = createServer();
  const error = await new Promise<NodeJS.ErrnoException | undefined>((resolve) => {
    probe.once('error', (e) => resolve(e));
    probe.listen({ port, host: '127.0.0.1', exclusive: true }, () => resolve(undefined));
  });
  if (error === undefined) {
    await new Promise((resolve) => probe.close(resolve));
    return;
  }
  throw new Error(
    `port ${port} on 127.0.0.1 is not free (${error.code}): qemu and libnfs without port options find servers only through a portmapper on 111, so these tests need it. ` +
      "Stop the machine's rpcbind (systemctl stop rpcbind.socket rpcbind) or whatever holds the port, then run them again.",
  );
}

/** A started server over a {@link MemoryFileSystem} exported as `/memfs`, and its errors. */
export interface MemfsServer {
  readonly server: NfsServer;
  readonly fs: MemoryFileSystem;
  readonly address: NfsServerAddress;
  /** Unexpected errors the server reported (adapter failures, broken connections). */
  readonly errors: unknown[];
  /** `nfs://127.0.0.1/memfs/<path>`, with the ports unless `viaPortmap`. */
  url(path?: string, viaPortmap?: boolean): string;
}

/** Starts an NFS server on 127.0.0.1 exporting a fresh MemoryFileSystem as `/memfs`. */
export async function startMemfsServer(
  options: Partial<NfsServerOptions> = {},
): Promise<MemfsServer> {
  const fs = new MemoryFileSystem();
  const errors: unknown[] = [];
  const server = new NfsServer({
    exports: [{ path: '/memfs', fs }],
    host: '127.0.0.1',
    nfsPort: 0,
    handleKey: randomBytes(32),
    onError: (err) => errors.push(err),
    ...options,
  });
  const address = await server.start();
  return {
    server,
    fs,
    address,
    errors,
    url(path = '', viaPortmap = false) {
      const base = `nfs://127.0.0.1/memfs${path === '' ? '' : `/${path}`}`;
      return viaPortmap
        ? base
        : `${base}?nfsport=${address.nfsPort}&mountport=${address.mountPort}&version=3`;
    },
  };
}

/** A fresh temporary directory and its removal. */
export async function tempDir(): Promise<{ path: string; remove: () => Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), 'ivmr-nfs-clients-'));
  return { path, remove: () => rm(path, { recursive: true, force: true }) };
}

/** Deterministic pseudo-random bytes (xorshift32), so a failure can be replayed. */
export function pseudoRandom(length: number, seed: number): Buffer {
  const words = new Uint32Array(Math.ceil(length / 4));
  let x = seed >>> 0 || 1;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    words[i] = x >>> 0;
  }
  return Buffer.from(words.buffer, 0, length);
}
