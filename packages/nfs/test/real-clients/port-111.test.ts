import { existsSync } from 'node:fs';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { registerWithRpcbind } from '../../src/portmap/rpcbind-client.js';
import { expectNoLeakedHandles, openHandles } from '../helpers/open-handles.js';
import {
  type Daemon,
  lockPort111,
  type MemfsServer,
  pseudoRandom,
  requirePortFree,
  requireTools,
  run,
  runOk,
  startDaemon,
  startMemfsServer,
  tempDir,
  waitForPort,
} from './harness.js';

// Clients without a port option: qemu's nfs:// driver and libnfs URLs without `nfsport`, which
// ask the portmapper on 111. Everything that needs port 111 lives in this one file, so that
// its suites run one after the other and never race for the port.

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

/** `rpcinfo -p` rows as `prog vers proto port`. */
async function rpcinfoRows(rpcinfo: string): Promise<string[]> {
  const out = (await runOk(rpcinfo, ['-p', '127.0.0.1'])).toString();
  return out
    .split('\n')
    .slice(1)
    .map((line) => line.trim().split(/\s+/).slice(0, 4).join(' '))
    .filter((row) => row !== '');
}

/** A disk image with random, text and zero areas of 64 KiB. */
function diskImage(size: number, seed: number): Buffer {
  const img = Buffer.alloc(size);
  const kinds = pseudoRandom(Math.ceil(size / 65_536), seed);
  for (let off = 0, i = 0; off < size; off += 65_536, i++) {
    const len = Math.min(65_536, size - off);
    if (kinds[i]! % 3 === 1) pseudoRandom(len, seed + i).copy(img, off);
    else if (kinds[i]! % 3 === 2)
      img.write(`block ${i} of a test disk\n`.repeat(len / 16), off, len, 'latin1');
  }
  return img;
}

