import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  cp,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  rm,
  stat,
  truncate,
  writeFile,
} from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkBuilt, ivmr, makeImage, mutate, type RunResult, run } from './helpers.js';

const MiB = 1024 * 1024;
/** Not a multiple of any block size: the last block of every disk is short. */
const SIZE = 3 * MiB + 12345;
/** Block size of the damage tests' repository. */
const BLOCK = 64 * 1024;

let root: string;
let n = 0;
/** A fresh directory under this file's temp root. */
async function scratch(): Promise<string> {
  const dir = join(root, `case-${++n}`);
  await mkdir(dir);
  return dir;
}

beforeAll(async () => {
  await checkBuilt();
  root = await mkdtemp(join(tmpdir(), 'ivmr-cli-test-'));
});
afterAll(async () => {
  if (root) await rm(root, { recursive: true, force: true });
});

/** Runs ivmr and expects exit code 0 and nothing on stderr. */
async function ok(args: readonly string[]): Promise<string> {
  const r = await ivmr(args);
  expect(r.stderr, `ivmr ${args.join(' ')}`).toBe('');
  expect(r.code, `ivmr ${args.join(' ')}`).toBe(0);
  return r.stdout;
}

/** Expects a failure reported as exactly one `ivmr: ... [CODE]` line on stderr. */
function expectOneLineError(r: RunResult, exitCode: number, code: string): void {
  expect(r.code, r.stderr).toBe(exitCode);
  expect(r.stdout).toBe('');
  const lines = r.stderr.trimEnd().split('\n');
  expect(lines, r.stderr).toHaveLength(1);
  expect(lines[0]).toMatch(new RegExp(`^ivmr: .+ \\[${code}\\]$`));
}

/** Backs up `image` and returns the new point id (checks stdout is just the id). */
async function backup(image: string, repo: string, vm: string, ...flags: string[]) {
  const out = await ok(['backup', image, '--repo', repo, '--vm', vm, ...flags]);
  expect(out).toMatch(/^[0-9a-f]{16}\n$/);
  return out.trim();
}

/** Restores a point and checks every disk against the expected bytes, with cmp and qemu-img. */
async function expectRestores(
  repo: string,
  vm: string,
  point: string,
  expected: Record<string, Buffer>,
): Promise<void> {
  const out = join(await scratch(), 'out');
  const printed = await ok(['restore', '--repo', repo, '--vm', vm, '--point', point, '--out', out]);
  expect(printed.trim().split('\n').sort()).toEqual(
    Object.keys(expected)
      .map((d) => join(out, `${d}.raw`))
      .sort(),
  );
  expect((await readdir(out)).sort()).toEqual(
    Object.keys(expected)
      .map((d) => `${d}.raw`)
      .sort(),
  );
  for (const [disk, bytes] of Object.entries(expected)) {
    const restored = join(out, `${disk}.raw`);
    expect((await readFile(restored)).equals(bytes), `${vm}@${point} ${disk}`).toBe(true);
    const reference = join(out, `${disk}.expected`);
    await writeFile(reference, bytes);
    const q = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', reference, restored]);
    expect(q.code, q.stdout + q.stderr).toBe(0);
    expect(q.stdout).toContain('Images are identical');
  }
}

interface Listed {
  vm: string;
  id: string;
  kind: string;
  base: string | null;
  disks: { name: string; size: number; allocatedBytes: number | null; storedBytes: number }[];
  logicalBytes: number;
  allocatedBytes: number | null;
  storedBytes: number;
  dedupRatio: number | null;
}

async function list(repo: string, ...flags: string[]): Promise<Listed[]> {
  return JSON.parse(await ok(['list', '--repo', repo, '--json', ...flags])) as Listed[];
}

/** A repository with two points of VM `vm1`, to be copied by the damage tests. */
async function twoPointRepo(): Promise<{ repo: string; ids: string[]; images: Buffer[] }> {
  const dir = await scratch();
  const repo = join(dir, 'repo');
  const image = join(dir, 'disk0.img');
  const v1 = makeImage(SIZE, 11);
  await writeFile(image, v1);
  const id1 = await backup(image, repo, 'vm1', '--block-size', '64K');
  const v2 = mutate(v1, 12, 4).img;
  await writeFile(image, v2);
  const id2 = await backup(image, repo, 'vm1');
  return { repo, ids: [id1, id2], images: [v1, v2] };
}

