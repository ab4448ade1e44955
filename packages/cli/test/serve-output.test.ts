import type { ChildProcess } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { NfsStatus } from '@ivmr/nfs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Nfs3Client } from '../../nfs/test/helpers/nfs3-client.js';
import { requireTools, run, runOk, tempDir } from '../../nfs/test/real-clients/harness.js';
import { parseVmSpec } from '../src/commands/serve.js';
import {
  checkBuilt,
  exited,
  logLines,
  pseudoRandom,
  serveArgs,
  spawnServe,
  startServe,
} from './helpers.js';
import { backup } from './repository-files.js';

// What `ivmr serve` prints and logs, checked with libnfs's tools, which take the NFS and MOUNT
// ports in the URL: these servers run without a portmapper, so no test lock on port 111.

const MIB = 1024 * 1024;

/** Starts `ivmr serve` without --json; resolves with its human-readable readiness text. */
async function startServeText(
  args: string[],
): Promise<{ child: ChildProcess; text: string; stderr: () => string }> {
  // The readiness text ends with the line naming `ivmr sessions` (and maybe a note).
  const s = await spawnServe(args, (out) => /^Sessions: .*\n/m.test(out));
  return { child: s.child, text: s.stdout, stderr: s.stderr };
}

/** SIGTERM, then the exit code. */
async function stop(child: ChildProcess): Promise<number | null> {
  child.kill('SIGTERM');
  await exited(child);
  return child.exitCode;
}

/** Splits a printed shell line `tool 'url'` into the tool's name and its argument. */
function printedCommand(text: string, tool: string): [string, string] {
  const line = text.split('\n').find((l) => l.trim().startsWith(`${tool} `));
  expect(line, `a ${tool} line in:\n${text}`).toBeDefined();
  const match = /^\s*(\S+) '([^']+)'$/.exec(line!);
  expect(match, `a ${tool} 'url' line: ${line}`).not.toBeNull();
  return [match![1]!, match![2]!];
}

describe('parseVmSpec', () => {
  it('reads [folder=]vm[@point]', () => {
    expect(parseVmSpec('db01')).toEqual({ vm: 'db01' });
    expect(parseVmSpec('db01@3fa2')).toEqual({ vm: 'db01', point: '3fa2' });
    expect(parseVmSpec('db01-old=db01@3fa2')).toEqual({
      name: 'db01-old',
      vm: 'db01',
      point: '3fa2',
    });
    expect(parseVmSpec('copy=db01')).toEqual({ name: 'copy', vm: 'db01' });
    for (const bad of ['=db01', 'db01@', 'x=', '@3fa2', '']) {
      expect(() => parseVmSpec(bad), bad).toThrow(/expected \[folder=\]vm\[@point\]/);
    }
  });
});

