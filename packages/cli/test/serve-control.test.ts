import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, statfs, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { expectNoLeakedHandles, openHandles } from '../../nfs/test/helpers/open-handles.js';
import {
  lockPort111,
  requirePortFree,
  requireTools,
  run,
  runOk,
  tempDir,
} from '../../nfs/test/real-clients/harness.js';
import {
  CLI,
  checkBuilt,
  exited,
  hashTree,
  makeImage,
  problems,
  pseudoRandom,
  type Ready,
  serveArgs,
  startServe,
} from './helpers.js';
import { backup } from './repository-files.js';

// Real clients (qemu-io, qemu-img, nfs-ls, nfs-cat) against the built `ivmr serve`, driven by
// `ivmr sessions`, `ivmr stop` and `ivmr migrate` through the server's control socket. qemu's
// nfs:// driver has no port options: it finds the server through a portmapper on 111, so the
// servers run the embedded one under the machine-wide port-111 test lock.

const MIB = 1024 * 1024;
const GIB = 1024 * MIB;

/** The readiness line, with the fields this file uses beyond {@link Ready}. */
type ReadyLine = Ready & {
  readonly metricsPort: number | null;
  readonly sessions: (Ready['sessions'][number] & { vmx: string; mode: string })[];
};

/** `ivmr sessions --json` (the fields used here). */
interface SessionsJson {
  readonly server: { pid: number } | null;
  readonly sessions: {
    name: string;
    vm: string;
    point: string;
    mode: string;
    status: 'served' | 'kept' | 'migrated';
    cacheBytes: number;
    disks: { disk: string; bytesFromBase: number; overlayBytes: number }[];
    clients: { address: string; lastSeen: number }[];
    migration?: { phase?: string; to: string; switched?: string };
  }[];
}

/** What one qemu-io run of the background writer left behind. */
interface WriteRun {
  readonly start: number;
  readonly end: number;
  readonly code: number | null;
  readonly output: string;
}

/** A loop of qemu-io runs writing random 64 KiB patterns until stopped. */
interface Writer {
  readonly runs: WriteRun[];
  stop(): Promise<void>;
}

/** `ivmr ARGS` with a deadline: a command that hangs fails the test instead of stalling it. */
async function cli(
  args: readonly string[],
  timeoutMs = 30_000,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const r = await run(process.execPath, [CLI, ...args], timeoutMs);
  if (r.signal) throw new Error(`ivmr ${args.join(' ')} was killed by ${r.signal} (timeout?)`);
  return { code: r.code, stdout: r.stdout.toString('utf8'), stderr: r.stderr };
}

