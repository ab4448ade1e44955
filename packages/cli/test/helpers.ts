import { type ChildProcess, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The built command. CLI tests run it as users do; they never import its source. */
export const CLI = fileURLToPath(new URL('../dist/cli.js', import.meta.url));

/** What a finished process left behind. */
export interface RunResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs a program to completion and collects its output. */
export function run(
  command: string,
  args: readonly string[],
  env: Record<string, string> = {},
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      env: { ...process.env, IVMR_DEBUG: '', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', reject);
    child.on('close', (code, signal) =>
      resolve({
        code: code ?? (signal ? 128 : -1),
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
      }),
    );
  });
}

/** Runs `ivmr args...` (the built binary). */
export function ivmr(args: readonly string[], env?: Record<string, string>): Promise<RunResult> {
  return run(process.execPath, [CLI, ...args], env);
}

/** Fails with a useful message when the CLI (or the core it imports) has not been built. */
export async function checkBuilt(): Promise<void> {
  const hint = "run 'npx -y pnpm@10.34.8 -r run build' (or 'npm test', which builds first)";
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: ${hint}`);
  const r = await ivmr(['--version']);
  if (r.code !== 0) throw new Error(`'ivmr --version' failed (${r.stderr.trim()}): ${hint}`);
}

/** Deterministic pseudo-random bytes (xorshift32), so a failing case can be replayed. */
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

/**
 * A disk image of `size` bytes made of 64 KiB areas that are zero, compressible text or random,
 * chosen by `seed`. The last area is random, so a short last block is never all zeros.
 */
export function makeImage(size: number, seed: number): Buffer {
  const img = Buffer.alloc(size);
  const area = 64 * 1024;
  const choice = pseudoRandom(Math.ceil(size / area), seed);
  for (let off = 0, i = 0; off < size; off += area, i++) {
    const len = Math.min(area, size - off);
    const kind = off + area >= size ? 2 : choice[i]! % 3;
    if (kind === 1) {
      const line = `log ${seed} line ${i}: the quick brown fox jumps over the lazy dog\n`;
      img.write(line.repeat(Math.ceil(len / line.length)).slice(0, len), off, 'latin1');
    } else if (kind === 2) {
      pseudoRandom(len, seed * 7919 + i).copy(img, off);
    }
  }
  return img;
}

/** A changed byte range. */
export interface Range {
  readonly offset: number;
  readonly length: number;
}

/**
 * A copy of `img` with `count` random pieces (up to 40 KiB each) overwritten, one of them in the
 * last 100 bytes. Returns the copy and the ranges written (what a CBT list would report).
 */
export function mutate(img: Buffer, seed: number, count: number): { img: Buffer; ranges: Range[] } {
  const next = Buffer.from(img);
  const r = pseudoRandom(count * 8, seed);
  const ranges: Range[] = [];
  for (let i = 0; i < count; i++) {
    const length = i === 0 ? 100 : 1 + (r.readUInt32LE(i * 8) % (40 * 1024));
    const offset = i === 0 ? img.length - 100 : r.readUInt32LE(i * 8 + 4) % (img.length - length);
    pseudoRandom(length, seed * 31 + i + 1).copy(next, offset);
    ranges.push({ offset, length });
  }
  return { img: next, ranges };
}

/** The JSON readiness line of `ivmr serve --json` (the fields the tests use). */
export interface Ready {
  readonly nfsPort: number;
  readonly mountPort: number;
  readonly portmapPort: number | null;
  readonly sessions: { name: string; vm: string; point: string; disks: string[] }[];
}

/** Starts `ivmr serve ... --json` and resolves with the child and its readiness line. */
export async function startServe(
  args: string[],
): Promise<{ child: ChildProcess; ready: Ready; stderr: () => string }> {
  const s = await spawnServe([...args, '--json'], (out) =>
    out.split('\n').some((l) => l.startsWith('{')),
  );
  const line = s.stdout.split('\n').find((l) => l.startsWith('{'))!;
  return { child: s.child, ready: JSON.parse(line) as Ready, stderr: s.stderr };
}

/**
 * Spawns `ivmr serve ARGS` and resolves once `ready(stdout so far)` holds; rejects when the
 * server exits before.
 */
export function spawnServe(
  args: string[],
  ready: (stdout: string) => boolean,
): Promise<{ child: ChildProcess; stdout: string; stderr: () => string }> {
  return new Promise((resolve, reject) => {
    // The default free-space check asks for 20 GiB plus 5% of the volume: tests must not depend on
    // the machine's disk, so they ask for what their small VMs need unless they test the check.
    const space = args.includes('--min-free') ? [] : ['--min-free', '64M', '--cache-floor', '0'];
    const child = spawn(process.execPath, [CLI, 'serve', ...args, ...space], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stderr!.on('data', (b: Buffer) => {
      err += b.toString();
    });
    child.stdout!.on('data', (b: Buffer) => {
      out += b.toString();
      if (ready(out)) resolve({ child, stdout: out, stderr: () => err });
    });
    child.on('exit', (code) =>
      reject(new Error(`ivmr serve exited with ${code} before it was ready: ${err}`)),
    );
  });
}

/** Resolves when `child` has exited (at once when it has already). */
export function exited(child: ChildProcess): Promise<void> {
  return child.exitCode !== null || child.signalCode !== null
    ? Promise.resolve()
    : new Promise((r) => child.once('exit', () => r()));
}

/** SHA-256 over the paths and contents of every file under `dir` except lock files. */
export async function hashTree(dir: string): Promise<string> {
  const h = createHash('sha256');
  for (const e of (await readdir(dir, { recursive: true, withFileTypes: true })).sort((a, b) =>
    join(a.parentPath, a.name) < join(b.parentPath, b.name) ? -1 : 1,
  )) {
    const p = join(e.parentPath, e.name);
    if (e.isFile() && !p.includes('/locks/')) h.update(p).update(await readFile(p));
  }
  return h.digest('hex');
}

/** One pino log line of `ivmr serve` (JSON on stderr). */
export interface LogLine {
  readonly level: number;
  readonly msg: string;
  readonly [key: string]: unknown;
}

/**
 * The log lines of a server's stderr; a line that is not JSON fails the test (every line the
 * server writes while it runs is a log record).
 */
export function logLines(stderr: string): LogLine[] {
  return stderr
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => {
      try {
        return JSON.parse(l) as LogLine;
      } catch {
        throw new Error(`not a JSON log line: ${l}`);
      }
    });
}

/** The warn, error and fatal records (pino level >= 40). */
export function problems(stderr: string): LogLine[] {
  return logLines(stderr).filter((l) => l.level >= 40);
}

/**
 * `--repo R --cache C --vm ...` of `ivmr serve`, with free NFS and MOUNT ports and the embedded
 * portmapper (qemu's nfs:// driver finds servers only through port 111), or none with `portmap`
 * 'off' (libnfs's tools take the ports in the URL).
 */
export function serveArgs(
  repo: string,
  cache: string,
  vms: readonly string[],
  portmap: 'embedded' | 'off' = 'embedded',
): string[] {
  return [
    '--repo',
    repo,
    '--cache',
    cache,
    ...vms.flatMap((vm) => ['--vm', vm]),
    '--nfs-port',
    '0',
    '--mount-port',
    '0',
    '--portmap',
    portmap,
  ];
}
