import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ErrorCode, isIvmrError, MemoryBlockSource } from '@ivmr/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { expectSettlesAfterItsParts, Hold } from '../../../../scripts/testing/settling-read.js';
import { SparseVmdk } from '../../src/index.js';
import { firstDifference, patternBytes } from '../helpers/bytes.js';
import { qemuImg, qemuIo, requireQemu } from '../helpers/qemu.js';
import {
  makeSparseFixtures,
  SPARSE_KINDS,
  type SparseFixtures,
} from '../helpers/sparse-fixtures.js';
import { writeStreamOptimized } from '../helpers/stream-writer.js';

const MiB = 1024 * 1024;
const GRAIN = 64 * 1024;
let fx: SparseFixtures;
let ms: Buffer; // monolithicSparse bytes
let so: Buffer; // streamOptimized bytes (qemu: directory at the front)

beforeAll(async () => {
  requireQemu();
  fx = await makeSparseFixtures(5);
  ms = await readFile(fx.files.monolithicSparse);
  so = await readFile(fx.files.streamOptimized);
});
afterAll(async () => {
  await fx?.remove();
});

const u32 = (b: Buffer, at: number) => b.readUInt32LE(at);
const u64 = (b: Buffer, at: number) => Number(b.readBigUInt64LE(at));

/** Byte offset of grain table entry `grain` (table 0) in a qemu sparse file. */
function gteOffset(file: Buffer, grain: number): number {
  const gd = u64(file, 56) * 512;
  return u32(file, gd) * 512 + grain * 4;
}

/** The first allocated grain at or after `from`, and its file sector. */
function allocatedGrain(file: Buffer, from = 0): { grain: number; sector: number } {
  for (let g = from; g < 512; g++) {
    const sector = u32(file, gteOffset(file, g));
    if (sector > 1) return { grain: g, sector };
  }
  throw new Error('no allocated grain');
}

/** A patched copy of `file`. */
function patched(file: Buffer, patch: (b: Buffer) => void): Buffer {
  const copy = Buffer.from(file);
  patch(copy);
  return copy;
}

async function openBytes(bytes: Buffer): Promise<SparseVmdk> {
  return SparseVmdk.from(new MemoryBlockSource(bytes), { name: 'test.vmdk' });
}

async function failure(
  p: Promise<unknown>,
): Promise<{ code: string; message: string; details: Record<string, unknown> }> {
  try {
    await p;
  } catch (err) {
    if (isIvmrError(err)) return err as never;
    throw err;
  }
  throw new Error('expected a typed error, the call succeeded');
}

async function readAll(vmdk: SparseVmdk): Promise<Buffer> {
  const out = Buffer.alloc(vmdk.size);
  for (let at = 0; at < vmdk.size; at += MiB)
    await vmdk.read(at, Math.min(MiB, vmdk.size - at), out.subarray(at));
  return out;
}

