import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { readdir, rm, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  ErrorCode,
  MemoryBlockSource,
  MemoryStore,
  openLocalRepository,
  Repository,
} from '../src/index.js';
import { expectBytes, randomBytesFrom } from './support/bytes.js';
import { FaultyStore } from './support/faulty-store.js';
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

function backup(repo: Repository, vm = 'vm1') {
  return repo.backup({ vm, disks: [{ name: 'd0', source: new MemoryBlockSource(DISK) }] });
}

interface LockFile {
  mode?: 'read' | 'write' | 'exclusive';
  exclusive: boolean;
  operation: string;
  host: string;
  pid: number;
  time: string;
  vm?: string;
  maps?: string[];
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

/** The lock of another live process of this host, refreshed just now. */
async function heldByOther(fields: Omit<LockFile, 'host' | 'pid' | 'time'>): Promise<LockFile> {
  return { ...fields, host: hostname(), pid: await otherLiveProcess(), time: minutesAgo(0) };
}

async function readsBack(repo: Repository, point: string): Promise<void> {
  const opened = await repo.openPoint('vm1', point);
  expectBytes(await opened.disk('d0').read(0, DISK.length), DISK);
  await opened.close();
}

describe('repository locks', () => {
  it('an exclusive lock (prune, repair) of another live process makes backup, forget, prune and repair IVMR_LOCKED naming the holder; reads go on', async () => {
    const { dir, repo, point } = await repoWithPoint();
    const holder = await heldByOther({ mode: 'exclusive', exclusive: true, operation: 'prune' });
    const { pid } = holder;
    const lock = await writeLock(dir, holder);
    const locked = { code: ErrorCode.LOCKED, details: { lock, ...holder } };
    await expect(backup(repo)).rejects.toMatchObject(locked);
    await expect(backup(repo)).rejects.toThrow(`prune (pid ${pid} on ${hostname()}`);
    await expect(repo.forget({ vm: 'vm1', keepLast: 1 })).rejects.toMatchObject(locked);
    await expect(repo.prune()).rejects.toMatchObject(locked);
    await expect(repo.repair()).rejects.toMatchObject(locked);
    await readsBack(repo, point);
    expect((await repo.verify()).ok).toBe(true);
    // Nothing was done, and the holder's lock is left alone.
    expect((await repo.listPoints('vm1')).map((p) => p.id)).toEqual([point]);
    expect(await readdir(join(dir, 'locks'))).toEqual([lock]);
    await repo.close();
  });

  it("a write lock (backup, forget) blocks writes of its VM and prune, not other VMs' backups or reads", async () => {
    const { dir, repo, point } = await repoWithPoint();
    const holder = await heldByOther({
      mode: 'write',
      exclusive: false,
      operation: 'backup vm1',
      vm: 'vm1',
    });
    const { pid } = holder;
    await writeLock(dir, holder);
    const locked = { code: ErrorCode.LOCKED, details: { pid, vm: 'vm1' } };
    await expect(backup(repo)).rejects.toMatchObject(locked);
    await expect(repo.forget({ vm: 'vm1', keepLast: 1 })).rejects.toMatchObject(locked);
    await expect(repo.prune()).rejects.toMatchObject(locked);
    const other = await backup(repo, 'vm2');
    expect(other.sequence).toBe(1);
    // forget of another VM removes its points but must skip the prune, and says why.
    await backup(repo, 'vm2');
    const report = await repo.forget({ vm: 'vm2', keepLast: 1 });
    expect(report.removed).toEqual([other.id]);
    expect(report.prune).toBeNull();
    expect(report.pruneSkipped).toContain('backup vm1');
    await readsBack(repo, point);
    await repo.close();
  });

  it('a read lease of another process blocks nothing; a reader of the first lock format holds prune off', async () => {
    const { dir, repo } = await repoWithPoint();
    const lease = await heldByOther({
      mode: 'read',
      exclusive: false,
      operation: 'read vm1',
      maps: [],
    });
    const { pid } = lease;
    const name = await writeLock(dir, lease);
    await backup(repo);
    await repo.forget({ vm: 'vm1', keepLast: 1 });
    await repo.prune();
    expect(await readdir(join(dir, 'locks'))).toEqual([name]);
    const { mode: _, maps: __, ...legacy } = lease;
    await writeLock(dir, legacy, name);
    await expect(repo.prune()).rejects.toMatchObject({ code: ErrorCode.LOCKED, details: { pid } });
    await backup(repo);
    await readsBack(repo, (await repo.listPoints('vm1')).at(-1)!.id);
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
  ])('a stale lock (%s) is removed by the next locker and the operation proceeds', async (_, stale) => {
    const { dir, repo } = await repoWithPoint();
    for (const op of ['backup', 'forget', 'prune'] as const) {
      const lock = {
        exclusive: true,
        operation: 'backup vm9',
        host: hostname(),
        ...(await stale()),
      };
      await writeLock(dir, lock);
      if (op === 'backup') await backup(repo);
      if (op === 'forget') await repo.forget({ vm: 'vm1', keepLast: 1 });
      if (op === 'prune') await repo.prune();
      expect(await readdir(join(dir, 'locks')), op).toEqual([]);
    }
    // A stale read lease protects nothing any more: prune removes it.
    const lease = { mode: 'read' as const, exclusive: false, operation: 'read', host: hostname() };
    await writeLock(dir, { ...lease, maps: ['0'.repeat(64)], ...(await stale()) });
    await repo.prune();
    expect(await readdir(join(dir, 'locks'))).toEqual([]);
    await repo.close();
  });

  it('an unreadable lock is treated as held', async () => {
    const { dir, repo } = await repoWithPoint();
    await writeFile(join(dir, 'locks', 'garbled'), '{"exclusive": tr');
    await expect(backup(repo)).rejects.toMatchObject({
      code: ErrorCode.LOCKED,
      details: { lock: 'garbled' },
    });
    await expect(repo.prune()).rejects.toMatchObject({ code: ErrorCode.LOCKED });
    await repo.close();
  });

  it('with lockWait, a writer waits for a conflicting lock to go and then proceeds', async () => {
    const { dir, repo } = await repoWithPoint();
    const name = await writeLock(
      dir,
      await heldByOther({ mode: 'write', exclusive: false, operation: 'backup vm1', vm: 'vm1' }),
    );
    const patient = await openLocalRepository(dir, { lockWait: 20_000 });
    const waiting = backup(patient);
    let done = false;
    void waiting.then(() => {
      done = true;
    });
    await new Promise((r) => setTimeout(r, 600));
    expect(done).toBe(false);
    await rm(join(dir, 'locks', name));
    expect((await waiting).sequence).toBe(2);
    await patient.close();
    await repo.close();
  });

  it('a reader of this process does not block a backup or prune of this process; every lock is released', async () => {
    const { dir, repo, point } = await repoWithPoint();
    const opened = await repo.openPoint('vm1', point);
    const second = await backup(repo);
    expect(second.sequence).toBe(2);
    await repo.forget({ vm: 'vm1', keepLast: 1 });
    expectBytes(await opened.disk('d0').read(0, DISK.length), DISK);
    await opened.close();
    expect(await readdir(join(dir, 'locks'))).toEqual([]);
    await repo.close();
  });

  it('a lease whose refresh fails is refreshed again 30 s later, not 5 minutes later', async () => {
    vi.useFakeTimers({ toFake: ['setInterval', 'setTimeout', 'Date'] });
    try {
      const faulty = new FaultyStore(new MemoryStore());
      const repo = await Repository.init(faulty, { blockSize: 65536 });
      await backup(repo);
      const open = await repo.openPoint('vm1');
      const time = async () => {
        for await (const { name } of faulty.list('lock')) {
          return (JSON.parse(Buffer.from(await faulty.get('lock', name)).toString()) as LockFile)
            .time;
        }
        return undefined;
      };
      const before = await time();
      faulty.putBudget = faulty.puts; // the store is away at the refresh
      await vi.advanceTimersByTimeAsync(5 * 60_000);
      expect(await time()).toBe(before);
      faulty.putBudget = Number.POSITIVE_INFINITY; // back
      await vi.advanceTimersByTimeAsync(30_000);
      expect(Date.parse((await time())!)).toBeGreaterThan(Date.parse(before!) + 5 * 60_000);
      await open.close();
      expect(await time()).toBeUndefined();
      await repo.close();
    } finally {
      vi.useRealTimers();
    }
  });
});
