import { execFile } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

// Runs the real benchmark (the built @ivmr/core, as `pnpm bench` does) at a tiny size, so the
// benchmark cannot rot unnoticed. The figures themselves are not checked: they are noise here.
const run = fileURLToPath(new URL('./run.mjs', import.meta.url));

const ROWS = [
  'backup.full.lz4.1',
  'backup.full.lz4.2',
  'backup.full.zstd',
  'backup.incremental.hash',
  'backup.incremental.cbt',
  'read.sequential.cold',
  'read.sequential.cold.big-cache',
  'read.sequential.warm',
  'read.sequential.cold.zstd',
  'read.random.qd1.cold',
  'read.random.qd1.repeat',
  'read.random.qd1.cold.big-cache',
  'read.random.qd1.warm',
  'read.random.qd16.cold.big-cache',
  'read.random.qd16.warm',
];

interface Row {
  id: string;
  unit: string;
  value: number;
  seconds: number;
  limit: { name: string; value: number };
  ratio: number;
}

describe('core benchmark', () => {
  let dir: string;
  let stdout: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ivmr-bench-test-'));
    const args = [run, '--size', '16M', '--reads', '500', '--repeat', '1', '--out', dir];
    args.push('--tmp', dir, '--limit-ms', '50', '--micro-ms', '50');
    ({ stdout } = await promisify(execFile)(process.execPath, args, { timeout: 30_000 }));
  }, 30_000);

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('exits 0, prints the table and leaves only its results behind', async () => {
    expect(stdout).toContain('| Figure | Result | Limit |');
    expect((await readdir(dir)).sort()).toEqual(['core.json', 'core.md']);
    expect(await readFile(join(dir, 'core.md'), 'utf8')).toContain('Micro-benchmark');
  });

  it('writes every figure with its limit and ratio', async () => {
    const r = JSON.parse(await readFile(join(dir, 'core.json'), 'utf8'));
    expect(r.node).toBe(process.versions.node);
    expect(typeof r.cpu.model).toBe('string');
    expect(Number.isNaN(Date.parse(r.date))).toBe(false);
    expect(r.options).toMatchObject({ size: 16 * 1024 * 1024, reads: 500 });
    expect(r.rows.map((x: Row) => x.id)).toEqual(ROWS);
    for (const x of r.rows as Row[]) {
      expect(['MB/s', 'reads/s']).toContain(x.unit);
      for (const n of [x.value, x.seconds, x.limit.value, x.ratio]) {
        expect(Number.isFinite(n) && n > 0).toBe(true);
      }
      expect(x.ratio).toBeCloseTo(x.value / x.limit.value);
    }
    expect(r.limits.length).toBeGreaterThanOrEqual(9);
    expect(r.storage.map((s: { name: string }) => s.name)).toEqual([
      'lz4: full',
      'lz4: full + incremental',
      'zstd: full',
    ]);
    expect(r.image.changedBlocks).toBeGreaterThan(0);
    expect(r.micro.results.length).toBe(8);
  });
});
