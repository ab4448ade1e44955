import type { ChildProcess } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  lockPort111,
  requirePortFree,
  requireTools,
  runOk,
  tempDir,
} from '../../nfs/test/real-clients/harness.js';
import { type Ceph, exportCredentials, startCeph } from '../../store-s3/test/ceph.js';
import { checkBuilt, exited, ivmr, pseudoRandom, serveArgs, startServe } from './helpers.js';

// `--repo s3://bucket/prefix` in every command, against a real single-node Ceph cluster with
// its RADOS Gateway (scripts/ceph/cluster.sh): backup, list, verify, restore, and serve with
// qemu-img compare over nfs://.

const MIB = 1024 * 1024;

describe('ivmr with an s3:// repository', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>;
  let ceph: Ceph;
  let release111: (() => Promise<void>) | undefined;
  let tools: ReturnType<typeof requireTools>;
  const children: ChildProcess[] = [];
  const repo = 's3://ivmr-cli-test/repos/a';
  let s3: string[];
  let image: Buffer;

  beforeAll(async () => {
    await checkBuilt();
    tools = requireTools('qemu-img');
    tmp = await tempDir();
    ceph = await startCeph(join(tmp.path, 'ceph'));
    // The AWS conventions: credentials from the environment (the children inherit it).
    exportCredentials(ceph);
    s3 = ['--repo', repo, '--s3-endpoint', ceph.endpoint];
    image = pseudoRandom(5 * MIB + 4096, 21);
    image.fill(0, MIB, 2 * MIB);
    await writeFile(join(tmp.path, 'web01.raw'), image);
  }, 360_000);

  afterAll(async () => {
    for (const c of children) {
      c.kill('SIGKILL');
      await exited(c);
    }
    await release111?.();
    await ceph?.stop();
    await tmp?.remove();
  });

  it('backs up into a new bucket, lists, verifies and restores', async () => {
    const b = await ivmr(['backup', join(tmp.path, 'web01.raw'), ...s3, '--vm', 'web01', '--json']);
    expect(b.code, b.stderr).toBe(0);
    const point = JSON.parse(b.stdout) as { id: string };
    const l = await ivmr(['list', ...s3, '--json']);
    expect(l.code, l.stderr).toBe(0);
    expect(l.stdout).toContain(point.id);
    const v = await ivmr(['verify', ...s3]);
    expect(v.code, v.stderr).toBe(0);
    expect(v.stdout).toMatch(/no damage/);
    const out = join(tmp.path, 'restored');
    const r = await ivmr(['restore', ...s3, '--vm', 'web01', '--out', out]);
    expect(r.code, r.stderr).toBe(0);
    expect((await readFile(join(out, 'web01.raw'))).equals(image)).toBe(true);
    // The endpoint may come from the AWS environment instead of --s3-endpoint.
    const e = await ivmr(['list', '--repo', repo, '--json'], { AWS_ENDPOINT_URL: ceph.endpoint });
    expect(e.code, e.stderr).toBe(0);
    expect(e.stdout).toContain(point.id);
  }, 120_000);

  it('serves the VM from S3: qemu-img compare over nfs:// matches the image', async () => {
    release111 = await lockPort111();
    await requirePortFree(111);
    const s = await startServe([
      ...serveArgs(repo, join(tmp.path, 'cache'), ['web01']),
      '--s3-endpoint',
      ceph.endpoint,
    ]);
    children.push(s.child);
    await runOk(
      tools['qemu-img'],
      [
        'compare',
        '-f',
        'raw',
        '-F',
        'raw',
        'nfs://127.0.0.1/ivmr/web01/web01-flat.vmdk',
        join(tmp.path, 'web01.raw'),
      ],
      60_000,
    );
    s.child.kill('SIGTERM');
    await exited(s.child);
    await release111();
    release111 = undefined;
  }, 120_000);

  it('names a missing repository in a bucket, and an s3:// URL without a bucket', async () => {
    const missing = await ivmr([
      'list',
      '--repo',
      's3://ivmr-cli-test/nothing',
      '--s3-endpoint',
      ceph.endpoint,
    ]);
    expect(missing.code).not.toBe(0);
    expect(missing.stderr).toMatch(/not found|NOT_FOUND|no repository/i);
    const bad = await ivmr(['list', '--repo', 's3:///x', '--s3-endpoint', ceph.endpoint]);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/expected s3:\/\/bucket/);
  }, 60_000);
});