describe('sparse readers: whole-disk reads', () => {
  for (const kind of SPARSE_KINDS) {
    it(`${kind}: every byte matches the raw disk, holes read as zeros`, async () => {
      const vmdk = await SparseVmdk.open(fx.files[kind]);
      try {
        expect(vmdk.header.grainSize).toBe(128);
        expect(vmdk.header.numGTEsPerGT).toBe(512);
        expect(vmdk.header.fromFooter).toBe(kind === 'streamOptimized, GD at end');
        expect(vmdk.usedRedundantDirectory).toBe(false);
        expect(vmdk.descriptor?.createType).toBe(
          kind === 'monolithicSparse' ? 'monolithicSparse' : 'streamOptimized',
        );
        const all = await readAll(vmdk);
        expect(firstDifference(all, fx.raw)).toBe(-1);
        const hole = await vmdk.read(40 * MiB, 4 * MiB);
        expect(hole.every((b) => b === 0)).toBe(true);
      } finally {
        await vmdk.close();
      }
    });
  }

  it('reads the last, partial grain of a disk that is not whole grains (streamOptimized)', async () => {
    const vmdk = await SparseVmdk.open(fx.files['streamOptimized, GD at end']);
    try {
      expect(vmdk.size % GRAIN).toBe(1536);
      const tail = await vmdk.read(vmdk.size - 2000, 2000);
      expect(firstDifference(tail, fx.raw.subarray(fx.raw.length - 2000))).toBe(-1);
    } finally {
      await vmdk.close();
    }
  });

  it('reads a zeroed grain (entry 1 with the zero-grain flag) as zeros', async () => {
    const dir = join(fx.files.monolithicSparse, '..');
    const raw = join(dir, 'zeroed.raw');
    const path = join(dir, 'zeroed.vmdk');
    await writeFile(raw, patternBytes('zeroed', MiB));
    await qemuImg(
      'convert',
      '-f',
      'raw',
      '-O',
      'vmdk',
      '-o',
      'subformat=monolithicSparse,zeroed_grain=on',
      raw,
      path,
    );
    // qemu marks a grain zeroed (table entry 1) instead of writing zeros into it.
    await qemuIo(path, 'vmdk', 'write -z 65536 65536');
    const file = await readFile(path);
    expect(u32(file, 8) & 4).toBe(4);
    expect(u32(file, gteOffset(file, 1))).toBe(1);
    const vmdk = await SparseVmdk.open(path);
    try {
      const expected = patternBytes('zeroed', MiB);
      expected.fill(0, GRAIN, 2 * GRAIN);
      expect(firstDifference(await vmdk.read(0, MiB), expected)).toBe(-1);
    } finally {
      await vmdk.close();
    }
  });

  it('a read that fails settles only once each of its grain reads stopped writing into its buffer', async () => {
    // Grains g - 1 and g + 1 allocated, g not: a read of the three is two file reads.
    let g = 1;
    const sector = (k: number) => u32(ms, gteOffset(ms, k));
    while (!(sector(g - 1) > 1 && sector(g) === 0 && sector(g + 1) > 1)) g++;
    const inner = new MemoryBlockSource(ms);
    const hold = new Hold();
    let armed = false;
    let grainReads = 0;
    const file = {
      size: ms.length,
      // The first grain read fails at once, the second is slow.
      read: async (o: number, l: number, into?: Uint8Array) => {
        if (armed && l >= GRAIN && ++grainReads === 1) throw new Error('disk error');
        if (armed && l >= GRAIN) await hold.wait();
        return inner.read(o, l, into);
      },
    };
    const vmdk = await SparseVmdk.from(file, { name: 'test.vmdk' });
    armed = true;
    const into = new Uint8Array(3 * GRAIN);
    await expectSettlesAfterItsParts(
      vmdk.read((g - 1) * GRAIN, 3 * GRAIN, into),
      into,
      hold,
      /disk error/,
    );
    await vmdk.close();
  });

  it('rejects reads after close, and reads past the end', async () => {
    const vmdk = await SparseVmdk.open(fx.files.monolithicSparse);
    expect(isIvmrError(await failure(vmdk.read(vmdk.size - 1, 2)), ErrorCode.RANGE)).toBe(true);
    await vmdk.close();
    expect((await failure(vmdk.read(0, 1))).code).toBe(ErrorCode.CLOSED);
  });

  it('names what a file is when it is not a sparse extent', async () => {
    const text = join(fx.files.monolithicSparse, '..', 'text.vmdk');
    await writeFile(text, '# Disk DescriptorFile\nversion=1\n');
    const err = await failure(SparseVmdk.open(text));
    expect(err.code).toBe(ErrorCode.FORMAT);
    expect(err.message).toMatch(/text descriptor/);
    expect((await failure(SparseVmdk.open(join(text, '..', 'missing.vmdk')))).code).toBe(
      ErrorCode.NOT_FOUND,
    );
  });
});

