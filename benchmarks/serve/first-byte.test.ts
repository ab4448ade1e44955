import { execFile } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

// Runs the real time-to-first-byte benchmark (built `ivmr`, qemu-io, a network namespace) on a
// small sparse disk with one round, so it cannot rot unnoticed. The figures are not checked
// (speed is reported, not asserted): that every figure, byte check and target is there is.
const script = fileURLToPath(new URL('./first-byte.mjs', import.meta.url));
const SIZE = 4 * 1024 ** 3;
const DATA = 8 * 1024 ** 2;
const FIGURES = [
  'readySeconds',
  'firstReadSeconds',
  'firstClientSeconds',
  'netFirstReadSeconds',
  'harnessLagSeconds',
  'rssBytes',
  'peakRssBytes',
  'serverCpuSeconds',
];

interface Check {
  round: number;
  what: string;
  offset: number;
  bytes: number;
  ok: boolean;
}

describe('serve time-to-first-byte benchmark', () => {
  it('starts ivmr serve, reads checked bytes through qemu-io, evaluates the targets', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ivmr-first-byte-test-'));
    try {
      const out = join(dir, 'out');
      const args = [script, '--size', '4G', '--data', '8M', '--rounds', '1'];
      const { stdout } = await promisify(execFile)(
        process.execPath,
        [...args, '--out', out, '--tmp', dir],
        { timeout: 300_000, maxBuffer: 16 * 1024 * 1024 },
      );
      expect(stdout).toContain('| Target (issue) |');
      expect((await readdir(out)).sort()).toEqual(['serve-first-byte.json', 'serve-first-byte.md']);
      // The benchmark's own temp folder (image, repository, cache) is gone.
      expect((await readdir(dir)).filter((f) => f.startsWith('ivmr-bench-'))).toEqual([]);

      const r = JSON.parse(await readFile(join(out, 'serve-first-byte.json'), 'utf8'));
      expect(r.benchmark).toBe('ivmr-serve-first-byte');
      for (const key of ['date', 'node', 'platform', 'command']) {
        expect(typeof r[key], key).toBe('string');
      }
      expect(r.cpu.count).toBeGreaterThan(0);
      expect(r.versions.qemuIo).toMatch(/qemu-io/);
      expect(r.disk.size).toBe(SIZE);
      expect(r.disk.dataBytes).toBe(DATA);
      // Data at the very start and the very end, the rest spread out; the image stayed sparse.
      const places = r.disk.places as { offset: number; length: number }[];
      expect(places[0]!.offset).toBe(0);
      expect(places.at(-1)!.offset + places.at(-1)!.length).toBe(SIZE);
      expect(places.reduce((a, p) => a + p.length, 0)).toBe(DATA);
      expect(r.disk.allocatedBytes).toBeLessThan(SIZE / 16);
      expect(r.backup.seconds).toBeGreaterThan(0);
      expect(r.backup.storedBytes).toBeGreaterThan(0);

      // One round with every figure measured.
      expect(r.rounds).toHaveLength(1);
      const round = r.rounds[0];
      for (const f of FIGURES) {
        expect(Number.isFinite(round[f]), f).toBe(true);
        expect(Number.isFinite(r.summary[f].median) && Number.isFinite(r.summary[f].max), f).toBe(
          true,
        );
      }
      expect(round.clientAgainSeconds).toHaveLength(r.options.repeats);
      expect(round.firstReadSeconds).toBeGreaterThan(round.readySeconds);
      expect(round.readySeconds).toBeGreaterThan(0);
      expect(round.peakRssBytes).toBeGreaterThanOrEqual(round.rssBytes);
      expect(round.rssBytes).toBeGreaterThan(0);

      // Every read's bytes were checked: data in the middle (the timed one, then again), a hole,
      // offset 0 and the last 4 KiB.
      const checks = r.checks as Check[];
      expect(checks.every((c) => c.ok && c.bytes === 4096)).toBe(true);
      const offsets = new Set(checks.map((c) => c.offset));
      for (const read of r.reads) expect(offsets.has(read.offset), read.what).toBe(true);
      expect(offsets.has(0)).toBe(true);
      expect(offsets.has(SIZE - 4096)).toBe(true);
      expect(checks.filter((c) => c.what.startsWith('first read'))).toHaveLength(
        1 + r.options.repeats,
      );

      // Both targets evaluated against a measured figure (met or not is the machine's).
      expect(r.targets.map((t: { id: string }) => t.id)).toEqual(['first-read', 'rss']);
      for (const t of r.targets) {
        expect(Number.isFinite(t.measured), t.id).toBe(true);
        expect(typeof t.met, t.id).toBe('boolean');
        expect(typeof t.metEveryRound, t.id).toBe('boolean');
        expect(t.met).toBe(t.measured < t.value);
      }
      const md = await readFile(join(out, 'serve-first-byte.md'), 'utf8');
      expect(md).toContain('first 4 KiB READ answered');
      expect(md).toContain('all right');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }, 320_000);

  it('runs from an S3 repository on a Ceph RADOS Gateway it starts (--store s3)', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ivmr-first-byte-s3-test-'));
    try {
      const out = join(dir, 'out');
      const args = [script, '--size', '1G', '--data', '4M', '--rounds', '1', '--store', 's3'];
      await promisify(execFile)(process.execPath, [...args, '--out', out, '--tmp', dir], {
        timeout: 400_000,
        maxBuffer: 16 * 1024 * 1024,
      });
      expect((await readdir(out)).sort()).toEqual([
        'serve-first-byte-s3.json',
        'serve-first-byte-s3.md',
      ]);
      const r = JSON.parse(await readFile(join(out, 'serve-first-byte-s3.json'), 'utf8'));
      expect(r.options.store).toBe('s3');
      expect(r.backup.storedBytes).toBeGreaterThan(0);
      expect(r.rounds).toHaveLength(1);
      expect(r.rounds[0].firstReadSeconds).toBeGreaterThan(r.rounds[0].readySeconds);
      expect((r.checks as Check[]).every((c) => c.ok && c.bytes === 4096)).toBe(true);
      expect(await readFile(join(out, 'serve-first-byte-s3.md'), 'utf8')).toContain(
        'Ceph RADOS Gateway',
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }, 420_000);
});