/** Offsets of the `BLOCK`-sized blocks of `img` whose SHA-256 is `blob`. */
function blocksWith(img: Buffer, blob: string): number[] {
  const offsets: number[] = [];
  for (let o = 0; o < img.length; o += BLOCK) {
    const block = img.subarray(o, o + BLOCK);
    if (createHash('sha256').update(block).digest('hex') === blob) offsets.push(o);
  }
  return offsets;
}

async function packFiles(repo: string): Promise<string[]> {
  const files: string[] = [];
  for (const sub of await readdir(join(repo, 'packs'))) {
    for (const f of await readdir(join(repo, 'packs', sub)))
      files.push(join(repo, 'packs', sub, f));
  }
  return files.sort();
}

describe.each([
  { blockSize: '64K', codec: 'zstd', reverse: false, cbt: 'text' },
  { blockSize: '1M', codec: 'lz4', reverse: false, cbt: 'json' },
  { blockSize: '64K', codec: 'none', reverse: true, cbt: 'vmware' },
])('ivmr with $blockSize blocks, codec $codec, reverse $reverse', ({
  blockSize,
  codec,
  reverse,
  cbt,
}) => {
  it('backs up full then incremental (with and without a changed-blocks file), lists, restores, verifies', async () => {
    const dir = await scratch();
    const repo = join(dir, 'repo');
    const image = join(dir, 'disk0.img');
    const flags = ['--block-size', blockSize, '--codec', codec, ...(reverse ? ['--reverse'] : [])];

    const v1 = makeImage(SIZE, 1);
    await writeFile(image, v1);
    const id1 = await backup(image, repo, 'vm1', ...flags);

    const v2 = mutate(v1, 2, 3).img;
    await writeFile(image, v2);
    const id2 = await backup(image, repo, 'vm1', ...flags);

    const { img: v3, ranges } = mutate(v2, 3, 3);
    await writeFile(image, v3);
    const cbtFile = join(dir, 'changed');
    if (cbt === 'text') {
      const lines = ranges.map((r, i) =>
        i % 2 ? `0x${r.offset.toString(16)} 0x${r.length.toString(16)}` : `${r.offset} ${r.length}`,
      );
      await writeFile(cbtFile, `# offset length\n${lines.join('\n')}\n\n`);
    } else if (cbt === 'json') {
      await writeFile(cbtFile, JSON.stringify(ranges));
    } else {
      const changedArea = ranges.map((r) => ({ start: r.offset, length: r.length }));
      await writeFile(cbtFile, JSON.stringify({ startOffset: 0, length: SIZE, changedArea }));
    }
    const id3 = await backup(image, repo, 'vm1', ...flags, '--changed-blocks', cbtFile);

    const points = await list(repo);
    expect(points.map((p) => p.id)).toEqual([id1, id2, id3]);
    if (reverse) {
      expect(points.map((p) => p.kind)).toEqual([
        'reverse-incremental',
        'reverse-incremental',
        'full',
      ]);
      expect(points.map((p) => p.base)).toEqual([id2, id3, null]);
    } else {
      expect(points.map((p) => p.kind)).toEqual(['full', 'incremental', 'incremental']);
      expect(points.map((p) => p.base)).toEqual([null, id1, id2]);
    }
    for (const p of points) {
      expect(p.disks).toEqual([expect.objectContaining({ name: 'disk0', size: SIZE })]);
      expect(p.logicalBytes).toBe(SIZE);
      expect(p.allocatedBytes).toBeGreaterThan(0);
      expect(p.allocatedBytes).toBeLessThanOrEqual(SIZE);
      expect(p.dedupRatio).toBeCloseTo(p.allocatedBytes! / p.storedBytes, 9);
    }
    // Increments store only the blocks that changed.
    expect(points[1]!.storedBytes).toBeLessThan(points[0]!.storedBytes);
    expect(points[2]!.storedBytes).toBeLessThan(points[0]!.storedBytes);

    const table = await ok(['list', '--repo', repo, '--vm', 'vm1']);
    expect(table.split('\n')[0]).toMatch(
      /^VM\s+POINT\s+TIME\s+KIND\s+BASE\s+SIZE\s+NON-ZERO\s+STORED\s+DEDUP/,
    );
    for (const id of [id1, id2, id3]) expect(table).toContain(id);

    await expectRestores(repo, 'vm1', id1, { disk0: v1 });
    await expectRestores(repo, 'vm1', id2.slice(0, 8), { disk0: v2 });
    await expectRestores(repo, 'vm1', id3, { disk0: v3 });

    expect(await ok(['verify', '--repo', repo])).toMatch(/: no damage\n$/);
    const report = JSON.parse(
      await ok(['verify', '--repo', repo, '--vm', 'vm1', '--point', id2, '--json']),
    );
    expect(report).toMatchObject({ ok: true, pointsChecked: 1, damagedBlobs: [], affected: [] });
  });
});

