import { execFile } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

// Runs the real boot benchmark (the test VM, qemu under TCG, nfs-ganesha, ivmr's datastore, two
// network namespaces) for one round of seven of its variants, so that it cannot rot unnoticed.
// Times are not checked (they are the machine's); that every boot reached the heartbeat with
// the image's data, and that the files are there, is.
const run = fileURLToPath(new URL('./run.mjs', import.meta.url));
const VARIANTS = [
  'raw',
  'ganesha',
  'ivmr',
  'remote',
  'remote-prefetch-bg',
  'ivmr-prefetch',
  // From S3 on a Ceph RADOS Gateway the benchmark starts in its namespace (issue #8).
  's3',
];

describe('boot benchmark', () => {
  it('boots every variant once with the right data, and writes JSON and markdown', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ivmr-boot-bench-test-'));
    try {
      const out = join(dir, 'out');
      const { stdout } = await promisify(execFile)(
        process.execPath,
        [
          run,
          '--rounds',
          '1',
          '--latency-ms',
          '5',
          '--variants',
          VARIANTS.join(','),
          '--out',
          out,
          '--tmp',
          dir,
        ],
        { timeout: 900_000, maxBuffer: 16 * 1024 * 1024 },
      );
      expect(stdout).toContain('| ivmr, cold |');
      expect((await readdir(out)).sort()).toEqual(['boot.json', 'boot.md']);
      const r = JSON.parse(await readFile(join(out, 'boot.json'), 'utf8'));
      expect(r.profile.bytes).toBeGreaterThan(15 * 1024 * 1024);
      expect(r.runs.map((x: { variant: string }) => x.variant).sort()).toEqual(
        [...VARIANTS].sort(),
      );
      for (const x of r.runs) {
        // ok: the heartbeat carried the checksum of the image's files.
        expect(x.ok, `${x.variant}: ${x.error}`).toBe(true);
        expect(x.ms).toBeGreaterThan(0);
        expect(x.beforeKernelMs, x.variant).toBeGreaterThan(0);
        expect(x.beforeKernelMs, x.variant).toBeLessThan(x.ms);
        if (x.variant.includes('prefetch')) {
          expect(x.prefetchState, x.variant).toBe('done');
          expect(x.prefetchBytes, x.variant).toBeGreaterThan(15 * 1024 * 1024);
        }
      }
      for (const s of r.summary) expect(s.boots, s.variant).toBe(1);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }, 1_000_000);
});