describe('damaged headers are typed errors, found before any allocation', () => {
  const cases: [name: string, patch: (b: Buffer) => void, code: string, message: RegExp][] = [
    ['bad magic', (b) => b.write('XXXX', 0), ErrorCode.FORMAT, /no KDMV magic/],
    ['COWD magic', (b) => b.write('COWD', 0), ErrorCode.UNSUPPORTED, /COWD/],
    ['version 4', (b) => b.writeUInt32LE(4, 4), ErrorCode.UNSUPPORTED, /version 4/],
    [
      'newline bytes altered by a text-mode copy',
      (b) => b.write('\n \n\n', 73, 'latin1'),
      ErrorCode.FORMAT,
      /text-mode/,
    ],
    [
      'capacity 2^63 sectors',
      (b) => b.writeBigUInt64LE(2n ** 63n, 12),
      ErrorCode.FORMAT,
      /capacity/,
    ],
    [
      'capacity of 512 TiB (directory past the file)',
      (b) => b.writeBigUInt64LE(2n ** 40n, 12),
      ErrorCode.FORMAT,
      /gdOffset/,
    ],
    ['grain size 0', (b) => b.writeBigUInt64LE(0n, 20), ErrorCode.FORMAT, /grainSize/],
    ['grain size 512 MiB', (b) => b.writeBigUInt64LE(2n ** 20n, 20), ErrorCode.FORMAT, /grainSize/],
    [
      '4096 entries per grain table',
      (b) => b.writeUInt32LE(4096, 44),
      ErrorCode.FORMAT,
      /numGTEsPerGT/,
    ],
    [
      'directory past the end of the file',
      (b) => b.writeBigUInt64LE(2n ** 40n, 56),
      ErrorCode.FORMAT,
      /gdOffset/,
    ],
    [
      'embedded descriptor of 100000 sectors',
      (b) => b.writeBigUInt64LE(100000n, 36),
      ErrorCode.FORMAT,
      /descriptorSize/,
    ],
    [
      'metadata larger than the file',
      (b) => b.writeBigUInt64LE(2n ** 30n, 64),
      ErrorCode.FORMAT,
      /truncated/,
    ],
    [
      'unknown compression',
      (b) => b.writeUInt16LE(7, 77),
      ErrorCode.UNSUPPORTED,
      /compression algorithm 7/,
    ],
    [
      'delta disk',
      (b) => b.write('parentCID=1234abcd', b.indexOf('parentCID=ffffffff')),
      ErrorCode.UNSUPPORTED,
      /delta disk/,
    ],
  ];
  for (const [name, patch, code, message] of cases) {
    it(name, async () => {
      const err = await failure(openBytes(patched(ms, patch)));
      expect(err.code).toBe(code);
      expect(err.message).toMatch(message);
    });
  }

  it('a file shorter than a header', async () => {
    const err = await failure(openBytes(ms.subarray(0, 100)));
    expect(err.code).toBe(ErrorCode.FORMAT);
    expect(err.details.field).toBe('header');
  });
});

describe('damaged grain directories and tables', () => {
  it('falls back to the redundant directory when the primary names a table outside the file', async () => {
    const gd = u64(ms, 56) * 512;
    const vmdk = await openBytes(patched(ms, (b) => b.writeUInt32LE(0xffffff00, gd)));
    expect(vmdk.usedRedundantDirectory).toBe(true);
    expect(firstDifference(await readAll(vmdk), fx.raw)).toBe(-1);
  });

  it('fails naming the entry when both directories are damaged', async () => {
    const gd = u64(ms, 56) * 512;
    const rgd = u64(ms, 48) * 512;
    const err = await failure(
      openBytes(
        patched(ms, (b) => {
          b.writeUInt32LE(0xffffff00, gd + 4);
          b.writeUInt32LE(0xffffff00, rgd + 4);
        }),
      ),
    );
    expect(err.code).toBe(ErrorCode.FORMAT);
    expect(err.details.entry).toBe(1);
  });

  it('fails with IVMR_FORMAT when the redundant directory lies outside the file', async () => {
    const gd = u64(ms, 56) * 512;
    const patchedFile = patched(ms, (b) => {
      b.writeUInt32LE(0xffffff00, gd);
      b.writeBigUInt64LE(2n ** 40n, 48);
    });
    const err = await failure(openBytes(patchedFile));
    expect(err.code).toBe(ErrorCode.FORMAT);
    expect(err.details.entry).toBe(0);
  });

  it('a grain table entry outside the file fails reads of that grain only', async () => {
    const { grain } = allocatedGrain(ms, 3);
    const vmdk = await openBytes(
      patched(ms, (b) => b.writeUInt32LE(0x7fffffff, gteOffset(ms, grain))),
    );
    const err = await failure(vmdk.read(grain * GRAIN + 100, 10));
    expect(err.code).toBe(ErrorCode.FORMAT);
    expect(err.details.grain).toBe(grain);
    const other = (grain + 1) * GRAIN;
    expect(
      firstDifference(await vmdk.read(other, GRAIN), fx.raw.subarray(other, other + GRAIN)),
    ).toBe(-1);
  });

  it('a truncated monolithicSparse file fails reads of the grains it lost', async () => {
    const vmdk = await openBytes(ms.subarray(0, ms.length - 3 * GRAIN));
    const err = await failure(vmdk.read(vmdk.size - 10, 10));
    expect(err.code).toBe(ErrorCode.FORMAT);
    expect(err.message).toMatch(/past the end/);
    expect(firstDifference(await vmdk.read(0, MiB), fx.raw.subarray(0, MiB))).toBe(-1);
  });
});