describe('libnfs and qemu through the embedded portmapper on port 111', () => {
  let tools: ReturnType<typeof requireTools>;
  let s: MemfsServer;
  let tmp: Awaited<ReturnType<typeof tempDir>>;
  let baseline: string[];
  let release111: (() => Promise<void>) | undefined;
  const qemuUrl = (name: string) => `nfs://127.0.0.1/memfs/${name}`;

  beforeAll(async () => {
    tools = requireTools('nfs-ls', 'nfs-cat', 'qemu-img', 'qemu-io', 'rpcinfo');
    baseline = openHandles();
    release111 = await lockPort111();
    await requirePortFree(111);
    tmp = await tempDir();
    s = await startMemfsServer({ portmap: 'embedded', portmapPort: 111, mountPort: 0 });
  });

  afterAll(async () => {
    await s?.server.stop();
    await release111?.();
    await tmp?.remove();
    expect(s?.errors ?? []).toEqual([]);
    if (baseline) await expectNoLeakedHandles(baseline);
  });

  it('rpcinfo -p (PMAP DUMP) lists the portmapper, NFS v3 and MOUNT v1 and v3', async () => {
    const { nfsPort, mountPort } = s.address;
    expect(await rpcinfoRows(tools.rpcinfo)).toEqual([
      '100000 2 tcp 111',
      '100000 3 tcp 111',
      '100000 4 tcp 111',
      `100003 3 tcp ${nfsPort}`,
      `100005 1 tcp ${mountPort}`,
      `100005 3 tcp ${mountPort}`,
    ]);
  });

  it('rpcinfo finds and pings each program through RPCBIND GETADDR, and dumps RPCBIND', async () => {
    for (const [prog, vers] of [
      [100003, 3],
      [100005, 1],
      [100005, 3],
    ]) {
      const out = (
        await runOk(tools.rpcinfo, ['-T', 'tcp', '127.0.0.1', String(prog), String(vers)])
      ).toString();
      expect(out.trim()).toBe(`program ${prog} version ${vers} ready and waiting`);
    }
    const nfs = await run(tools.rpcinfo, ['-T', 'tcp', '127.0.0.1', '100003', '2']);
    expect(nfs.code).not.toBe(0);
    expect(nfs.stdout.toString() + nfs.stderr).toMatch(/version 2 is not available/);
    const dump = (await runOk(tools.rpcinfo, ['127.0.0.1'])).toString();
    const p = s.address.nfsPort;
    expect(dump).toMatch(
      new RegExp(`100003\\s+3\\s+tcp\\s+127\\.0\\.0\\.1\\.${p >> 8}\\.${p & 255}\\s+nfs`),
    );
  });

  it('nfs-ls and nfs-cat find the server without port options', async () => {
    const data = pseudoRandom(200_001, 1);
    s.fs.writeFile('/via-portmap.bin', data);
    expect((await runOk(tools['nfs-ls'], [qemuUrl('')])).toString()).toMatch(
      /\s200001 via-portmap\.bin$/m,
    );
    expect((await runOk(tools['nfs-cat'], [qemuUrl('via-portmap.bin')])).equals(data)).toBe(true);
  });

  it('qemu-img info, convert and compare a raw image over nfs://', async () => {
    const image = diskImage(24 * MiB, 2);
    s.fs.writeFile('/disk.raw', image);
    const info = JSON.parse(
      (
        await runOk(tools['qemu-img'], ['info', '-f', 'raw', '--output=json', qemuUrl('disk.raw')])
      ).toString(),
    );
    expect(info['virtual-size']).toBe(24 * MiB);

    const local = join(tmp.path, 'disk.raw');
    await runOk(tools['qemu-img'], [
      'convert',
      '-f',
      'raw',
      '-O',
      'raw',
      qemuUrl('disk.raw'),
      local,
    ]);
    expect((await readFile(local)).equals(image)).toBe(true);
    const same = await run(tools['qemu-img'], [
      'compare',
      '-f',
      'raw',
      '-F',
      'raw',
      qemuUrl('disk.raw'),
      local,
    ]);
    expect([same.code, same.stdout.toString().trim()]).toEqual([0, 'Images are identical.']);

    // compare must really read: one changed byte on the server is a mismatch (exit 1).
    await s.fs.write(
      s.fs.idOf('/disk.raw'),
      20 * MiB + 3,
      Buffer.from([image[20 * MiB + 3]! ^ 0xff]),
      'file_sync',
    );
    const differ = await run(tools['qemu-img'], [
      'compare',
      '-f',
      'raw',
      '-F',
      'raw',
      qemuUrl('disk.raw'),
      local,
    ]);
    expect(differ.code).toBe(1);
    // qemu-img reports the start of the 512-byte sector that differs.
    expect(differ.stdout.toString().trim()).toBe('Content mismatch at offset 20971520!');
  });

  it('qemu-img convert uploads an image byte for byte', async () => {
    const image = diskImage(6 * MiB + 3 * 512, 3);
    const local = join(tmp.path, 'upload.raw');
    await writeFile(local, image);
    await runOk(tools['qemu-img'], [
      'convert',
      '-f',
      'raw',
      '-O',
      'raw',
      local,
      qemuUrl('upload.raw'),
    ]);
    expect(s.fs.readFile('/upload.raw').equals(image)).toBe(true);
    await runOk(tools['qemu-img'], [
      'compare',
      '-f',
      'raw',
      '-F',
      'raw',
      qemuUrl('upload.raw'),
      local,
    ]);
  });

  it('qemu-io reads and writes patterns', async () => {
    s.fs.writeFile('/pattern.raw', Buffer.alloc(MiB, 0xab), { size: 4 * MiB });
    const out = await runOk(tools['qemu-io'], [
      '-f',
      'raw',
      '-c',
      'read -P 0xab 0 1M',
      '-c',
      'read -P 0 1M 3M',
      '-c',
      'write -P 0xcd 1536k 64k',
      '-c',
      'read -P 0xcd 1536k 64k',
      qemuUrl('pattern.raw'),
    ]);
    expect(out.toString()).not.toMatch(/Pattern verification failed|error/i);
    const after = s.fs.readFile('/pattern.raw');
    expect(after.subarray(1536 * 1024, 1600 * 1024).every((b) => b === 0xcd)).toBe(true);
    expect(after.subarray(MiB, 1536 * 1024).every((b) => b === 0)).toBe(true);
    expect(after.subarray(1600 * 1024).every((b) => b === 0)).toBe(true);
    // The checks above really check: a wrong pattern fails.
    const wrong = await run(tools['qemu-io'], [
      '-f',
      'raw',
      '-c',
      'read -P 0x11 0 4k',
      qemuUrl('pattern.raw'),
    ]);
    expect(wrong.code).toBe(1);
    expect(wrong.stdout.toString()).toMatch(/Pattern verification failed at offset 0/);
  });

  it('copies regions of a sparse 6 GiB file across and above 4 GiB exactly', async () => {
    const size = 6 * GiB;
    const id = s.fs.writeFile('/big.raw', '', { size });
    const across = pseudoRandom(3 * MiB, 4); // [4 GiB - 1 MiB, 4 GiB + 2 MiB)
    const high = pseudoRandom(MiB + 4096, 5); // at 5 GiB + 12 KiB
    await s.fs.write(id, 4 * GiB - MiB, across, 'file_sync');
    await s.fs.write(id, 5 * GiB + 12_288, high, 'file_sync');
    expect(s.fs.chunkCount('/big.raw')).toBeLessThan(100);

    const info = JSON.parse(
      (
        await runOk(tools['qemu-img'], ['info', '-f', 'raw', '--output=json', qemuUrl('big.raw')])
      ).toString(),
    );
    expect(info['virtual-size']).toBe(size);

    // qemu-img dd copies input blocks [skip, count): 4 MiB from 4095 MiB, across the 4 GiB mark.
    const region = join(tmp.path, 'region.raw');
    await runOk(tools['qemu-img'], [
      'dd',
      '-f',
      'raw',
      '-O',
      'raw',
      'bs=1M',
      'skip=4095',
      'count=4099',
      `if=${qemuUrl('big.raw')}`,
      `of=${region}`,
    ]);
    const expected = Buffer.alloc(4 * MiB);
    across.copy(expected);
    expect((await readFile(region)).equals(expected)).toBe(true);

    const region2 = join(tmp.path, 'region2.raw');
    await runOk(tools['qemu-img'], [
      'dd',
      '-f',
      'raw',
      '-O',
      'raw',
      'bs=4k',
      `skip=${(5 * GiB) / 4096}`,
      `count=${(5 * GiB) / 4096 + 512}`,
      `if=${qemuUrl('big.raw')}`,
      `of=${region2}`,
    ]);
    const expected2 = Buffer.alloc(2 * MiB);
    high.copy(expected2, 12_288);
    expect((await readFile(region2)).equals(expected2)).toBe(true);

    // An unaligned write above 4 GiB through qemu-io: qemu reads, merges and writes back.
    const patch = pseudoRandom(2 * MiB + 77, 6);
    const patchFile = join(tmp.path, 'patch.bin');
    await writeFile(patchFile, patch);
    const at = 4 * GiB + 3 * MiB + 1000;
    const io = await runOk(tools['qemu-io'], [
      '-f',
      'raw',
      '-c',
      `write -s ${patchFile} ${at} ${patch.length}`,
      '-c',
      `read -P 0 ${5 * GiB - MiB} 1M`,
      qemuUrl('big.raw'),
    ]);
    expect(io.toString()).not.toMatch(/Pattern verification failed|error/i);
    expect(Buffer.from(await s.fs.read(id, at, patch.length)).equals(patch)).toBe(true);
    const around = Buffer.from(await s.fs.read(id, at - 1000, 1000));
    expect(around.every((b) => b === 0)).toBe(true);
    expect((await s.fs.getattr(id)).size).toBe(size);
  });
});

