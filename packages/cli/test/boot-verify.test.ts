import { chmod, copyFile, cp, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  lockPort111,
  requirePortFree,
  requireTools,
  run,
  runOk,
  tempDir,
} from '../../nfs/test/real-clients/harness.js';
import { checkBuilt, exited, hashTree, ivmr, logLines, serveArgs, startServe } from './helpers.js';
import { corruptBlock, type PointJson } from './repository-files.js';

// `ivmr verify --boot` boots the test VM of scripts/test-vm (a real BIOS, syslinux, Linux and
// busybox guest) from backup through the NFS datastore with qemu, under the port-111 lock
// (qemu's nfs:// driver finds the server through a portmapper on 111).

const SCRIPTS = fileURLToPath(new URL('../../../scripts/test-vm/', import.meta.url));

interface BootReport {
  readonly booted: boolean;
  readonly point: string;
  readonly descriptor?: { url: string; createType: string; extent: string; virtualSize: number };
  readonly heartbeat?: string;
  readonly timeToHeartbeatMs?: number;
  readonly bytesFromBackup: number;
  readonly bytesWritten: number;
  readonly prefetch?: {
    state: string;
    profilePoint: string;
    profileBytes: number;
    bytesLoaded: number;
    failures: number;
    firstError?: string;
  };
  readonly profile?: { path: string; reads: number; bytes: number };
  readonly reason?: string;
  readonly errors: { code: string; message: string }[];
  readonly serial: string;
}

/** `sha256=<hex> boots=<n>` of a disk, as the guest computes it, read without booting. */
async function checksum(disk: string): Promise<{ sha: string; boots: number }> {
  const r = await runOk('bash', [join(SCRIPTS, 'checksum.sh'), disk], 60_000);
  const m = /sha256=([0-9a-f]{64}) boots=(\d+)/.exec(r.toString());
  expect(m, r.toString()).not.toBeNull();
  return { sha: m![1]!, boots: Number(m![2]) };
}