describe('damaged compressed grains', () => {
  it('corrupt deflate data is IVMR_CHUNK_CORRUPT', async () => {
    const { grain, sector } = allocatedGrain(so);
    const vmdk = await openBytes(
      patched(so, (b) => b.fill(0x55, sector * 512 + 14, sector * 512 + 200)),
    );
    const err = await failure(vmdk.read(grain * GRAIN, 512));
    expect(err.code).toBe(ErrorCode.CHUNK_CORRUPT);
    expect(err.details.grain).toBe(grain);
  });

  it('a compressed size past the end of the file or over twice the grain is IVMR_FORMAT', async () => {
    const { grain, sector } = allocatedGrain(so);
    for (const size of [0xfffffff0, 3 * GRAIN, 0]) {
      const vmdk = await openBytes(patched(so, (b) => b.writeUInt32LE(size, sector * 512 + 8)));
      const err = await failure(vmdk.read(grain * GRAIN, 512));
      expect(err.code).toBe(ErrorCode.FORMAT);
      expect(err.message).toMatch(/compressed size/);
    }
  });

  it('a grain marker for another sector is IVMR_FORMAT', async () => {
    const { grain, sector } = allocatedGrain(so);
    const vmdk = await openBytes(patched(so, (b) => b.writeBigUInt64LE(12345n, sector * 512)));
    const err = await failure(vmdk.read(grain * GRAIN, 512));
    expect(err.code).toBe(ErrorCode.FORMAT);
    expect(err.message).toMatch(/is for sector 12345/);
  });

  it('a grain that inflates to more than a grain is IVMR_CHUNK_CORRUPT', async () => {
    const big = writeStreamOptimized(Buffer.alloc(2 * GRAIN, 7));
    // Claim half-size grains: each stored grain now inflates to twice the grain size.
    const file = patched(big.bytes, (b) => {
      b.writeBigUInt64LE(64n, 20);
      b.writeBigUInt64LE(64n, b.length - 1024 + 20);
    });
    const vmdk = await openBytes(file);
    expect((await failure(vmdk.read(0, 512))).code).toBe(ErrorCode.CHUNK_CORRUPT);
  });

  it('a stream cut before its footer, or whose footer has no directory, is IVMR_FORMAT', async () => {
    const stream = await readFile(fx.files['streamOptimized, GD at end']);
    const cut = await failure(openBytes(stream.subarray(0, stream.length - 512)));
    expect(cut.code).toBe(ErrorCode.FORMAT);
    expect(cut.details.field).toBe('footer');
    const noGd = patched(stream, (b) => b.writeBigUInt64LE(2n ** 64n - 1n, b.length - 1024 + 56));
    expect((await failure(openBytes(noGd))).details.field).toBe('gdOffset');
  });
});
