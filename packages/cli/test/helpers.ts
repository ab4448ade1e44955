import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
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
