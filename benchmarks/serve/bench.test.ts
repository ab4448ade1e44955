import { execFile } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

// Runs the real serve benchmark (built `ivmr`, fio's nfs engine, nfs-ganesha, a network
// namespace) on the smallest disk it takes with 1-second jobs, so it cannot rot unnoticed. The
// first run on a machine builds fio and installs nfs-ganesha (the benchmark's own set-up). The
// figures are noise at this size and are not checked: that every run, check and file is there is.
const run = fileURLToPath(new URL('./run.mjs', import.meta.url));
const JOBS = [
  'randread-4k-qd1',
  'randread-4k-qd16',
  'read-512k-qd4',
  'randwrite-4k-qd16',
  'randrw-4k-qd16',
];
// ivmr-s3: the lz4 store in a bucket of a Ceph RADOS Gateway the benchmark starts (issue #8).
const SERVERS = ['ivmr-lz4', 'ivmr-zstd', 'ivmr-s3', 'ganesha'];

interface Run {
  job: string;
  temp: string;
  server: string;
  hung: boolean;
  error: string | null;
  iops: number;
  p99Us: number;
  ios: number;
  serverCpuSeconds: number;
  bySecond?: { ios: number; tailShare: number }[];
}

describe('serve benchmark', () => {
  it('runs every job on every server, checks bytes, and writes JSON, markdown and SVG', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ivmr-serve-bench-test-'));
    try {
      const out = join(dir, 'out');
      const args = [run, '--size', '128M', '--runtime', '1', '--ramp', '0', '--rounds', '1'];
      args.push('--stores', 'lz4,zstd,s3');
      const { stdout } = await promisify(execFile)(
        process.execPath,
        [...args, '--out', out, '--tmp', dir],
        { timeout: 1_500_000, maxBuffer: 64 * 1024 * 1024 },
      );
      expect(stdout).toContain('| 4 KiB random read, QD16 | warm |');
      expect((await readdir(out)).sort()).toEqual(['serve.json', 'serve.md', 'serve.svg']);

      const r = JSON.parse(await readFile(join(out, 'serve.json'), 'utf8'));
      expect(r.options.jobs).toEqual(JOBS);
      // Byte checks through every server: whole-disk hashes and fio's verified writes.
      for (const server of SERVERS) {
        const checks = r.checks.filter((c: { server: string }) => c.server === server);
        expect(checks.length, server).toBeGreaterThan(0);
      }
      expect(r.checks.every((c: { ok: boolean }) => c.ok)).toBe(true);
      const hashes = new Set(
        r.checks.filter((c: { hash?: string }) => c.hash).map((c: { hash: string }) => c.hash),
      );
      expect(hashes.size).toBe(1);

      // Reads run cold and warm, writes warm only; each on every server, each with figures.
      const runs = r.runs as Run[];
      for (const job of JOBS) {
        const temps = job.includes('write') || job.includes('rw') ? ['warm'] : ['cold', 'warm'];
        for (const temp of temps) {
          for (const server of SERVERS) {
            const done = runs.filter(
              (x) => x.job === job && x.temp === temp && x.server === server && !x.hung,
            );
            expect(done, `${job} ${temp} ${server}`).toHaveLength(1);
            const [x] = done;
            expect(x!.error).toBeNull();
            for (const n of [x!.iops, x!.p99Us, x!.serverCpuSeconds]) {
              expect(Number.isFinite(n) && n > 0, `${job} ${temp} ${server}`).toBe(true);
            }
          }
        }
      }
      // The job with a latency target logged every I/O: each cold 4 KiB QD16 run has its
      // seconds, which hold all its I/Os but the last iodepth - 1 (fio's JSON counts those, its
      // log does not), and the shares of its slowest 1% add up to all of them.
      for (const server of SERVERS) {
        const [x] = runs.filter(
          (x) => x.job === 'randread-4k-qd16' && x.temp === 'cold' && x.server === server,
        );
        const seconds = x!.bySecond ?? [];
        expect(seconds.length, server).toBeGreaterThan(0);
        const logged = seconds.reduce((a, s) => a + s.ios, 0);
        expect(logged, server).toBeGreaterThanOrEqual(x!.ios - 15);
        expect(logged, server).toBeLessThanOrEqual(x!.ios);
        expect(seconds.reduce((a, s) => a + s.tailShare, 0)).toBeCloseTo(1, 6);
      }
      const md = await readFile(join(out, 'serve.md'), 'utf8');
      expect(md).toContain('4 KiB random read, QD16, cold, second by second');
      // The cold sequential target gets the most this machine's cores could do at its CPU cost.
      expect(md).toMatch(/CPU ceiling of "cold 512 KiB sequential read[^\n]*lz4: [^\n]* MB\/s/);
      // Every target is evaluated against a measured figure (met or not is the machine's).
      expect(r.targets.length).toBeGreaterThan(0);
      for (const t of r.targets) {
        expect(Number.isFinite(t.measured), t.id).toBe(true);
        expect(typeof t.met).toBe('boolean');
      }
      // The S3 store's peer, S3Store's own GETs against the same gateway, was measured.
      expect(r.s3Gets.random64k.getsPerSecond).toBeGreaterThan(0);
      expect(r.s3Gets.sequential1m.mbPerSecond).toBeGreaterThan(0);
      expect(await readFile(join(out, 'serve.svg'), 'utf8')).toMatch(/^<svg[\s\S]*<\/svg>\s*$/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }, 1_600_000);
});