describe('the system rpcbind (portmap: system)', () => {
  let tools: ReturnType<typeof requireTools>;
  let rpcbind: Daemon | undefined;
  let s: MemfsServer | undefined;
  let baseline: string[];
  let release111: (() => Promise<void>) | undefined;
  /** Files rpcbind creates (socket, lock, warm-start state): removed unless they were there. */
  const leftovers = [
    '/run/rpcbind.sock',
    '/run/rpcbind.lock',
    '/run/rpcbind/rpcbind.xdr',
    '/run/rpcbind/portmap.xdr',
  ];
  let preexisting: Set<string>;

  beforeAll(async () => {
    tools = requireTools('rpcbind', 'rpcinfo', 'nfs-ls');
    baseline = openHandles();
    release111 = await lockPort111();
    await requirePortFree(111);
    preexisting = new Set(leftovers.filter((f) => existsSync(f)));
    // -f: stay in the foreground as our child, so the test owns it and stops it; no -w, so no
    // state from an earlier run comes back.
    rpcbind = startDaemon(tools.rpcbind, ['-f']);
    await waitForPort(111, 5000, ` (rpcbind -f said: ${rpcbind.output().trim() || 'nothing'})`);
  });

  afterAll(async () => {
    await s?.server.stop();
    await rpcbind?.stop();
    for (const f of leftovers) if (!preexisting?.has(f)) await rm(f, { force: true });
    await release111?.();
    if (baseline) await expectNoLeakedHandles(baseline);
  });

  it('registers NFS and MOUNT with rpcbind, serves nfs-ls through it, and unregisters on stop', async () => {
    // A stale registration, as a crashed server leaves it: it must be replaced, not kept.
    const stale = await registerWithRpcbind([{ prog: 100003, vers: 3, port: 1 }]);
    expect(await rpcinfoRows(tools.rpcinfo)).toContain('100003 3 tcp 1');

    s = await startMemfsServer({ portmap: 'system', mountPort: 0 });
    const { nfsPort, mountPort } = s.address;
    expect(s.address.portmapPort).toBeUndefined();
    const rows = await rpcinfoRows(tools.rpcinfo);
    expect(rows).toEqual(
      expect.arrayContaining([
        `100003 3 tcp ${nfsPort}`,
        `100005 1 tcp ${mountPort}`,
        `100005 3 tcp ${mountPort}`,
      ]),
    );
    expect(rows).not.toContain('100003 3 tcp 1');
    expect(rows).toContain('100000 2 tcp 111');

    s.fs.writeFile('/through-rpcbind.txt', 'registered\n');
    const ls = (await runOk(tools['nfs-ls'], ['nfs://127.0.0.1/memfs'])).toString();
    expect(ls).toMatch(/\s11 through-rpcbind\.txt$/m);

    await s.server.stop();
    const after = await rpcinfoRows(tools.rpcinfo);
    expect(after.filter((r) => r.startsWith('100003 ') || r.startsWith('100005 '))).toEqual([]);
    expect(s.errors).toEqual([]);
    s = undefined;
    await stale.unregister();
  });
});
