import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ErrorCode, FileBlockSource, isIvmrError } from '@ivmr/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openVmdk, SparseVmdk, writeDescriptor } from '../../src/index.js';
import { firstDifference, patternBytes } from '../helpers/bytes.js';
import { qemuImg, requireQemu, tempDir, writeSparseRaw } from '../helpers/qemu.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
let tmp: Awaited<ReturnType<typeof tempDir>>;
let raw: FileBlockSource;
const SIZE = 4 * GiB + 512 * 3;
/** Regions with data, and the reads checked: around the 2 GiB extent boundaries and the end. */
const CHUNKS = [0, 2 * GiB - 300_000, 4 * GiB - 100_000];
const READS = [
  [0, 2 * MiB],
  [2 * GiB - 400_000, 800_000],
  [2 * GiB - 1, 2],
  [3 * GiB, MiB],
  [SIZE - 200_000, 200_000],
] as const;

beforeAll(async () => {
  requireQemu();
  tmp = await tempDir('open');
  const rawPath = join(tmp.dir, 'disk.raw');
  await writeSparseRaw(
    rawPath,
    SIZE,
    CHUNKS.map((offset, i) => ({
      offset,
      bytes: patternBytes(`open-${i}`, Math.min(600_000, SIZE - offset)),
    })),
  );
  raw = await FileBlockSource.open(rawPath);
});
afterAll(async () => {
  await raw?.close();
  await tmp?.remove();
});

async function expectSameAsRaw(path: string, createType: string): Promise<void> {
  const vmdk = await openVmdk(path);
  try {
    expect(vmdk.createType).toBe(createType);
    expect(vmdk.size).toBe(SIZE);
    for (const [offset, length] of READS) {
      const got = await vmdk.read(offset, length);
      expect(firstDifference(got, await raw.read(offset, length))).toBe(-1);
    }
  } finally {
    await vmdk.close();
  }
}

describe('openVmdk reads the VMDK kinds qemu-img converts a raw disk to', () => {
  for (const subformat of [
    'monolithicFlat',
    'twoGbMaxExtentFlat',
    'twoGbMaxExtentSparse',
    'monolithicSparse',
  ]) {
    it(subformat, async () => {
      const path = join(tmp.dir, `${subformat}.vmdk`);
      await qemuImg(
        'convert',
        '-f',
        'raw',
        '-O',
        'vmdk',
        '-o',
        `subformat=${subformat}`,
        raw.path,
        path,
      );
      await expectSameAsRaw(path, subformat);
    });
  }
});

describe('openVmdk on hand-written and synthesized descriptors', () => {
  it('reads a synthesized vmfs descriptor whose flat file is not whole sectors, zeros past its end', async () => {
    const size = MiB + 100;
    const data = patternBytes('odd', size);
    await writeFile(join(tmp.dir, 'odd-flat.vmdk'), data);
    const text = writeDescriptor({
      target: 'esxi',
      size,
      flatFileName: 'odd-flat.vmdk',
      controller: 'pvscsi',
      identity: { repository: 'r', vm: 'v', point: 'p', disk: 'odd' },
    });
    await writeFile(join(tmp.dir, 'odd.vmdk'), text);
    const vmdk = await openVmdk(join(tmp.dir, 'odd.vmdk'));
    try {
      expect(vmdk.size).toBe(MiB + 512);
      const tail = await vmdk.read(MiB - 50, 562);
      expect(firstDifference(tail.subarray(0, 150), data.subarray(MiB - 50))).toBe(-1);
      expect(tail.subarray(150).every((b) => b === 0)).toBe(true);
    } finally {
      await vmdk.close();
    }
  });

  it('reads FLAT extents at an offset and ZERO extents', async () => {
    const data = patternBytes('multi', 8192);
    await writeFile(join(tmp.dir, 'multi.bin'), data);
    await writeFile(
      join(tmp.dir, 'multi.vmdk'),
      'version=1\nCID=1\nparentCID=ffffffff\ncreateType="custom"\n# Extent description\nRW 4 FLAT "multi.bin" 8\nRW 6 ZERO\nRW 2 FLAT "multi.bin" 0\n',
    );
    const vmdk = await openVmdk(join(tmp.dir, 'multi.vmdk'));
    try {
      const all = await vmdk.read(0, 12 * 512);
      expect(firstDifference(all.subarray(0, 2048), data.subarray(4096, 6144))).toBe(-1);
      expect(all.subarray(2048, 5120).every((b) => b === 0)).toBe(true);
      expect(firstDifference(all.subarray(5120), data.subarray(0, 1024))).toBe(-1);
    } finally {
      await vmdk.close();
    }
  });

  it('refuses a truncated flat extent, a delta disk and extent types it cannot read', async () => {
    await writeFile(join(tmp.dir, 'short-flat.vmdk'), Buffer.alloc(1000));
    const cases: [string, string][] = [
      [
        'version=1\nCID=1\nparentCID=ffffffff\ncreateType="vmfs"\n#\nRW 4 VMFS "short-flat.vmdk"\n',
        ErrorCode.FORMAT,
      ],
      [
        'version=1\nCID=1\nparentCID=2\ncreateType="vmfsSparse"\n#\nRW 4 VMFSSPARSE "d.vmdk"\n',
        ErrorCode.UNSUPPORTED,
      ],
      [
        'version=1\nCID=1\nparentCID=ffffffff\ncreateType="vmfsRawDeviceMap"\n#\nRW 4 VMFSRDM "r.vmdk"\n',
        ErrorCode.UNSUPPORTED,
      ],
      [
        'version=1\nCID=1\nparentCID=ffffffff\ncreateType="vmfs"\n#\nRW 4 VMFS "missing-flat.vmdk"\n',
        ErrorCode.NOT_FOUND,
      ],
    ];
    for (const [text, code] of cases) {
      const path = join(tmp.dir, 'case.vmdk');
      await writeFile(path, text);
      let err: unknown;
      try {
        await openVmdk(path);
      } catch (e) {
        err = e;
      }
      expect(isIvmrError(err, code as never)).toBe(true);
    }
  });

  it('opens a sparse file as a SparseVmdk', async () => {
    const path = join(tmp.dir, 'monolithicSparse.vmdk');
    await qemuImg(
      'convert',
      '-f',
      'raw',
      '-O',
      'vmdk',
      '-o',
      'subformat=monolithicSparse',
      raw.path,
      path,
    );
    const vmdk = await openVmdk(path);
    expect(vmdk).toBeInstanceOf(SparseVmdk);
    await vmdk.close();
  });
});
