import { type ChildProcess, type SpawnOptions, spawn } from 'node:child_process';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

// common.mjs is plain JavaScript (JSDoc-typed); the part of it this test uses.
interface Check {
  server: string;
  what: string;
  ok: boolean;
  error: string | null;
  hung?: { job: string; dir: string; attempt: number; sockets: string; stderr: string }[];
}
interface CommonModule {
  verifyWrites(o: {
    ns: {
      spawn: (argv: string[], o: SpawnOptions) => ChildProcess;
      argv: (argv: string[]) => string[];
    };
    fio: string;
    server: { name: string; exportUrl: string };
    fileName: string;
    checks: Check[];
    log: (msg: string) => void;
    onHang?: (h: NonNullable<Check['hung']>[number]) => void;
    deadlineMs?: number;
  }): Promise<void>;
}
const { verifyWrites } = (await import('./common.mjs' as string)) as CommonModule;

// A stand-in for fio: it logs each run's direction, hangs on the runs listed in HANG (counted
// from 1 over all runs), and otherwise prints the JSON of a job that moved `size` bytes.
const FAKE_FIO = `#!/bin/sh
dir=$(printf '%s\\n' "$@" | sed -n 's/^--rw=//p')
size=$(printf '%s\\n' "$@" | sed -n 's/^--size=//p')
echo "$dir" >> "$LOG"
n=$(wc -l < "$LOG")
for h in $HANG; do
  if [ "$h" = "$n" ]; then echo "stuck in run $n" >&2; exec sleep 60; fi
done
echo "{\\"jobs\\":[{\\"error\\":0,\\"$dir\\":{\\"io_bytes\\":$size}}]}"
`;

describe('verifyWrites', () => {
  let dir: string;
  let fio: string;
  let log: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ivmr-verify-test-'));
    fio = join(dir, 'fio');
    log = join(dir, 'runs');
    await writeFile(fio, FAKE_FIO);
    await chmod(fio, 0o755);
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const run = async (hang: string) => {
    const checks: Check[] = [];
    const hangs: string[] = [];
    const ns = {
      argv: (argv: string[]) => ['sh', '-c', 'echo "sockets at the deadline"', ...argv],
      spawn: (argv: string[], opts: SpawnOptions) =>
        spawn(argv[0] as string, argv.slice(1), {
          ...opts,
          env: { ...process.env, LOG: log, HANG: hang },
        }),
    };
    const done = verifyWrites({
      ns,
      fio,
      server: { name: 'srv', exportUrl: 'nfs://127.0.0.1/x' },
      fileName: 'f',
      checks,
      log: () => {},
      onHang: (h) => hangs.push(`${h.job} ${h.dir} ${h.attempt}`),
      deadlineMs: 400,
    }).then(
      () => null,
      (err: Error) => err.message,
    );
    const error = await done;
    const runs = (await readFile(log, 'utf8')).trim().split('\n');
    return { checks, hangs, error, runs };
  };

  it('runs a hung pass once more and keeps the hung attempt in its check', async () => {
    // Run 2 is the first job's read pass.
    const r = await run('2');
    expect(r.error).toBeNull();
    expect(r.runs).toEqual(['write', 'read', 'read', 'write', 'read']);
    expect(r.hangs).toEqual(['verify-4k-qd16 read 1']);
    expect(r.checks.map((c) => c.ok)).toEqual([true, true]);
    expect(r.checks[0]?.hung).toHaveLength(1);
    expect(r.checks[0]?.hung?.[0]?.stderr).toBe('stuck in run 2');
    expect(r.checks[0]?.hung?.[0]?.sockets).toBe('sockets at the deadline');
    expect(r.checks[1]?.hung).toBeUndefined();
  }, 20_000);

  it('fails the check when the second attempt hangs too, and goes no further', async () => {
    // Runs 1 and 2 are both attempts at the first job's write pass.
    const r = await run('1 2');
    expect(r.error).toMatch(/^srv: fio verify-4k-qd16 failed: hung/);
    expect(r.runs).toEqual(['write', 'write']);
    expect(r.hangs).toEqual(['verify-4k-qd16 write 1', 'verify-4k-qd16 write 2']);
    expect(r.checks).toHaveLength(1);
    expect(r.checks[0]?.ok).toBe(false);
  }, 20_000);
});
