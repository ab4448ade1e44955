import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { readdir, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  ErrorCode,
  MemoryBlockSource,
  openLocalRepository,
  type Repository,
} from '../src/index.js';
import { expectBytes, randomBytesFrom } from './support/bytes.js';
import { useTempDirs } from './support/temp-dir.js';

const tempDir = useTempDirs('locks');
const children: ChildProcess[] = [];

afterEach(async () => {
  for (const child of children.splice(0)) {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await once(child, 'exit');
    }
  }
});

/** A live process of this host that is not us: its pid holds "another ivmr's" lock. */
async function otherLiveProcess(): Promise<number> {
  const child = spawn('sleep', ['30'], { stdio: 'ignore' });
  children.push(child);
  await once(child, 'spawn');
  return child.pid!;
}

/** The pid of a process that has exited (and been reaped). */
async function deadPid(): Promise<number> {
  const child = spawn('true', { stdio: 'ignore' });
  await once(child, 'exit');
  const pid = child.pid!;
  expect(() => process.kill(pid, 0)).toThrow(expect.objectContaining({ code: 'ESRCH' }));
  return pid;
}

const DISK = randomBytesFrom(5, 200_000);

async function repoWithPoint(): Promise<{ dir: string; repo: Repository; point: string }> {
  const dir = await tempDir();
  const repo = await openLocalRepository(dir, { create: true, blockSize: 65536 });
  const p = await backup(repo);
  return { dir, repo, point: p.id };
}

function backup(repo: Repository) {
  return repo.backup({ vm: 'vm1', disks: [{ name: 'd0', source: new MemoryBlockSource(DISK) }] });
}

interface LockFile {
  exclusive: boolean;
  operation: string;
  host: string;
  pid: number;
  time: string;
}

async function writeLock(
  dir: string,
  lock: LockFile,
  name = 'lzzzzzzz-0123456789ab',
): Promise<string> {
  await writeFile(join(dir, 'locks', name), JSON.stringify(lock));
  return name;
}

function minutesAgo(m: number): string {
  return new Date(Date.now() - m * 60_000).toISOString();
}

describe('repository locks', () => {
  it('an exclusive lock of another live process makes backup, forget, openPoint and verify IVMR_LOCKED naming the holder', async () => {
    const { dir, repo, point } = await repoWithPoint();
    const pid = await otherLiveProcess();
    const holder = {
      exclusive: true,
      operation: 'backup web01',
      host: hostname(),
      pid,
      time: minutesAgo(1),
    };
    const lock = await writeLock(dir, holder);
    const locked = { code: ErrorCode.LOCKED, details: { lock, ...holder } };
    await expect(backup(repo)).rejects.toMatchObject(locked);
    await expect(backup(repo)).rejects.toThrow(`backup web01 (pid ${pid} on ${hostname()}`);
    await expect(repo.forget({ vm: 'vm1', keepLast: 1 })).rejects.toMatchObject(locked);
    await expect(repo.openPoint('vm1', point)).rejects.toMatchObject(locked);
    await expect(repo.verify()).rejects.toMatchObject(locked);
    await expect(repo.repair()).rejects.toMatchObject(locked);
    // Nothing was done, and the holder's lock is left alone.
    expect((await repo.listPoints('vm1')).map((p) => p.id)).toEqual([point]);
    expect(await readdir(join(dir, 'locks'))).toEqual([lock]);
    await repo.close();
  });

  it('a shared lock of another live process blocks backup and forget, not reads', async () => {
    const { dir, repo, point } = await repoWithPoint();
    const pid = await otherLiveProcess();
    const holder = {
      exclusive: false,
      operation: 'read vm1',
      host: hostname(),
      pid,
      time: minutesAgo(0),
    };
    const lock = await writeLock(dir, holder);
    await expect(backup(repo)).rejects.toMatchObject({ code: ErrorCode.LOCKED, details: { pid } });
    await expect(repo.forget({ vm: 'vm1', keepLast: 1 })).rejects.toMatchObject({
      code: ErrorCode.LOCKED,
      details: { pid },
    });
    const opened = await repo.openPoint('vm1', point);
    expectBytes(await opened.disk('d0').read(0, DISK.length), DISK);
    expect((await readdir(join(dir, 'locks'))).length).toBe(2);
    await opened.close();
    expect((await repo.verify()).ok).toBe(true);
    expect(await readdir(join(dir, 'locks'))).toEqual([lock]);
    await repo.close();
  });

  it('a lock of another host cannot be checked for liveness and is respected until it is old', async () => {
    const { dir, repo } = await repoWithPoint();
    const holder = {
      exclusive: true,
      operation: 'forget',
      host: `not-${hostname()}`,
      pid: 1,
      time: minutesAgo(29),
    };
    await writeLock(dir, holder);
    await expect(backup(repo)).rejects.toMatchObject({
      code: ErrorCode.LOCKED,
      details: { host: holder.host },
    });
    await writeLock(dir, { ...holder, time: minutesAgo(31) });
    await backup(repo);
    expect(await readdir(join(dir, 'locks'))).toEqual([]);
    await repo.close();
  });

  it.each([
    ['of a dead process', async () => ({ pid: await deadPid(), time: minutesAgo(1) })],
    [
      'older than 30 minutes',
      async () => ({ pid: await otherLiveProcess(), time: minutesAgo(31) }),
    ],
  ])('a stale lock (%s) is removed and the operation proceeds', async (_, stale) => {
    const { dir, repo } = await repoWithPoint();
    for (const op of ['backup', 'forget', 'openPoint'] as const) {
      const lock = {
        exclusive: true,
        operation: 'backup vm9',
        host: hostname(),
        ...(await stale()),
      };
      await writeLock(dir, lock);
      if (op === 'backup') await backup(repo);
      if (op === 'forget') await repo.forget({ vm: 'vm1', keepLast: 1 });
      if (op === 'openPoint') {
        const newest = (await repo.listPoints('vm1')).at(-1)!;
        const opened = await repo.openPoint('vm1', newest.id);
        expectBytes(await opened.disk('d0').read(0, DISK.length), DISK);
        await opened.close();
      }
      expect(await readdir(join(dir, 'locks')), op).toEqual([]);
    }
    await repo.close();
  });

  it('an unreadable lock is treated as held', async () => {
    const { dir, repo } = await repoWithPoint();
    await writeFile(join(dir, 'locks', 'garbled'), '{"exclusive": tr');
    await expect(backup(repo)).rejects.toMatchObject({
      code: ErrorCode.LOCKED,
      details: { lock: 'garbled' },
    });
    await repo.close();
  });

  it('locks of this process never conflict, and every lock is released', async () => {
    const { dir, repo, point } = await repoWithPoint();
    const opened = await repo.openPoint('vm1', point);
    // A shared lock of our own is held while an exclusive backup runs in the same process.
    const second = await backup(repo);
    expect(second.sequence).toBe(2);
    await opened.close();
    expect(await readdir(join(dir, 'locks'))).toEqual([]);
    await repo.close();
  });
});