describe('ivmr serve output, logs and folders', () => {
  let tools: ReturnType<typeof requireTools>;
  let tmp: Awaited<ReturnType<typeof tempDir>>;
  let repo: string;
  let older: Buffer;
  let newer: Buffer;
  let olderPoint: string;
  const children: ChildProcess[] = [];

  beforeAll(async () => {
    await checkBuilt();
    tools = requireTools('nfs-ls', 'nfs-cat');
    tmp = await tempDir();
    repo = join(tmp.path, 'repo');
    older = pseudoRandom(3 * MIB + 1536, 21);
    newer = Buffer.from(older);
    newer.fill(0x5a, MIB, MIB + 70_000);
    olderPoint = (await backup(tmp.path, repo, 'db01', older)).id;
    await backup(tmp.path, repo, 'db01', newer);
  });

  afterAll(async () => {
    for (const c of children) {
      c.kill('SIGKILL');
      await exited(c);
    }
    await tmp?.remove();
  });

  it('without a portmapper prints an nfs-ls line that works, and says what ESXi lacks', async () => {
    const cache = join(tmp.path, 'cache-text');
    const s = await startServeText(serveArgs(repo, cache, ['db01'], 'off'));
    children.push(s.child);
    expect(s.text).toMatch(/^ivmr datastore ready: nfs:\/\/127\.0\.0\.1\/ivmr .*portmapper off/m);
    expect(s.text).toMatch(/^ {2}esxcli storage nfs add -H 127\.0\.0\.1 -s \/ivmr -v ivmr$/m);
    expect(s.text).toMatch(
      /^ {2}vim-cmd solo\/registervm \/vmfs\/volumes\/ivmr\/db01\/db01\.vmx$/m,
    );
    expect(s.text).toMatch(/listens on 127\.0\.0\.1 only: for ESXi, serve with --listen/);
    expect(s.text).toMatch(/ESXi expects NFS on port 2049/);
    expect(s.text).toMatch(/ESXi finds MOUNT through a portmapper on port 111/);
    // qemu cannot reach a server without a portmapper on 111: the check line is libnfs's.
    expect(s.text).not.toMatch(/qemu-img/);
    const [tool, url] = printedCommand(s.text, 'nfs-ls');
    expect(tool).toBe('nfs-ls');
    const listing = (await runOk(tools['nfs-ls'], [url])).toString();
    expect(listing).toMatch(/db01\.vmx/);
    expect(listing).toMatch(/db01-flat\.vmdk/);
    expect(await stop(s.child)).toBe(0);
    // The client's mount is in the log.
    expect(logLines(s.stderr())).toContainEqual(
      expect.objectContaining({ level: 30, msg: 'client mounted', client: '127.0.0.1' }),
    );
  });

  it('serves one VM from two points in two folders, each with its own bytes', async () => {
    const cache = join(tmp.path, 'cache-two');
    const s = await startServe(
      serveArgs(repo, cache, ['db01', `db01-before=db01@${olderPoint.slice(0, 8)}`], 'off'),
    );
    children.push(s.child);
    expect(s.ready.sessions.map((x) => [x.name, x.vm, x.point === olderPoint])).toEqual([
      ['db01', 'db01', false],
      ['db01-before', 'db01', true],
    ]);
    const ports = `nfsport=${s.ready.nfsPort}&mountport=${s.ready.mountPort}&version=3`;
    const cat = (folder: string) =>
      runOk(tools['nfs-cat'], [`nfs://127.0.0.1/ivmr/${folder}/db01-flat.vmdk?${ports}`]);
    expect((await cat('db01')).equals(newer), 'db01 is the newest point').toBe(true);
    expect((await cat('db01-before')).equals(older), 'db01-before is the older point').toBe(true);
    // The .vmx of each folder names its own disk.
    const vmx = await runOk(tools['nfs-cat'], [
      `nfs://127.0.0.1/ivmr/db01-before/db01.vmx?${ports}`,
    ]);
    expect(vmx.toString()).toMatch(/scsi0:0\.fileName = "db01\.vmdk"/);
    expect(await stop(s.child)).toBe(0);
  });

  it('logs a mount the export refuses as refused, with a warning for a client not allowed', async () => {
    const cache = join(tmp.path, 'cache-allow');
    const s = await startServe([
      ...serveArgs(repo, cache, ['db01'], 'off'),
      '--allow',
      '10.0.0.0/8',
    ]);
    children.push(s.child);
    const ports = `nfsport=${s.ready.nfsPort}&mountport=${s.ready.mountPort}&version=3`;
    const denied = await run(tools['nfs-ls'], [`nfs://127.0.0.1/ivmr?${ports}`]);
    expect(denied.code).not.toBe(0);
    expect(await stop(s.child)).toBe(0);
    const logs = logLines(s.stderr());
    expect(logs.map((l) => l.msg)).not.toContain('client mounted');
    expect(logs).toContainEqual(
      expect.objectContaining({
        level: 40,
        msg: 'mount refused: client not allowed (see --allow)',
        client: '127.0.0.1',
        status: 'MNT3ERR_ACCES',
      }),
    );
  });

  it('keeps the file-handle key across restarts and replaces a damaged one', async () => {
    const cache = join(tmp.path, 'cache-key');
    const args = serveArgs(repo, cache, ['db01'], 'off');
    const first = await startServe(args);
    children.push(first.child);
    expect(await stop(first.child)).toBe(0);
    const key = await readFile(join(cache, 'handle.key'));
    expect(key).toHaveLength(32);
    const second = await startServe(args);
    children.push(second.child);
    expect(await stop(second.child)).toBe(0);
    expect((await readFile(join(cache, 'handle.key'))).equals(key)).toBe(true);
    // A short key (damaged outside ivmr) no longer locks the folder out: it is replaced.
    await writeFile(join(cache, 'handle.key'), key.subarray(0, 7));
    const third = await startServe(args);
    children.push(third.child);
    expect(await stop(third.child)).toBe(0);
    const replaced = await readFile(join(cache, 'handle.key'));
    expect(replaced).toHaveLength(32);
    expect(replaced.equals(key)).toBe(false);
    expect(logLines(third.stderr()).map((l) => l.msg)).toContain(
      'the file-handle key is damaged: a new one replaces it',
    );
  });
});

