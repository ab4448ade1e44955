import type { ChildProcess } from 'node:child_process';
import { execFile } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { S3Store } from '@ivmr/store-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { requireTools, run, runOk, tempDir } from '../../nfs/test/real-clients/harness.js';
import { type Ceph, exportCredentials, startCeph } from '../../store-s3/test/ceph.js';
import { checkBuilt, exited, ivmr, pseudoRandom, serveArgs, startServe } from './helpers.js';

// Many processes on one S3 repository (issue #8), against a real Ceph RADOS Gateway: two
// `ivmr serve` processes reading, a backup writing, forget and prune removing, and what a reader
// sees meanwhile; then the gateway stopping under a running server. Disks are read back with
// libnfs's nfs-cat through each server's own ports.

const MIB = 1024 * 1024;
const SIZE = 40 * MIB; // more than the 16 MiB frame cache: a second read goes to S3 again
const CLUSTER = fileURLToPath(new URL('../../../scripts/ceph/cluster.sh', import.meta.url));

/** `img` with `length` bytes at `offset` replaced by fresh pseudo-random ones. */
function changed(img: Buffer, offset: number, length: number, seed: number): Buffer {
  const next = Buffer.from(img);
  pseudoRandom(length, seed).copy(next, offset);
  return next;
}

