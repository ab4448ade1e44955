import { type ChildProcess, type SpawnOptions, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

// fio.mjs is plain JavaScript (JSDoc-typed); the part of it this test uses.
interface FioModule {
  FIO_SPAWN: SpawnOptions;
  runFio(
    spawnFio: () => ChildProcess,
    deadlineMs: number,
    atDeadline?: () => string,
  ): Promise<{ hung: boolean; json: unknown; atDeadline?: string }>;
}
interface Second {
  second: number;
  ios: number;
  p50Us: number;
  p99Us: number;
  maxUs: number;
  tailShare: number;
}
const { FIO_SPAWN, runFio, latencyBySecond } = (await import(
  './fio.mjs' as string
)) as FioModule & {
  latencyBySecond(clatLog: string): Second[];
};

// runFio's deadline, with stand-ins for a hung fio: it must end, whatever holds the pipes.
describe('runFio deadline', () => {
  it('kills the whole process group of a run that does not finish', async () => {
    const run = await runFio(() => spawn('sh', ['-c', 'sleep 60 & sleep 60'], FIO_SPAWN), 300);
    expect(run.hung).toBe(true);
    expect(run.json).toBeNull();
  }, 15_000);

  it('takes the deadline snapshot while the hung run still runs, and keeps it', async () => {
    let child: ChildProcess | undefined;
    const run = await runFio(
      () => {
        child = spawn('sh', ['-c', 'sleep 60'], FIO_SPAWN);
        return child;
      },
      300,
      () => (child?.exitCode === null && child.signalCode === null ? 'still running' : 'gone'),
    );
    expect(run.hung).toBe(true);
    expect(run.atDeadline).toBe('still running');
    expect(child?.signalCode).toBe('SIGKILL');
  }, 15_000);

  it('takes no snapshot of a run that finishes in time', async () => {
    let calls = 0;
    const run = await runFio(
      () => spawn('sh', ['-c', 'exit 0'], FIO_SPAWN),
      10_000,
      () => `${++calls}`,
    );
    expect(run.hung).toBe(false);
    expect(run.atDeadline).toBeUndefined();
    expect(calls).toBe(0);
  }, 15_000);

  it('ends even when a process outside the group keeps the pipes open', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ivmr-runfio-test-'));
    const pidFile = join(dir, 'pid');
    try {
      const script = `setsid sleep 60 & echo $! > ${pidFile}; sleep 60`;
      const run = await runFio(() => spawn('sh', ['-c', script], FIO_SPAWN), 300);
      expect(run.hung).toBe(true);
    } finally {
      const pid = Number(await readFile(pidFile, 'utf8').catch(() => ''));
      if (pid > 0) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {}
      }
      await rm(dir, { recursive: true, force: true });
    }
  }, 15_000);
});

// latencyBySecond reads fio's per-I/O completion latency log (`time ms, latency ns, direction,
// block size, ...`) into seconds.
describe('latencyBySecond', () => {
  it("gives each second its I/Os, p50, p99 and max, and its share of the run's slowest 1%", async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ivmr-latlog-test-'));
    try {
      const lines: string[] = [];
      // Second 0: 100 I/Os of 1..100 µs. Second 1: none. Second 2: 300 of 10 µs and 3 of 5 ms.
      for (let i = 1; i <= 100; i++) lines.push(`${(i * 7) % 1000}, ${i * 1000}, 0, 4096, 0`);
      for (let i = 0; i < 300; i++) lines.push(`${2000 + (i % 1000)}, 10000, 0, 4096, 0`);
      for (let i = 0; i < 3; i++) lines.push('2999, 5000000, 0, 4096, 0');
      const log = join(dir, 'x_clat.log');
      await writeFile(log, `${lines.join('\n')}\n`);
      const s = latencyBySecond(log);
      expect(s.map((x) => [x.second, x.ios])).toEqual([
        [0, 100],
        [2, 303],
      ]);
      expect(s[0]).toMatchObject({ p50Us: 51, p99Us: 100, maxUs: 100 });
      // 3 of 303 is 1%: the p99 of that second is still 10 µs; its max is 5 ms.
      expect(s[1]).toMatchObject({ p50Us: 10, p99Us: 10, maxUs: 5000 });
      // The run's p99 (the 399th of 403 latencies, sorted) is 99 µs: its slowest 1% are 99 and
      // 100 µs in second 0 and the three of 5 ms in second 2.
      expect(s[0]!.tailShare).toBeCloseTo(2 / 5, 9);
      expect(s[1]!.tailShare).toBeCloseTo(3 / 5, 9);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
