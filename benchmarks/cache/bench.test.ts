import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

// Runs the real cache benchmark (the built @ivmr/cache) at a tiny size so it cannot rot
// unnoticed. The figures are noise here and are not checked; their presence and sanity are.
const run = fileURLToPath(new URL('./run.mjs', import.meta.url));

describe('cache benchmark', () => {
  it('runs, checks its bytes, and writes every figure', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ivmr-cache-bench-test-'));
    try {
      const args = [run, '--size', '16M', '--seconds', '0.5', '--out', dir, '--tmp', dir];
      const { stdout } = await promisify(execFile)(process.execPath, args, { timeout: 60_000 });
      expect(stdout).toContain('| Overlay random 4 KiB writes, flush every 64, QD1 |');
      const results = JSON.parse(await readFile(join(dir, 'cache.json'), 'utf8'));
      expect(results.rows.map((r: { figure: string }) => r.figure)).toEqual([
        'Overlay random 4 KiB writes, flush every 64, QD1',
        'Overlay random 4 KiB writes, flush every 64, QD16',
        'Read cache fill, sequential 1 MiB reads of an in-memory source',
        'Read cache hits, random 4 KiB, QD1',
        'Read cache hits, random 4 KiB, QD16',
        'Read cache hits, random 64 KiB, QD1',
      ]);
      for (const r of results.rows) expect(r.result).toBeGreaterThan(0);
      expect(await readFile(join(dir, 'cache.md'), 'utf8')).toContain('÷ node');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }, 90_000);
});