describe('many processes on one S3 repository', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>;
  let ceph: Ceph;
  let tools: ReturnType<typeof requireTools>;
  const children: ChildProcess[] = [];
  const repo = 's3://ivmr-many/repo';
  const faultRepo = 's3://ivmr-many/fault';
  let endpoint: string[];
  let store: S3Store;
  // web: four generations. Region R1 (8 MiB at 8 MiB) changes in web1; region R2 (8 MiB at
  // 24 MiB) changes in web2 and again in web3, so web2's R2 is needed by no point after forget.
  const web0 = pseudoRandom(SIZE, 31);
  web0.fill(0, 32 * MIB, 36 * MIB);
  const web1 = changed(web0, 8 * MIB, 8 * MIB, 32);
  const web2 = changed(web1, 24 * MIB, 8 * MIB, 33);
  const web3 = changed(web2, 24 * MIB, 8 * MIB, 34);
  const db0 = pseudoRandom(12 * MIB, 35);

  const backup = (vm: string, at = repo) =>
    ivmr([
      'backup',
      join(tmp.path, `${vm}.raw`),
      '--repo',
      at,
      ...endpoint,
      '--vm',
      vm,
      '--json',
      '--lock-wait',
      '300',
    ]).then((r) => {
      expect(r.code, r.stderr).toBe(0);
      return (JSON.parse(r.stdout) as { id: string }).id;
    });
  const s3 = () => ['--repo', repo, ...endpoint];
  const image = async (img: Buffer, vm: string) => writeFile(join(tmp.path, `${vm}.raw`), img);
  const serve = async (
    vms: string[],
    cache: string,
    readCache = '0',
    at = repo,
    extra: string[] = [],
  ) => {
    const s = await startServe([
      ...serveArgs(at, join(tmp.path, cache), vms, 'off'),
      ...endpoint,
      ...extra,
      '--read-cache',
      readCache,
      '--no-boot-profiles',
    ]);
    children.push(s.child);
    const ports = `nfsport=${s.ready.nfsPort}&mountport=${s.ready.mountPort}&version=3`;
    const url = (folder: string, vm: string) =>
      `nfs://127.0.0.1/ivmr/${folder}/${vm}-flat.vmdk?${ports}`;
    return { ...s, url };
  };
  const cat = (url: string) => runOk(tools['nfs-cat'], [url], 120_000);
  const forget = async (vm: string) => {
    const r = await ivmr([
      'forget',
      ...s3(),
      '--vm',
      vm,
      '--keep-last',
      '1',
      '--json',
      '--lock-wait',
      '300',
    ]);
    expect(r.code, r.stderr).toBe(0);
    return JSON.parse(r.stdout) as {
      removed: string[];
      prune: { blobsRemoved: number } | null;
      pruneSkipped?: string;
    };
  };

  beforeAll(async () => {
    await checkBuilt();
    tools = requireTools('nfs-cat');
    tmp = await tempDir();
    ceph = await startCeph(join(tmp.path, 'ceph'));
    // The AWS conventions: credentials from the environment (the children inherit it).
    exportCredentials(ceph);
    endpoint = ['--s3-endpoint', ceph.endpoint];
    store = await S3Store.open({
      bucket: 'ivmr-many',
      prefix: 'repo',
      endpoint: ceph.endpoint,
      credentials: ceph.credentials,
      createBucket: true,
    });
  }, 360_000);

  afterAll(async () => {
    for (const c of children) {
      c.kill('SIGKILL');
      await exited(c);
    }
    await store?.close();
    await ceph?.stop();
    await tmp?.remove();
  });

  it('two servers read, a backup writes, forget and prune run: every read is right, nothing a reader needs is deleted', async () => {
    const points: string[] = [];
    for (const img of [web0, web1, web2]) {
      await image(img, 'web');
      points.push(await backup('web'));
    }
    await image(db0, 'db');
    await backup('db');

    // Server A serves web's oldest point and db; server B serves web's second point.
    const a = await serve([`old=web@${points[0]}`, 'db'], 'cache-a');
    const b = await serve([`web@${points[1]}`], 'cache-b');
    expect((await cat(a.url('old', 'web'))).equals(web0)).toBe(true);
    expect((await cat(a.url('db', 'db'))).equals(db0)).toBe(true);
    expect((await cat(b.url('web', 'web'))).equals(web1)).toBe(true);

    // A backup of web3 starts; once it holds its lock, forget of web starts and waits for it.
    await image(web3, 'web');
    const writing = backup('web');
    for (;;) {
      const locks: string[] = [];
      for await (const l of store.list('lock')) locks.push(l.name);
      const records = await Promise.all(
        locks.map(async (n) => JSON.parse(Buffer.from(await store.get('lock', n)).toString())),
      );
      if (records.some((r: { operation: string }) => r.operation === 'backup web')) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const forgetting = forget('web');
    // Meanwhile a reader lists web's points again and again: a point it sees restores whole.
    let finished = false;
    void writing.finally(() => {
      finished = true;
    });
    const seen = new Set(points);
    let newest: string | undefined;
    while (!finished || newest === undefined) {
      const l = await ivmr(['list', ...s3(), '--vm', 'web', '--json']);
      expect(l.code, l.stderr).toBe(0);
      const listed = JSON.parse(l.stdout) as { id: string }[] | { points: { id: string }[] };
      const ids = (Array.isArray(listed) ? listed : listed.points).map((p) => p.id);
      newest = ids.find((id) => !seen.has(id));
      if (newest) break;
    }
    const out = join(tmp.path, 'restored');
    const r = await ivmr([
      ...['restore', ...s3(), '--vm', 'web', '--point', newest!, '--out', out],
    ]);
    expect(r.code, r.stderr).toBe(0);
    expect((await readFile(join(out, 'web.raw'))).equals(web3)).toBe(true);
    expect(await writing).toBe(newest);

    // forget removed web's three older points while the servers held two of them; its prune
    // could delete only web2's own R2 blocks (8 blocks of 1 MiB): the rest is leased.
    const report = await forgetting;
    expect(report.removed.sort()).toEqual([...points].sort());
    expect(report.prune?.blobsRemoved).toBe(8);
    expect((await cat(a.url('old', 'web'))).equals(web0)).toBe(true);
    expect((await cat(a.url('db', 'db'))).equals(db0)).toBe(true);
    expect((await cat(b.url('web', 'web'))).equals(web1)).toBe(true);

    // When the servers stop, their leases go, and the next prune frees web0's and web1's
    // blocks: R1 of web0, and R2 of web0 (= web1's).
    for (const s of [a, b]) {
      s.child.kill('SIGTERM');
      await exited(s.child);
    }
    const again = await forget('web');
    expect(again.removed).toEqual([]);
    expect(again.prune?.blobsRemoved).toBe(16);
    const v = await ivmr(['verify', ...s3()]);
    expect(v.code, v.stderr).toBe(0);
    expect(v.stdout).toMatch(/no damage/);
  }, 600_000);

  it('the gateway stops under a running server: uncached reads fail in bounded time, cached ones go on, and it recovers by itself', async () => {
    await image(web3, 'web');
    await backup('web', faultRepo);
    await image(db0, 'db');
    await backup('db', faultRepo);
    // A gateway that hangs (stopped with SIGSTOP: connections are taken, nothing answers) is
    // bounded by --s3-timeout; one that is down (connection refused) fails at once.
    const s = await serve(['web', 'db'], 'cache-fault', '256M', faultRepo, ['--s3-timeout', '4']);
    // web is read twice, which puts it into the read cache (a stream's blocks are stored on
    // their second read); db is not read yet.
    for (let i = 0; i < 2; i++) expect((await cat(s.url('web', 'web'))).equals(web3)).toBe(true);
    const rgw = Number(await readFile(join(ceph.dir, 'pids', 'rgw.pid'), 'utf8'));
    const outage = async (how: string, start: () => Promise<void>, end: () => Promise<void>) => {
      await start();
      try {
        const started = Date.now();
        const failed = await run(tools['nfs-cat'], [s.url('db', 'db')], 120_000);
        const seconds = (Date.now() - started) / 1000;
        // An error, not a hang (the child would be killed at 120 s, with a signal).
        expect(failed.signal, `${how}: nfs-cat of an uncached disk hung`).toBeNull();
        expect(failed.code, how).not.toBe(0);
        expect(failed.stderr, how).toMatch(/read/i);
        console.log(`${how}: an uncached read failed after ${seconds.toFixed(1)} s`);
        // Cached data of the other VM is still served, and right.
        expect((await cat(s.url('web', 'web'))).equals(web3), how).toBe(true);
        expect(s.child.exitCode, how).toBeNull();
      } finally {
        await end();
      }
    };
    await outage(
      'gateway hung',
      async () => {
        process.kill(rgw, 'SIGSTOP');
      },
      async () => {
        process.kill(rgw, 'SIGCONT');
      },
    );
    await outage(
      'gateway down',
      () => promisify(execFile)('bash', [CLUSTER, 'stop-rgw', ceph.dir]).then(() => {}),
      () => promisify(execFile)('bash', [CLUSTER, 'start-rgw', ceph.dir]).then(() => {}),
    );
    // The store is back: the same server reads db now, with no restart, and the bytes are right.
    expect((await cat(s.url('db', 'db'))).equals(db0)).toBe(true);
    expect((await cat(s.url('web', 'web'))).equals(web3)).toBe(true);
    // Each failed read was reported: a READ that failed with IVMR_IO, naming the store.
    const failures = s
      .stderr()
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map(
        (l) => JSON.parse(l) as { level: number; procedure?: string; code?: string; msg: string },
      )
      .filter((l) => l.level === 50);
    expect(failures.some((l) => /timed out after 4000 ms/.test(l.msg))).toBe(true);
    expect(failures.some((l) => /ECONNREFUSED/.test(l.msg))).toBe(true);
    for (const l of failures) expect(l).toMatchObject({ procedure: 'READ', code: 'IVMR_IO' });
    s.child.kill('SIGTERM');
    await exited(s.child);
  }, 600_000);
});