describe('ivmr backup', () => {
  it('reads only the blocks a changed-blocks file names', async () => {
    const dir = await scratch();
    const repo = join(dir, 'repo');
    const image = join(dir, 'disk0.img');
    const v1 = makeImage(SIZE, 21);
    await writeFile(image, v1);
    await backup(image, repo, 'vm1', '--block-size', '64K');
    // Change two 64K blocks, but report only the first: the second must keep its old bytes.
    const v2 = Buffer.from(v1);
    v2.fill(0xaa, 100_000, 100_010);
    v2.fill(0xbb, 2_000_000, 2_000_010);
    await writeFile(image, v2);
    await writeFile(
      join(dir, 'cbt.json'),
      JSON.stringify({ changedArea: [{ start: '100000', length: 10 }] }),
    );
    const point = JSON.parse(
      await ok([
        'backup',
        image,
        '--repo',
        repo,
        '--vm',
        'vm1',
        '--changed-blocks',
        join(dir, 'cbt.json'),
        '--json',
      ]),
    );
    // The changed block, and the short last block, which is always read.
    expect(point.disks[0].stats.readBytes).toBe(BLOCK + (SIZE % BLOCK));
    const seen = Buffer.from(v1);
    seen.fill(0xaa, 100_000, 100_010);
    await expectRestores(repo, 'vm1', point.id, { disk0: seen });
  });

  it('takes a changed-blocks file on a first backup as the allocated areas', async () => {
    const dir = await scratch();
    const repo = join(dir, 'repo');
    const image = join(dir, 'disk0.img');
    // Zeros, with data in two places; the file lists exactly those.
    const v1 = Buffer.alloc(SIZE);
    makeImage(3 * BLOCK, 22).copy(v1, 0);
    makeImage(1000, 23).copy(v1, 10 * BLOCK + 5);
    await writeFile(image, v1);
    await writeFile(join(dir, 'areas.txt'), `0 ${3 * BLOCK}\n${10 * BLOCK + 5} 1000\n`);
    const point = JSON.parse(
      await ok([
        'backup',
        image,
        '--repo',
        repo,
        '--vm',
        'vm1',
        '--block-size',
        '64K',
        '--changed-blocks',
        join(dir, 'areas.txt'),
        '--json',
      ]),
    );
    expect(point.kind).toBe('full');
    const stats = point.disks[0].stats;
    expect(stats.readBytes).toBe(4 * BLOCK);
    expect(stats.zeroBlocks).toBe(Math.ceil(SIZE / BLOCK) - 4);
    await expectRestores(repo, 'vm1', point.id, { disk0: v1 });
  });

  it('backs up several disks, named after the images or by --disk-name, with a VM config', async () => {
    const dir = await scratch();
    const repo = join(dir, 'repo');
    const a = makeImage(SIZE, 31);
    const b = makeImage(2 * MiB + 1, 32);
    await writeFile(join(dir, 'web-01.img'), a);
    await writeFile(join(dir, 'data.raw'), b);
    const images = [join(dir, 'web-01.img'), join(dir, 'data.raw')];
    const first = await backup(images[0]!, repo, 'web', '--memory', '2048', '--cpus', '2');
    expect((await list(repo, '--vm', 'web'))[0]!.disks.map((d) => d.name)).toEqual(['web-01']);

    const point = JSON.parse(
      await ok([
        'backup',
        ...images,
        '--repo',
        repo,
        '--vm',
        'web2',
        '--disk-name',
        'sys',
        '--disk-name',
        'data',
        '--firmware',
        'efi',
        '--guest-os',
        'debian12-64',
        '--controller',
        'nvme',
        '--json',
      ]),
    );
    expect(point.disks.map((d: { name: string }) => d.name)).toEqual(['sys', 'data']);
    expect(point.vmConfig).toMatchObject({
      firmware: 'efi',
      guestOs: 'debian12-64',
      controller: 'nvme',
    });
    await expectRestores(repo, 'web2', point.id, { sys: a, data: b });
    await expectRestores(repo, 'web', first, { 'web-01': a });
    // The second VM's disks were deduplicated against the first VM's blocks.
    const [web2] = await list(repo, '--vm', 'web2');
    expect(web2!.disks[0]!.storedBytes).toBe(0);

    const r = await ivmr(['backup', ...images, '--repo', repo, '--vm', 'x', '--disk-name', 'one']);
    expectOneLineError(r, 2, 'IVMR_INVALID_ARGUMENT');
    expect(r.stderr).toContain('--disk-name');
  });
});

