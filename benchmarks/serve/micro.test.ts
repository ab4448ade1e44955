import { execFile } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

// micro.mjs is plain JavaScript (JSDoc-typed); the part of it this test uses.
interface MicroModule {
  checkReads(
    what: string,
    read: (offset: number, into: Uint8Array) => Promise<Uint8Array>,
    offsets: readonly number[],
    expected: (offset: number) => Uint8Array,
  ): Promise<number>;
  writeReadReply(
    buf: Buffer,
    xid: number,
    attrs: object,
    fsid: number,
    count: number,
    eof: boolean,
    data?: Uint8Array,
  ): number;
  checkReadReply(what: string, written: Buffer, tail: Uint8Array, want: Uint8Array): void;
}
const micro = fileURLToPath(new URL('./micro.mjs', import.meta.url));
const { checkReads, checkReadReply, writeReadReply } = (await import(
  './micro.mjs' as string
)) as MicroModule;

const IDS = [
  'lookup.zero.point1',
  'lookup.zero.point50',
  'frame-cache.hit.lz4',
  'decode.lz4',
  'decode.zstd',
  'read-cache.hit',
  'overlay.base.read-cache-hit',
  'overlay.hit',
  'xdr.read-reply.4k',
  'xdr.read-reply.512k',
  'xdr.read-reply.512k.copied',
];

interface Result {
  id: string;
  name: string;
  opsPerSec: number;
  meanUs: number;
  medianUs: number;
  p99Us: number;
  samples: number;
  bytesPerOp: number | null;
  checkedReads: number;
}

// Runs the real micro-benchmark (the built packages, as `node serve/micro.mjs` does) with a tiny
// time per task, so it cannot rot unnoticed. The figures are noise here and are not checked.
describe('serve micro-benchmarks', () => {
  let dir: string;
  let stdout: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ivmr-serve-micro-test-'));
    const args = [micro, '--ms', '20', '--out', join(dir, 'out'), '--tmp', dir];
    ({ stdout } = await promisify(execFile)(process.execPath, args, { timeout: 30_000 }));
  }, 30_000);

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('writes every figure, each checked before it was timed', async () => {
    expect(stdout).toContain('| Micro-benchmark | ops/s |');
    expect((await readdir(dir)).sort()).toEqual(['out']);
    expect((await readdir(join(dir, 'out'))).sort()).toEqual([
      'serve-micro.json',
      'serve-micro.md',
    ]);
    const r = JSON.parse(await readFile(join(dir, 'out', 'serve-micro.json'), 'utf8'));
    expect(r.options).toEqual({ seed: 1, ms: 20 });
    expect(r.results.map((x: Result) => x.id)).toEqual(IDS);
    for (const x of r.results as Result[]) {
      for (const n of [x.opsPerSec, x.meanUs, x.medianUs, x.p99Us, x.samples]) {
        expect(Number.isFinite(n) && n > 0).toBe(true);
      }
      expect(x.checkedReads).toBeGreaterThan(0);
    }
    expect(r.results.filter((x: Result) => x.bytesPerOp === 4096)).toHaveLength(8);
    const md = await readFile(join(dir, 'out', 'serve-micro.md'), 'utf8');
    for (const x of r.results as Result[]) expect(md).toContain(`| ${x.name} |`);
  });

  it('fails on a wrong byte in a read', async () => {
    const want = new Uint8Array(4096).fill(7);
    const read = async (offset: number, into: Uint8Array) => {
      into.fill(7);
      if (offset === 8192) into[4095] = 8;
      return into;
    };
    await expect(checkReads('a read', read, [0, 4096], () => want)).resolves.toBe(2);
    await expect(checkReads('a read', read, [0, 8192], () => want)).rejects.toThrow(
      'a read returned wrong bytes at offset 8192',
    );
  });

  it('fails on a wrong byte or length in a READ reply', () => {
    const now = { seconds: 1, nanoseconds: 0 };
    const attrs = { type: 'file', mode: 0o600, nlink: 1, uid: 0, gid: 0, size: 1 << 20 };
    const a = { ...attrs, used: 1 << 20, fileId: 2n, atime: now, mtime: now, ctime: now };
    const data = Buffer.alloc(4097, 3);
    const buf = Buffer.alloc(8192);
    const n = writeReadReply(buf, 9, a, 1, data.length, false, data);
    expect(n).toBe(132 + 4100);
    checkReadReply('reply', buf.subarray(0, n), new Uint8Array(0), data);
    const other = Buffer.from(data);
    other[4096] = 4;
    expect(() => checkReadReply('reply', buf.subarray(0, n), new Uint8Array(0), other)).toThrow(
      'reply: wrong data',
    );
    const header = writeReadReply(buf, 9, a, 1, data.length, false);
    checkReadReply('reply', buf.subarray(0, header), data, data);
    buf.writeUInt32BE(4096, 132 - 12);
    expect(() => checkReadReply('reply', buf.subarray(0, header), data, data)).toThrow(
      'reply: wrong count',
    );
  });
});