/** The value of the sample `series` (name and labels exactly as exposed), or undefined. */
function sample(metrics: string, series: string): number | undefined {
  for (const line of metrics.split('\n')) {
    if (line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    if (at > 0 && line.slice(0, at) === series) return Number(line.slice(at + 1));
  }
  return undefined;
}

/** SIGTERM, then the exit code (null when it died of a signal). */
async function stop(child: ChildProcess): Promise<number | null> {
  child.kill('SIGTERM');
  await exited(child);
  return child.exitCode;
}

const url = (session: string, file: string) => `nfs://127.0.0.1/ivmr/${session}/${file}`;

describe('ivmr serve driven by ivmr sessions, stop and migrate', () => {
  let tools: ReturnType<typeof requireTools>;
  let tmp: Awaited<ReturnType<typeof tempDir>>;
  let release111: (() => Promise<void>) | undefined;
  let baseline: string[];
  const children: ChildProcess[] = [];
  const writers: Writer[] = [];

  async function sessions(cache: string): Promise<SessionsJson> {
    const r = await cli(['sessions', '--cache', cache, '--json']);
    expect(r.code, r.stderr).toBe(0);
    return JSON.parse(r.stdout) as SessionsJson;
  }

  /** The one stderr line of a failed command (asserts there is exactly one). */
  function oneLine(stderr: string): string {
    const lines = stderr.trim().split('\n');
    expect(lines, stderr).toHaveLength(1);
    return lines[0]!;
  }

  /**
   * Runs qemu-io on `nfsUrl` again and again, each run writing `perRun` patterns of 64 KiB at
   * random 512-aligned offsets of a disk of `size` bytes (a new pattern byte per write), with
   * `pauseMs` between runs.
   */
  function startWriter(
    nfsUrl: string,
    size: number,
    seed: number,
    perRun: number,
    pauseMs: number,
  ): Writer {
    const runs: WriteRun[] = [];
    let stopping = false;
    const done = (async () => {
      for (let i = 0; !stopping; i++) {
        if (i > 0) await new Promise((r) => setTimeout(r, pauseMs));
        const rnd = pseudoRandom(4 * perRun, seed + i);
        const commands: string[] = [];
        for (let k = 0; k < perRun; k++) {
          const offset = (rnd.readUInt32LE(k * 4) % ((size - 65_536) / 512)) * 512;
          const pattern = ((i * perRun + k) % 254) + 1;
          commands.push('-c', `write -P 0x${pattern.toString(16)} ${offset} 65536`);
        }
        const start = Date.now();
        const r = await run(tools['qemu-io'], ['-f', 'raw', ...commands, nfsUrl], 20_000);
        runs.push({
          start,
          end: Date.now(),
          code: r.code,
          output: `${r.stdout.toString('utf8')}${r.stderr}`,
        });
      }
    })();
    const writer: Writer = {
      runs,
      async stop() {
        stopping = true;
        await done;
      },
    };
    writers.push(writer);
    return writer;
  }

  /** Resolves once `ok()` holds, checking every 50 ms; throws after `timeoutMs`. */
  async function until(ok: () => boolean, what: string, timeoutMs = 15_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!ok()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  beforeAll(async () => {
    await checkBuilt();
    tools = requireTools('qemu-img', 'qemu-io', 'nfs-ls', 'nfs-cat');
    baseline = openHandles();
    tmp = await tempDir();
    release111 = await lockPort111();
    await requirePortFree(111);
  });

  afterAll(async () => {
    for (const w of writers) await w.stop();
    for (const c of children) {
      c.kill('SIGKILL');
      await exited(c);
    }
    await release111?.();
    await tmp?.remove();
    if (baseline) await expectNoLeakedHandles(baseline);
  });

  it('lists a served session with live figures and metrics; stop keeps it, serve resumes it, stop --discard drops it', async () => {
    const dir = join(tmp.path, 'sessions');
    await mkdir(dir);
    const repo = join(dir, 'repo');
    const cache = join(dir, 'cache');
    const image = makeImage(4 * MIB + 512, 51);
    const point = (await backup(dir, repo, 'app01', image)).id;
    const repoHash = await hashTree(repo);
    const flat = url('app01', 'app01-flat.vmdk');

    const s = await startServe([...serveArgs(repo, cache, ['app01']), '--metrics-port', '0']);
    children.push(s.child);
    const ready = s.ready as ReadyLine;
    expect(ready.sessions).toEqual([
      expect.objectContaining({ name: 'app01', point, disks: ['app01/app01-flat.vmdk'] }),
    ]);
    expect(ready.metricsPort).toBeGreaterThan(0);

    // Two writes (one inside a block, one over the short last 512 bytes) and a read of data only
    // the backup has.
    const expected = Buffer.from(image);
    expected.fill(0x5a, 1000, 1000 + 8192);
    expected.fill(0xa5, 4 * MIB, 4 * MIB + 512);
    const w = await runOk(tools['qemu-io'], [
      '-f',
      'raw',
      '-c',
      'write -P 0x5a 1000 8192',
      '-c',
      `write -P 0xa5 ${4 * MIB} 512`,
      '-c',
      `read ${2 * MIB} 65536`,
      flat,
    ]);
    expect(w.toString()).toMatch(/wrote 8192\/8192 bytes at offset 1000/);

    const listed = await sessions(cache);
    expect(listed.server?.pid).toBe(s.child.pid);
    expect(listed.sessions).toHaveLength(1);
    const info = listed.sessions[0]!;
    expect(info).toMatchObject({
      name: 'app01',
      vm: 'app01',
      point,
      mode: 'persistent',
      status: 'served',
    });
    expect(info.clients.map((c) => c.address)).toContain('127.0.0.1');
    expect(info.cacheBytes).toBeGreaterThan(0);
    expect(info.disks).toHaveLength(1);
    expect(info.disks[0]!.overlayBytes).toBeGreaterThanOrEqual(8192 + 512);
    expect(info.disks[0]!.bytesFromBase).toBeGreaterThan(0);

    const res = await fetch(`http://127.0.0.1:${ready.metricsPort}/metrics`);
    expect(res.status).toBe(200);
    const metrics = await res.text();
    const writes = sample(
      metrics,
      'ivmr_nfs_requests_total{program="nfs",procedure="WRITE",status="OK"}',
    );
    expect(writes, metrics).toBeGreaterThan(0);
    expect(sample(metrics, 'ivmr_backup_read_bytes{session="app01"}'), metrics).toBeGreaterThan(0);
    expect(sample(metrics, 'ivmr_cache_free_bytes'), metrics).toBeGreaterThan(0);
    expect(sample(metrics, 'ivmr_sessions'), metrics).toBe(1);
    // qemu-io is done: no NFS call is waiting for its answer.
    expect(sample(metrics, 'ivmr_nfs_requests_in_flight'), metrics).toBe(0);
    expect(sample(metrics, 'ivmr_nfs_oldest_request_seconds'), metrics).toBe(0);
    // The serve started its decode worker (the default: cores less one, at least one).
    expect(sample(metrics, 'ivmr_decode_workers'), metrics).toBeGreaterThanOrEqual(1);

    // The whole disk, compared by qemu-img: its 1 MiB blocks not read yet load as whole-block
    // reads, which the decode worker decodes (when it is free; the serving thread decodes the
    // rest).
    const want = join(dir, 'expected.raw');
    await writeFile(want, expected);
    await runOk(tools['qemu-img'], ['compare', '-f', 'raw', '-F', 'raw', want, flat], 45_000);
    const after = await (await fetch(`http://127.0.0.1:${ready.metricsPort}/metrics`)).text();
    expect(sample(after, 'ivmr_decode_worker_bytes'), after).toBeGreaterThan(0);

    // An unknown session: one line, IVMR_NOT_FOUND, and the server serves on.
    const nosuch = await cli(['stop', '--cache', cache, '--vm', 'nosuch']);
    expect(nosuch.code).not.toBe(0);
    expect(nosuch.stdout).toBe('');
    const nosuchLine = oneLine(nosuch.stderr);
    expect(nosuchLine).toMatch(/IVMR_NOT_FOUND/);
    expect(nosuchLine).toContain('nosuch');

    // Stop, keeping the writes: the folder leaves the datastore, the server runs on.
    const kept = await cli(['stop', '--cache', cache, '--vm', 'app01']);
    expect(kept.code, kept.stderr).toBe(0);
    expect(kept.stdout).toMatch(/stopped app01: its writes are kept/);
    const afterStop = await sessions(cache);
    expect(afterStop.server?.pid).toBe(s.child.pid);
    expect(afterStop.sessions).toEqual([
      expect.objectContaining({ name: 'app01', point, status: 'kept' }),
    ]);
    const gone = await run(tools['qemu-img'], ['info', '-f', 'raw', flat]);
    expect(gone.code).not.toBe(0);
    // qemu mounts the folder of the file (/ivmr/app01), which the server no longer has.
    expect(gone.stderr).toMatch(/MNT3ERR_NOENT/);
    const root = await runOk(tools['nfs-ls'], ['nfs://127.0.0.1/ivmr']);
    expect(root.toString()).not.toMatch(/app01/);
    expect(s.child.exitCode).toBeNull();
    expect(s.child.signalCode).toBeNull();
    expect(problems(s.stderr())).toEqual([]);
    expect(await stop(s.child)).toBe(0);

    // Without a server, sessions reads the folder.
    const offline = await sessions(cache);
    expect(offline.server).toBeNull();
    expect(offline.sessions).toEqual([
      expect.objectContaining({ name: 'app01', point, status: 'kept' }),
    ]);

    // serve --vm app01 resumes the kept session with its writes.
    const s2 = await startServe(serveArgs(repo, cache, ['app01']));
    children.push(s2.child);
    expect(s2.ready.sessions).toEqual([
      expect.objectContaining({ name: 'app01', point, disks: ['app01/app01-flat.vmdk'] }),
    ]);
    const verify = await run(tools['qemu-io'], [
      '-f',
      'raw',
      '-c',
      'read -P 0x5a 1000 8192',
      '-c',
      `read -P 0xa5 ${4 * MIB} 512`,
      flat,
    ]);
    expect(verify.stdout.toString()).not.toMatch(/Pattern verification failed/);
    expect(verify.stdout.toString()).toMatch(/read 8192\/8192 bytes at offset 1000/);
    expect(verify.code, verify.stderr).toBe(0);
    const whole = join(dir, 'app01.read');
    await runOk(tools['qemu-img'], ['convert', '-f', 'raw', '-O', 'raw', flat, whole], 45_000);
    expect((await readFile(whole)).equals(expected)).toBe(true);

    // stop --discard with the server running: the session folder is gone.
    const discarded = await cli(['stop', '--cache', cache, '--vm', 'app01', '--discard']);
    expect(discarded.code, discarded.stderr).toBe(0);
    expect(discarded.stdout).toMatch(/stopped app01: its writes were discarded/);
    expect(existsSync(join(cache, 'sessions', 'app01'))).toBe(false);
    const none = await sessions(cache);
    expect(none.server?.pid).toBe(s2.child.pid);
    expect(none.sessions).toEqual([]);
    expect(s2.child.exitCode).toBeNull();
    expect(problems(s2.stderr())).toEqual([]);
    expect(await stop(s2.child)).toBe(0);

    // And without a server: one line, IVMR_NOT_FOUND.
    const offlineNosuch = await cli(['stop', '--cache', cache, '--vm', 'nosuch']);
    expect(offlineNosuch.code).not.toBe(0);
    expect(oneLine(offlineNosuch.stderr)).toMatch(/IVMR_NOT_FOUND/);
    expect(existsSync(join(cache, 'control.sock'))).toBe(false);
    expect(await hashTree(repo)).toBe(repoHash);
  });

  it('refuses a second serve on the same cache folder, naming the first one', async () => {
    const dir = join(tmp.path, 'locked');
    await mkdir(dir);
    const repo = join(dir, 'repo');
    const cache = join(dir, 'cache');
    await backup(dir, repo, 'app01', makeImage(4 * MIB + 512, 52));
    const first = await startServe(serveArgs(repo, cache, ['app01']));
    children.push(first.child);

    // No portmapper and any port: the cache folder is the only thing the two share.
    const second = await cli([
      'serve',
      '--repo',
      repo,
      '--cache',
      cache,
      '--vm',
      'app01',
      '--nfs-port',
      '0',
      '--portmap',
      'off',
      '--min-free',
      '64M',
      '--cache-floor',
      '0',
      '--json',
    ]);
    expect(second.code).not.toBe(0);
    expect(second.stdout).toBe('');
    const line = oneLine(second.stderr);
    expect(line).toMatch(/IVMR_LOCKED/);
    expect(line).toContain(`pid ${first.child.pid}`);

    // The first server still serves, and still owns the control socket.
    const info = await runOk(tools['qemu-img'], [
      'info',
      '-f',
      'raw',
      url('app01', 'app01-flat.vmdk'),
    ]);
    expect(info.toString()).toMatch(/virtual size: .*\(4194816 bytes\)/);
    const listed = await sessions(cache);
    expect(listed.server?.pid).toBe(first.child.pid);
    expect(listed.sessions.map((s) => [s.name, s.status])).toEqual([['app01', 'served']]);
    expect(first.child.exitCode).toBeNull();
    expect(problems(first.stderr())).toEqual([]);
    expect(await stop(first.child)).toBe(0);
  });

  it('refuses to start a session without the free space it needs, and leaves nothing', async () => {
    const dir = join(tmp.path, 'nospace');
    await mkdir(dir);
    const repo = join(dir, 'repo');
    const cache = join(dir, 'cache');
    await backup(dir, repo, 'app01', makeImage(4 * MIB + 512, 53));
    const r = await cli([
      'serve',
      '--repo',
      repo,
      '--cache',
      cache,
      '--vm',
      'app01',
      '--min-free',
      '100000G',
      '--nfs-port',
      '0',
      '--portmap',
      'off',
    ]);
    const volume = await statfs(dir);
    expect(r.code).not.toBe(0);
    expect(r.stdout).toBe('');
    const line = oneLine(r.stderr);
    expect(line).toMatch(/IVMR_NOSPC/);
    const m = /has .* free \((\d+) bytes\).* needs at least .* \((\d+) bytes\)/.exec(line);
    expect(m, line).not.toBeNull();
    const free = Number(m![1]);
    const required = Number(m![2]);
    // What the volume has now, give or take what other tests write meanwhile.
    expect(Math.abs(free - volume.bavail * volume.bsize)).toBeLessThan(GIB);
    // --min-free plus the default floor of 5% of the volume.
    expect(required).toBe(100_000 * GIB + Math.ceil(volume.blocks * volume.bsize * 0.05));
    expect(await readdir(join(cache, 'sessions')).catch(() => [])).toEqual([]);
    expect(existsSync(join(cache, 'control.sock'))).toBe(false);
    const listed = await sessions(cache);
    expect(listed).toEqual({ server: null, sessions: [] });
  });

  it('migrates a VM while qemu-io writes to it; after --switch writes are refused and the target is the disk', async () => {
    const dir = join(tmp.path, 'migrate');
    await mkdir(dir);
    const repo = join(dir, 'repo');
    const cache = join(dir, 'cache');
    const target = join(dir, 'target');
    const size = 24 * MIB;
    const image = makeImage(size, 61);
    const point = (await backup(dir, repo, 'db01', image)).id;
    const repoHash = await hashTree(repo);

    const s = await startServe(serveArgs(repo, cache, ['db01']));
    children.push(s.child);
    const ready = s.ready as ReadyLine;
    expect(ready.sessions).toEqual([
      expect.objectContaining({
        name: 'db01',
        point,
        mode: 'persistent',
        vmx: 'db01/db01.vmx',
        disks: ['db01/db01-flat.vmdk'],
      }),
    ]);
    const flat = url('db01', 'db01-flat.vmdk');

    // A writer flat out (four 64 KiB writes per run, ~18 runs/s): it changes chunks faster than
    // 8 MiB/s copies them again, so the migration must neither wait for an empty changed set
    // nor fail to switch over while writes go on.
    const writer = startWriter(flat, size, 6100, 4, 0);
    await until(() => writer.runs.filter((r) => r.code === 0).length >= 2, 'the first writes');
    const beforeMigrate = writer.runs.length;

    // 24 MiB at 8 MiB/s: about 3 s of copying while the writes go on.
    const migrateStart = Date.now();
    const m = await cli([
      'migrate',
      '--cache',
      cache,
      '--vm',
      'db01',
      '--to',
      target,
      '--rate',
      '8M',
    ]);
    const migrateEnd = Date.now();
    expect(m.code, m.stderr).toBe(0);
    expect(m.stdout).toContain(
      `db01: 24.0 MiB copied to ${target}; the server keeps copying changes`,
    );
    expect(migrateEnd - migrateStart).toBeGreaterThanOrEqual(2000);
    const during = writer.runs.slice(beforeMigrate).filter((r) => r.end <= migrateEnd);
    expect(during.filter((r) => r.code === 0).length, 'write runs during the copy').toBeGreaterThan(
      0,
    );
    const mirroring = await sessions(cache);
    expect(mirroring.sessions).toEqual([
      expect.objectContaining({
        name: 'db01',
        status: 'served',
        migration: expect.objectContaining({ phase: 'mirroring', to: target }),
      }),
    ]);

    // Writes go on a second longer, then the switch-over while they still go on.
    await new Promise((r) => setTimeout(r, 1000));
    const switchStart = Date.now();
    const sw = await cli(['migrate', '--cache', cache, '--vm', 'db01', '--switch']);
    const switchEnd = Date.now();
    expect(sw.code, sw.stderr).toBe(0);
    expect(sw.stdout).toContain(`db01 migrated to ${target}: the session is read-only`);
    await until(
      () => writer.runs.some((r) => r.start > switchEnd),
      'a write run after the switch-over',
    );
    await writer.stop();

    const before = writer.runs.filter((r) => r.end < switchStart);
    const after = writer.runs.filter((r) => r.start > switchEnd);
    expect(before.length).toBeGreaterThan(beforeMigrate);
    for (const r of before) expect(r.code, r.output).toBe(0);
    expect(after.length).toBeGreaterThan(0);
    for (const r of after) {
      expect(r.code, r.output).not.toBe(0);
      // The server answers NFS3ERR_ROFS; libnfs 4.0 hands every failed WRITE to qemu as EFAULT,
      // so qemu-io prints "write failed: Bad address", and libnfs's own message names ROFS.
      expect(r.output).toMatch(/write failed: Bad address/);
      expect(r.output).toMatch(/Write failed with NFS3ERR_ROFS/);
      expect(r.output).not.toMatch(/wrote /);
    }

    // The target is the final merged disk, with the writes (it is no longer the backup).
    const same = await runOk(
      tools['qemu-img'],
      ['compare', '-f', 'raw', '-F', 'raw', join(target, 'db01-flat.vmdk'), flat],
      45_000,
    );
    expect(same.toString()).toMatch(/Images are identical/);
    const differs = await run(
      tools['qemu-img'],
      ['compare', '-f', 'raw', '-F', 'raw', join(target, 'db01-flat.vmdk'), join(dir, 'db01.raw')],
      45_000,
    );
    expect(differs.code, differs.stderr).toBe(1);
    expect(differs.stdout.toString()).toMatch(/Content mismatch/);

    // A complete VM folder: the flat extent, the descriptor and the .vmx the datastore serves.
    expect((await readdir(target)).sort()).toEqual(['db01-flat.vmdk', 'db01.vmdk', 'db01.vmx']);
    for (const name of ['db01.vmx', 'db01.vmdk']) {
      const copied = await readFile(join(target, name));
      expect(copied.equals(await readFile(join(cache, 'sessions', 'db01', 'files', name)))).toBe(
        true,
      );
      expect(copied.equals(await runOk(tools['nfs-cat'], [url('db01', name)]))).toBe(true);
    }
    expect(await readFile(join(target, 'db01.vmdk'), 'utf8')).toContain('"db01-flat.vmdk"');

    const migrated = await sessions(cache);
    expect(migrated.server?.pid).toBe(s.child.pid);
    expect(migrated.sessions).toEqual([
      expect.objectContaining({
        name: 'db01',
        point,
        status: 'migrated',
        migration: expect.objectContaining({ phase: 'done', to: target }),
      }),
    ]);
    expect(problems(s.stderr())).toEqual([]);
    expect(await stop(s.child)).toBe(0);
    const offline = await sessions(cache);
    expect(offline.server).toBeNull();
    expect(offline.sessions).toEqual([
      expect.objectContaining({
        name: 'db01',
        status: 'migrated',
        migration: expect.objectContaining({ to: target, switched: expect.any(String) }),
      }),
    ]);
    expect(await hashTree(repo)).toBe(repoHash);
  });
});