describe('ivmr restore', () => {
  it('writes sparse images and refuses to overwrite without --force', async () => {
    const dir = await scratch();
    const repo = join(dir, 'repo');
    const image = join(dir, 'sparse.img');
    // 16 MiB, mostly zero; one 4 MiB block holds 100 KB of data and three zero MiBs.
    const v1 = Buffer.alloc(16 * MiB);
    makeImage(100_000, 41).copy(v1, 4 * MiB + 10);
    v1.write('end', v1.length - 3);
    await writeFile(image, v1);
    const id = await backup(image, repo, 'vm1', '--block-size', '4M');
    const out = join(dir, 'out');
    const summary = JSON.parse(
      await ok(['restore', '--repo', repo, '--vm', 'vm1', '--out', out, '--json']),
    );
    expect(summary).toMatchObject({
      vm: 'vm1',
      point: id,
      disks: [{ name: 'sparse', size: 16 * MiB }],
    });
    expect(summary.disks[0].writtenBytes).toBe(2 * MiB);
    const restored = join(out, 'sparse.raw');
    expect((await readFile(restored)).equals(v1)).toBe(true);
    const st = await stat(restored);
    expect(st.size).toBe(16 * MiB);
    expect(st.blocks * 512).toBeLessThanOrEqual(2 * MiB + 64 * 1024);

    const again = await ivmr(['restore', '--repo', repo, '--vm', 'vm1', '--out', out]);
    expectOneLineError(again, 1, 'IVMR_EXISTS');
    expect(await readdir(out)).toEqual(['sparse.raw']);
    await ok(['restore', '--repo', repo, '--vm', 'vm1', '--out', out, '--force']);
    expect((await readFile(restored)).equals(v1)).toBe(true);
    expect(await readdir(out)).toEqual(['sparse.raw']);
  });
});

