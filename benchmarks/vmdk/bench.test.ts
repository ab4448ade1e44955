import { execFile } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

// Runs the real VMDK benchmark (the built @ivmr/vmdk, as `pnpm bench:vmdk` does) at a tiny size,
// so it cannot rot unnoticed. The figures are noise at this size and are not checked.
const run = fileURLToPath(new URL('./run.mjs', import.meta.url));

interface Row {
  id: string;
  value: number;
  seconds: number;
  ratioToFile: number;
  ratioToNull: number;
  qemuToFile: { value: number; seconds: number };
  limit: { value: number };
  limitRatio: number;
}

describe('vmdk benchmark', () => {
  let dir: string;
  let stdout: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ivmr-vmdk-bench-test-'));
    const args = [run, '--size', '8M', '--repeat', '1', '--out', dir, '--tmp', dir];
    ({ stdout } = await promisify(execFile)(process.execPath, args, { timeout: 30_000 }));
  }, 30_000);

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('exits 0, prints the table and leaves only its results behind', async () => {
    expect(stdout).toContain('| Figure | SparseVmdk | qemu-img convert → raw file |');
    expect((await readdir(dir)).sort()).toEqual(['vmdk.json', 'vmdk.md']);
  });

  it('writes every figure with both qemu-img ratios and its limit', async () => {
    const r = JSON.parse(await readFile(join(dir, 'vmdk.json'), 'utf8'));
    expect(r.options).toMatchObject({ size: 8 * 1024 * 1024, repeat: 1 });
    expect(r.qemu).toMatch(/^qemu-img version/);
    expect(r.rows.map((x: Row) => x.id)).toEqual([
      'vmdk.monolithicSparse.qd1',
      'vmdk.monolithicSparse.qd4',
      'vmdk.streamOptimized.qd1',
      'vmdk.streamOptimized.qd4',
    ]);
    for (const x of r.rows as Row[]) {
      for (const n of [x.value, x.seconds, x.ratioToFile, x.ratioToNull, x.limit.value]) {
        expect(Number.isFinite(n) && n > 0).toBe(true);
      }
      expect(x.ratioToFile).toBeCloseTo(x.value / x.qemuToFile.value);
      expect(x.limitRatio).toBeCloseTo(x.value / x.limit.value);
    }
  });
});
