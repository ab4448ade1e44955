import { type ChildProcess, type SpawnOptions, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

// fio.mjs is plain JavaScript (JSDoc-typed); the part of it this test uses.
interface FioModule {
  FIO_SPAWN: SpawnOptions;
  runFio(
    spawnFio: () => ChildProcess,
    deadlineMs: number,
  ): Promise<{ hung: boolean; json: unknown }>;
}
const { FIO_SPAWN, runFio } = (await import('./fio.mjs' as string)) as FioModule;

// runFio's deadline, with stand-ins for a hung fio: it must end, whatever holds the pipes.
describe('runFio deadline', () => {
  it('kills the whole process group of a run that does not finish', async () => {
    const run = await runFio(() => spawn('sh', ['-c', 'sleep 60 & sleep 60'], FIO_SPAWN), 300);
    expect(run.hung).toBe(true);
    expect(run.json).toBeNull();
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