describe('ivmr forget', () => {
  it('keeps every remaining point of a forward chain restorable, and prunes', async () => {
    const dir = await scratch();
    const repo = join(dir, 'repo');
    const image = join(dir, 'disk0.img');
    const versions = [makeImage(SIZE, 51)];
    for (let i = 1; i < 4; i++) versions.push(mutate(versions[i - 1]!, 51 + i, 6).img);
    const ids: string[] = [];
    for (const v of versions) {
      await writeFile(image, v);
      ids.push(await backup(image, repo, 'vm1', '--block-size', '64K', '--codec', 'zstd'));
    }
    const report = JSON.parse(
      await ok(['forget', '--repo', repo, '--vm', 'vm1', '--keep-last', '2', '--json']),
    );
    expect(report.removed.sort()).toEqual(ids.slice(0, 2).sort());
    expect(report.prune.blobsRemoved).toBeGreaterThan(0);
    expect((await list(repo)).map((p) => p.id)).toEqual(ids.slice(2));
    await expectRestores(repo, 'vm1', ids[2]!, { disk0: versions[2]! });
    await expectRestores(repo, 'vm1', ids[3]!, { disk0: versions[3]! });
    await ok(['verify', '--repo', repo]);
    expectOneLineError(
      await ivmr([
        'restore',
        '--repo',
        repo,
        '--vm',
        'vm1',
        '--point',
        ids[0]!,
        '--out',
        join(dir, 'x'),
      ]),
      1,
      'IVMR_NOT_FOUND',
    );
  });

  it('keeps a reverse chain restorable with --no-prune', async () => {
    const dir = await scratch();
    const repo = join(dir, 'repo');
    const image = join(dir, 'disk0.img');
    const versions = [makeImage(SIZE, 61)];
    for (let i = 1; i < 3; i++) versions.push(mutate(versions[i - 1]!, 61 + i, 6).img);
    const ids: string[] = [];
    for (const v of versions) {
      await writeFile(image, v);
      ids.push(await backup(image, repo, 'vm1', '--reverse'));
    }
    const text = await ok([
      'forget',
      '--repo',
      repo,
      '--vm',
      'vm1',
      '--keep-last',
      '2',
      '--no-prune',
    ]);
    expect(text).toContain(`removed 1 restore point(s) of vm1: ${ids[0]}`);
    expect(text).not.toContain('pruned');
    expect((await list(repo)).map((p) => [p.id, p.kind])).toEqual([
      [ids[1], 'reverse-incremental'],
      [ids[2], 'full'],
    ]);
    await expectRestores(repo, 'vm1', ids[1]!, { disk0: versions[1]! });
    await expectRestores(repo, 'vm1', ids[2]!, { disk0: versions[2]! });
    await ok(['verify', '--repo', repo]);
  });
});