describe('ivmr serve restarted after kill -9', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>;
  const children: ChildProcess[] = [];

  beforeAll(async () => {
    await checkBuilt();
    tmp = await tempDir();
  });

  afterAll(async () => {
    for (const c of children) {
      c.kill('SIGKILL');
      await exited(c);
    }
    await tmp?.remove();
  });

  it('answers the handles a client got before the crash: disk, .vmx and a lock file', async () => {
    const repo = join(tmp.path, 'repo');
    const image = pseudoRandom(2 * MIB + 512, 31);
    await backup(tmp.path, repo, 'app02', image);
    const cache = join(tmp.path, 'cache');
    const args = (port: number) => [
      '--repo',
      repo,
      '--cache',
      cache,
      '--vm',
      'app02',
      '--nfs-port',
      String(port),
      '--portmap',
      'off',
    ];
    const first = await startServe(args(0));
    children.push(first.child);
    const port = first.ready.nfsPort;
    let client = await Nfs3Client.connect(port);
    const root = await client.mnt('/ivmr');
    expect(root.status).toBe(0);
    const folder = (await client.lookup(root.handle!, 'app02')).object!;
    const flat = (await client.lookup(folder, 'app02-flat.vmdk')).object!;
    const vmx = (await client.lookup(folder, 'app02.vmx')).object!;
    const lck = await client.create(folder, '.lck-00000000000000a1', { mode: 'guarded' });
    expect(lck.status).toBe(NfsStatus.OK);
    expect((await client.write(lck.object!, 0, Buffer.from('held'), 2)).status).toBe(NfsStatus.OK);
    const written = Buffer.alloc(4096, 0xc3);
    expect((await client.write(flat, 8192, written, 2)).status).toBe(NfsStatus.OK);
    const vmxBefore = (await client.read(vmx, 0, 65536)).data!;
    await client.close();

    first.child.kill('SIGKILL');
    await exited(first.child);
    const second = await startServe(args(port));
    children.push(second.child);
    client = await Nfs3Client.connect(port);
    try {
      // No new MNT or LOOKUP: the old handles are used as they are.
      expect((await client.getattr(root.handle!)).status).toBe(NfsStatus.OK);
      const disk = await client.read(flat, 0, 16384);
      expect(disk.status).toBe(NfsStatus.OK);
      const want = Buffer.from(image.subarray(0, 16384));
      written.copy(want, 8192);
      expect(disk.data!.equals(want)).toBe(true);
      expect((await client.read(vmx, 0, 65536)).data!.equals(vmxBefore)).toBe(true);
      expect((await client.read(lck.object!, 0, 100)).data!.toString()).toBe('held');
      // A handle that was never issued is refused.
      const forged = Buffer.from(flat);
      forged[forged.length - 1]! ^= 1;
      expect((await client.getattr(forged)).status).not.toBe(NfsStatus.OK);
    } finally {
      await client.close();
    }
    expect(await stop(second.child)).toBe(0);
  });
});
