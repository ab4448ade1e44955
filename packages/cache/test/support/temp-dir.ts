import { existsSync, readdirSync, readlinkSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, expect } from 'vitest';

/** Files under `dir` this process holds open (Linux). */
export function openFilesUnder(dir: string): string[] {
  if (!existsSync('/proc/self/fd')) return [];
  const found: string[] = [];
  for (const fd of readdirSync('/proc/self/fd')) {
    let target = '';
    try {
      target = readlinkSync(`/proc/self/fd/${fd}`);
    } catch {
      // The descriptor readdir itself used is gone by now.
    }
    if (target.startsWith(`${dir}/`)) found.push(target);
  }
  return found;
}

/**
 * Returns a function that makes a fresh temporary directory. After each test every directory it
 * made is removed, and the test fails if a file in one is still open: a leaked handle is a bug.
 */
export function useTempDirs(prefix: string, base = tmpdir()): () => Promise<string> {
  const made: string[] = [];
  afterEach(async () => {
    const dirs = made.splice(0);
    const leaked = dirs.flatMap(openFilesUnder);
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
    expect(leaked, 'files left open').toEqual([]);
  });
  return async () => {
    const dir = await mkdtemp(join(base, `ivmr-${prefix}-`));
    made.push(dir);
    return dir;
  };
}