describe('ivmr verify and repair', () => {
  let base: Awaited<ReturnType<typeof twoPointRepo>>;
  beforeAll(async () => {
    base = await twoPointRepo();
  });
  async function copy(): Promise<string> {
    const repo = join(await scratch(), 'repo');
    await cp(base.repo, repo, { recursive: true });
    return repo;
  }

  it('names the damaged blob and the points and disk ranges it affects after a flipped byte', async () => {
    const repo = await copy();
    const [pack] = await packFiles(repo);
    const bytes = await readFile(pack!);
    bytes[100] = bytes[100]! ^ 0xff;
    await writeFile(pack!, bytes);

    const r = await ivmr(['verify', '--repo', repo]);
    expect(r.code).toBe(3);
    const found =
      /damaged blob ([0-9a-f]{64}) in pack ([0-9a-f]{64}): .+ \[IVMR_CHUNK_CORRUPT\]/.exec(
        r.stdout,
      );
    expect(found, r.stdout).not.toBeNull();
    const [, blob, packName] = found!;
    expect(pack).toContain(packName);
    // Where that blob sits in each backed-up image: those points and ranges must be named.
    const expected = base.images.map((img, i) => ({
      point: base.ids[i]!,
      ranges: blocksWith(img, blob!),
    }));
    const affected = expected.filter((e) => e.ranges.length > 0);
    expect(affected.length).toBeGreaterThan(0);
    for (const e of affected) {
      const ranges = e.ranges.map((o) => `${o}..${o + BLOCK}`).join(', ');
      expect(r.stdout).toContain(`affected: vm1@${e.point} disk disk0 bytes ${ranges} (1 blob(s))`);
    }
    expect(r.stderr).toBe(
      `ivmr: verify found 1 damaged blob(s), 0 missing blob(s) and 0 damaged object(s), affecting ${affected.length} restore point(s)\n`,
    );

    const victim = affected[0]!;
    const json = await ivmr([
      'verify',
      '--repo',
      repo,
      '--vm',
      'vm1',
      '--point',
      victim.point,
      '--json',
    ]);
    expect(json.code).toBe(3);
    const report = JSON.parse(json.stdout);
    expect(report.ok).toBe(false);
    expect(report.damagedBlobs).toEqual([
      expect.objectContaining({ id: blob, code: 'IVMR_CHUNK_CORRUPT' }),
    ]);
    expect(report.affected).toEqual([
      {
        vm: 'vm1',
        point: victim.point,
        disk: 'disk0',
        ranges: victim.ranges.map((offset) => ({ offset, length: BLOCK })),
        blobs: [blob],
      },
    ]);

    const out = join(repo, '..', 'out');
    const restore = await ivmr([
      'restore',
      '--repo',
      repo,
      '--vm',
      'vm1',
      '--point',
      victim.point,
      '--out',
      out,
    ]);
    expectOneLineError(restore, 1, 'IVMR_CHUNK_CORRUPT');
    expect(restore.stderr).toContain(
      `bytes ${victim.ranges[0]}..${victim.ranges[0]! + BLOCK} of disk disk0`,
    );
    // A failed restore leaves no image behind, not even a partial one.
    expect(await readdir(out)).toEqual([]);
  });

  it('reports a truncated pack', async () => {
    const repo = await copy();
    const [pack] = await packFiles(repo);
    await truncate(pack!, Math.floor((await stat(pack!)).size / 2));
    const r = await ivmr(['verify', '--repo', repo, '--json']);
    expect(r.code).toBe(3);
    const report = JSON.parse(r.stdout);
    expect(report.damagedBlobs.length).toBeGreaterThan(0);
    expect(report.damagedObjects).toEqual([expect.objectContaining({ kind: 'pack' })]);
    expect(report.affected.length).toBeGreaterThan(0);
    for (const a of report.affected) expect(base.ids).toContain(a.point);
    const text = await ivmr(['verify', '--repo', repo]);
    expect(text.stdout).toMatch(/damaged pack [0-9a-f]{64}: .+ \[IVMR_FORMAT\]/);
    expect(text.stdout).toMatch(/pack ends early/);
  });

  it('reports a lost index as missing blobs, and repair rebuilds it', async () => {
    const repo = await copy();
    for (const f of await readdir(join(repo, 'index'))) await rm(join(repo, 'index', f));
    const r = await ivmr(['verify', '--repo', repo]);
    expect(r.code).toBe(3);
    expect(r.stdout).toMatch(/missing blob [0-9a-f]{64}: no index lists it/);
    for (const id of base.ids) {
      expect(r.stdout).toMatch(new RegExp(`affected: vm1@${id} disk disk0 bytes \\d+\\.\\.\\d+`));
    }
    expect(r.stdout).toContain("'ivmr repair'");

    // One pack per backup.
    expect(await ok(['repair', '--repo', repo])).toMatch(
      /^rebuilt the index from 2 pack\(s\) holding \d+ blob\(s\)/,
    );
    expect(await ok(['verify', '--repo', repo])).toMatch(/no damage/);
    await expectRestores(repo, 'vm1', base.ids[0]!, { disk0: base.images[0]! });
    await expectRestores(repo, 'vm1', base.ids[1]!, { disk0: base.images[1]! });
  });

  it('refuses a backup while another process holds the repository lock', async () => {
    const repo = await copy();
    const holder = spawn('sleep', ['30'], { stdio: 'ignore' });
    try {
      const lock = {
        exclusive: true,
        operation: 'backup',
        host: hostname(),
        pid: holder.pid,
        time: new Date().toISOString(),
      };
      await writeFile(join(repo, 'locks', 'x'), JSON.stringify(lock));
      const image = join(repo, '..', 'disk0.img');
      await writeFile(image, base.images[1]!);
      const r = await ivmr(['backup', image, '--repo', repo, '--vm', 'vm1']);
      expectOneLineError(r, 1, 'IVMR_LOCKED');
      expect(r.stderr).toContain(`pid ${holder.pid}`);
      expect(await readdir(join(repo, 'points'))).toHaveLength(2);
    } finally {
      holder.kill();
    }
  });
});