describe('ivmr verify --boot', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>;
  let release111: (() => Promise<void>) | undefined;
  let tools: ReturnType<typeof requireTools>;
  let repo: string;
  let profiles: string;
  let diskSize: number;
  const points: { point: PointJson; expected: { sha: string; boots: number } }[] = [];

  beforeAll(async () => {
    await checkBuilt();
    tools = requireTools('qemu-system-x86_64');
    tmp = await tempDir();
    const built = await runOk('bash', [join(SCRIPTS, 'build.sh')], 600_000);
    const image = built.toString().trim().split('\n').at(-1)!;
    const disk = join(tmp.path, 'tvm.raw');
    await copyFile(image, disk);
    await chmod(disk, 0o644);
    diskSize = (await stat(disk)).size;
    repo = join(tmp.path, 'repo');
    profiles = join(tmp.path, 'profiles');
    const backup = async () => {
      const b = await ivmr(['backup', disk, '--repo', repo, '--vm', 'tvm', '--json']);
      expect(b.code, b.stderr).toBe(0);
      points.push({ point: JSON.parse(b.stdout) as PointJson, expected: await checksum(disk) });
    };
    await backup();
    // The guest changes its disk (boot-count) at every boot: boot the image once, then back it
    // up again, so the second point differs from the first.
    const boot = await run(
      tools['qemu-system-x86_64'],
      [
        '-accel',
        'tcg',
        '-m',
        '256',
        '-display',
        'none',
        '-monitor',
        'none',
        '-serial',
        'stdio',
        '-nic',
        'none',
        '-no-reboot',
        '-drive',
        `file=${disk},format=raw,if=virtio`,
      ],
      120_000,
    );
    expect(boot.stdout.toString()).toMatch(/IVMR-HEARTBEAT .* boots=1/);
    await backup();
    expect(points[1]!.expected.boots).toBe(1);
    release111 = await lockPort111();
    await requirePortFree(111);
  }, 900_000);

  afterAll(async () => {
    await release111?.();
    await tmp?.remove();
  });

  it('boots every point of a chain from backup, each with the data of that point', async () => {
    const before = await hashTree(repo);
    for (const [i, { point, expected }] of points.entries()) {
      const r = await ivmr([
        'verify',
        '--boot',
        '--repo',
        repo,
        '--vm',
        `tvm@${point.id}`,
        '--min-free',
        '64M',
        '--timeout',
        '90',
        '--boot-profiles',
        profiles,
        '--json',
      ]);
      expect(r.code, r.stderr + r.stdout).toBe(0);
      const report = JSON.parse(r.stdout) as BootReport;
      expect(report.booted).toBe(true);
      expect(report.point).toBe(point.id);
      // The disk was reached the way a hypervisor reaches it: through its VMDK descriptor, which
      // qemu's VMDK driver read as a disk of the image's size, naming the flat file booted.
      expect(report.descriptor).toEqual({
        url: expect.stringMatching(/^nfs:\/\/127\.0\.0\.1\/ivmr\/[^/]+\/tvm\.vmdk$/),
        createType: 'vmfs',
        extent: 'tvm-flat.vmdk',
        virtualSize: diskSize,
      });
      // The guest hashed the files it read from this point's disk, and counted this boot.
      expect(report.heartbeat).toBe(
        `IVMR-HEARTBEAT sha256=${expected.sha} boots=${expected.boots + 1}`,
      );
      expect(report.timeToHeartbeatMs).toBeGreaterThan(0);
      expect(report.bytesFromBackup).toBeGreaterThan(1024 * 1024);
      expect(report.bytesWritten).toBeGreaterThan(0);
      expect(report.errors).toEqual([]);
      // Each boot that reached the heartbeat saved the VM's boot profile: the kernel and the
      // initramfs (15 MB) at least, in ranges of 64 KiB granules.
      expect(report.profile?.bytes).toBeGreaterThan(15 * 1024 * 1024);
      expect(report.profile!.bytes % 65536).toBe(0);
      const saved = JSON.parse(await readFile(report.profile!.path, 'utf8'));
      expect(saved).toMatchObject({ vm: 'tvm', point: point.id });
      expect(saved.reads).toHaveLength(report.profile!.reads);
      if (i === 0) {
        // The first verified boot had no profile to prefetch.
        expect(report.prefetch).toBeUndefined();
      } else {
        // Later boots prefetch the profile of the boot before, of another point: the guest
        // still sees this point's data (the heartbeat above), as prefetch only warms the cache.
        expect(report.prefetch).toMatchObject({
          state: 'done',
          profilePoint: points[i - 1]!.point.id,
          failures: 0,
        });
        expect(report.prefetch!.bytesLoaded).toBeGreaterThan(15 * 1024 * 1024);
      }
    }
    // Sandbox: the guest's writes went nowhere near the repository.
    expect(await hashTree(repo)).toBe(before);
  }, 300_000);

  it('serve prefetches a VM that has a boot profile before it says ready', async () => {
    const cache = join(tmp.path, 'serve-cache');
    const s = await startServe([
      ...serveArgs(repo, cache, ['tvm'], 'off'),
      '--boot-profiles',
      profiles,
      '--boot-prefetch',
      'wait',
    ]);
    try {
      const r = await ivmr(['sessions', '--cache', cache, '--json']);
      expect(r.code, r.stderr).toBe(0);
      const [session] = (
        JSON.parse(r.stdout) as { sessions: { prefetch?: BootReport['prefetch'] }[] }
      ).sessions;
      expect(session?.prefetch).toMatchObject({ state: 'done', failures: 0 });
      expect(session!.prefetch!.bytesLoaded).toBeGreaterThan(15 * 1024 * 1024);
      const text = await ivmr(['sessions', '--cache', cache]);
      expect(text.stdout).toMatch(/done \d+(\.\d+)? MiB\/\d+(\.\d+)? MiB/);
    } finally {
      s.child.kill('SIGTERM');
      await exited(s.child);
    }
    expect(logLines(s.stderr()).map((l) => l.msg)).toEqual(
      expect.arrayContaining(['boot prefetch started', 'boot prefetch ended']),
    );
  }, 120_000);

  it('a point with a corrupt blob in the kernel fails with a report naming the blob', async () => {
    const damaged = join(tmp.path, 'damaged');
    await cp(repo, damaged, { recursive: true });
    // Block 8 (8..9 MiB) lies in the boot partition (1..25 MiB), inside the 14 MB kernel.
    const { blob } = await corruptBlock(damaged, points[0]!.point, 8);
    const r = await ivmr([
      'verify',
      '--boot',
      '--repo',
      damaged,
      '--vm',
      'tvm',
      '--point',
      points[0]!.point.id,
      '--min-free',
      '64M',
      '--timeout',
      '20',
      '--boot-profiles',
      profiles,
      '--json',
    ]);
    expect(r.code).toBe(3);
    const report = JSON.parse(r.stdout) as BootReport;
    expect(report.booted).toBe(false);
    // The prefetch of the VM's profile met the damaged block, and a failed boot saves no profile.
    expect(report.prefetch?.failures).toBeGreaterThan(0);
    expect(report.prefetch?.firstError).toContain(blob);
    expect(report.profile).toBeUndefined();
    expect(report.heartbeat).toBeUndefined();
    expect(report.errors.length).toBeGreaterThan(0);
    expect(report.errors[0]!.code).toBe('IVMR_CHUNK_CORRUPT');
    expect(report.errors[0]!.message).toContain(blob);
    expect(report.reason).toContain(blob);
    expect(r.stderr).toMatch(/did not boot/);
  }, 120_000);
});
