import type { ChildProcess } from 'node:child_process';
import { readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  lockPort111,
  requirePortFree,
  requireTools,
  run,
  runOk,
  tempDir,
} from '../../nfs/test/real-clients/harness.js';
import { checkBuilt, exited, hashTree, ivmr, pseudoRandom, startServe } from './helpers.js';

const MIB = 1024 * 1024;

describe('ivmr serve', () => {
  let tools: ReturnType<typeof requireTools>;
  let tmp: Awaited<ReturnType<typeof tempDir>>;
  let release111: (() => Promise<void>) | undefined;
  let image: Buffer;
  const children: ChildProcess[] = [];

  beforeAll(async () => {
    await checkBuilt();
    tools = requireTools('qemu-img', 'qemu-io');
    tmp = await tempDir();
    image = pseudoRandom(6 * MIB + 512, 11);
    image.fill(0, 2 * MIB, 4 * MIB);
    await writeFile(join(tmp.path, 'db01.raw'), image);
    const b = await ivmr([
      'backup',
      join(tmp.path, 'db01.raw'),
      '--repo',
      join(tmp.path, 'repo'),
      '--vm',
      'db01',
    ]);
    expect(b.code, b.stderr).toBe(0);
    release111 = await lockPort111();
    await requirePortFree(111);
  });

  afterAll(async () => {
    for (const c of children) {
      c.kill('SIGKILL');
      await exited(c);
    }
    await release111?.();
    await tmp?.remove();
  });

  it('serves a VM, keeps flushed writes across kill -9, and never writes the repository', async () => {
    const repo = join(tmp.path, 'repo');
    const cache = join(tmp.path, 'cache');
    const repoHash = await hashTree(repo);
    const args = [
      '--repo',
      repo,
      '--cache',
      cache,
      '--vm',
      'db01',
      '--nfs-port',
      '0',
      '--mount-port',
      '0',
      '--portmap',
      'embedded',
    ];
    const first = await startServe(args);
    children.push(first.child);
    expect(first.ready.portmapPort).toBe(111);
    expect(first.ready.sessions).toEqual([
      expect.objectContaining({ name: 'db01', disks: ['db01/db01-flat.vmdk'] }),
    ]);
    const url = 'nfs://127.0.0.1/ivmr/db01/db01-flat.vmdk';
    await runOk(
      tools['qemu-img'],
      ['compare', '-f', 'raw', '-F', 'raw', url, join(tmp.path, 'db01.raw')],
      60_000,
    );
    await runOk(tools['qemu-io'], [
      '-f',
      'raw',
      '-c',
      'write -P 0x3c 512 8192',
      '-c',
      'write -P 0xc3 3145728 65536',
      url,
    ]);

    first.child.kill('SIGKILL');
    await exited(first.child);

    const second = await startServe([
      '--repo',
      repo,
      '--cache',
      cache,
      '--nfs-port',
      '0',
      '--mount-port',
      '0',
      '--portmap',
      'embedded',
    ]);
    children.push(second.child);
    expect(second.ready.sessions.map((s) => s.name)).toEqual(['db01']);
    const r = await run(tools['qemu-io'], [
      '-f',
      'raw',
      '-c',
      'read -P 0x3c 512 8192',
      '-c',
      'read -P 0xc3 3145728 65536',
      url,
    ]);
    expect(r.stdout.toString()).not.toMatch(/Pattern verification failed/);
    expect(r.code).toBe(0);
    const expected = Buffer.from(image);
    expected.fill(0x3c, 512, 512 + 8192);
    expected.fill(0xc3, 3 * MIB, 3 * MIB + 65536);
    await writeFile(join(tmp.path, 'expected.raw'), expected);
    await runOk(
      tools['qemu-img'],
      ['compare', '-f', 'raw', '-F', 'raw', url, join(tmp.path, 'expected.raw')],
      60_000,
    );

    second.child.kill('SIGTERM');
    await exited(second.child);
    expect(second.child.exitCode).toBe(0);
    expect(await hashTree(repo)).toBe(repoHash);
  });

  it('a sandbox session leaves nothing behind after a clean stop', async () => {
    const cache = join(tmp.path, 'sandbox-cache');
    const s = await startServe([
      '--repo',
      join(tmp.path, 'repo'),
      '--cache',
      cache,
      '--vm',
      'db01',
      '--sandbox',
      '--nfs-port',
      '0',
      '--mount-port',
      '0',
      '--portmap',
      'embedded',
    ]);
    children.push(s.child);
    await runOk(tools['qemu-io'], [
      '-f',
      'raw',
      '-c',
      'write -P 0x11 0 4096',
      'nfs://127.0.0.1/ivmr/db01/db01-flat.vmdk',
    ]);
    s.child.kill('SIGTERM');
    await exited(s.child);
    expect(s.child.exitCode).toBe(0);
    expect(await readdir(join(cache, 'sessions'))).toEqual([]);
  });

  it('fails with one line for an unknown VM and for a port in use', async () => {
    const unknown = await ivmr([
      'serve',
      '--repo',
      join(tmp.path, 'repo'),
      '--cache',
      join(tmp.path, 'c3'),
      '--vm',
      'nope',
      '--nfs-port',
      '0',
      '--portmap',
      'off',
    ]);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr.trim().split('\n')).toHaveLength(1);
    expect(unknown.stderr).toMatch(/IVMR_NOT_FOUND/);
    const busy = await startServe([
      '--repo',
      join(tmp.path, 'repo'),
      '--cache',
      join(tmp.path, 'c4'),
      '--vm',
      'db01',
      '--nfs-port',
      '0',
      '--portmap',
      'off',
    ]);
    children.push(busy.child);
    const clash = await ivmr([
      'serve',
      '--repo',
      join(tmp.path, 'repo'),
      '--cache',
      join(tmp.path, 'c5'),
      '--vm',
      'db01',
      '--nfs-port',
      String(busy.ready.nfsPort),
      '--portmap',
      'off',
    ]);
    expect(clash.code).toBe(1);
    expect(clash.stderr).toMatch(/cannot listen/);
    // The failed start left no session behind.
    expect(await readdir(join(tmp.path, 'c5', 'sessions'))).toEqual([]);
    busy.child.kill('SIGTERM');
    await exited(busy.child);
  });
});