describe('ivmr errors', () => {
  it('exits 2 with one line for usage errors', async () => {
    const repo = join(await scratch(), 'repo');
    for (const args of [
      ['backup', 'a.img', '--repo', repo, '--vm', 'v', '--bogus'],
      ['backup', 'a.img', '--repo', repo, '--vm', 'v', '--block-size', '3M'],
      ['backup', 'a.img', '--repo', repo, '--vm', 'v', '--block-size', '8M'],
      ['backup', 'a.img', '--repo', repo, '--vm', 'v', '--block-size', 'lots'],
      ['backup', 'a.img', '--repo', repo, '--vm', 'v', '--codec', 'gzip'],
      ['backup', 'a.img', '--vm', 'v'],
      ['backup', '--repo', repo, '--vm', 'v'],
      ['forget', '--repo', repo, '--vm', 'v', '--keep-last', '0'],
      ['verify', '--repo', repo, '--point', 'abc'],
      ['restore', '--repo', repo, '--vm', 'v'],
      ['frobnicate'],
    ]) {
      const r = await ivmr(args);
      expectOneLineError(r, 2, 'IVMR_INVALID_ARGUMENT');
    }
  });

  it('exits 1 with one line for bad input, and shows the stack only with IVMR_DEBUG=1', async () => {
    const dir = await scratch();
    const repo = join(dir, 'repo');
    const image = join(dir, 'disk0.img');
    await writeFile(image, makeImage(SIZE, 71));
    const id = await backup(image, repo, 'vm1');
    const cases: [string[], string][] = [
      [['backup', join(dir, 'missing.img'), '--repo', repo, '--vm', 'vm1'], 'IVMR_NOT_FOUND'],
      [
        ['backup', image, '--repo', repo, '--vm', 'vm1', '--changed-blocks', join(dir, 'nope')],
        'IVMR_NOT_FOUND',
      ],
      [['backup', image, '--repo', repo, '--vm', 'bad name!'], 'IVMR_INVALID_ARGUMENT'],
      [
        ['restore', '--repo', repo, '--vm', 'vm1', '--point', 'ffffffff', '--out', dir],
        'IVMR_NOT_FOUND',
      ],
      [['restore', '--repo', repo, '--vm', 'nobody', '--out', dir], 'IVMR_NOT_FOUND'],
      [['list', '--repo', repo, '--vm', 'nobody'], 'IVMR_NOT_FOUND'],
      [['list', '--repo', join(dir, 'no-repo')], 'IVMR_NOT_FOUND'],
      [['verify', '--repo', dir], 'IVMR_NOT_FOUND'],
      [['forget', '--repo', repo, '--vm', 'nobody', '--keep-last', '1'], 'IVMR_NOT_FOUND'],
      [
        ['backup', image, '--repo', repo, '--vm', 'vm1', '--block-size', '64K'],
        'IVMR_INVALID_ARGUMENT',
      ],
    ];
    for (const [args, code] of cases) expectOneLineError(await ivmr(args), 1, code);

    await writeFile(join(dir, 'bad.txt'), '0 65536\n12 x\n');
    const bad = await ivmr([
      'backup',
      image,
      '--repo',
      repo,
      '--vm',
      'vm1',
      '--changed-blocks',
      join(dir, 'bad.txt'),
    ]);
    expectOneLineError(bad, 1, 'IVMR_INVALID_ARGUMENT');
    expect(bad.stderr).toContain('bad.txt line 2');
    await writeFile(join(dir, 'long.txt'), `0 ${SIZE + 1}\n`);
    expectOneLineError(
      await ivmr([
        'backup',
        image,
        '--repo',
        repo,
        '--vm',
        'vm1',
        '--changed-blocks',
        join(dir, 'long.txt'),
      ]),
      1,
      'IVMR_INVALID_ARGUMENT',
    );
    // None of the failed backups left a point behind.
    expect((await list(repo)).map((p) => p.id)).toEqual([id]);

    const debug = await ivmr(['list', '--repo', join(dir, 'no-repo')], { IVMR_DEBUG: '1' });
    expect(debug.code).toBe(1);
    expect(debug.stderr.split('\n')[0]).toMatch(/^ivmr: .+ \[IVMR_NOT_FOUND\]$/);
    expect(debug.stderr).toMatch(/\n\s+at /);
  });

  it('prints its version and help', async () => {
    const pkg = JSON.parse(await readFile(new URL('../package.json', import.meta.url), 'utf8'));
    expect(await ok(['--version'])).toBe(`${pkg.version}\n`);
    const help = await ok(['--help']);
    for (const cmd of ['backup', 'list', 'restore', 'verify', 'forget', 'repair'])
      expect(help).toContain(cmd);
    expect(await ok(['backup', '--help'])).toContain('--changed-blocks <file>');
    expect(await ok(['help', 'restore'])).toContain('--force');
  });
});
