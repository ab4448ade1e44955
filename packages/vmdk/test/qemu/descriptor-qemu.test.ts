import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type DescriptorTarget,
  descriptorSize,
  diskFileNames,
  parseDescriptor,
  SparseVmdk,
  writeDescriptor,
} from '../../src/index.js';
import { patternBytes } from '../helpers/bytes.js';
import { qemuImg, qemuImgStatus, requireQemu, tempDir, writeSparseRaw } from '../helpers/qemu.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

// The raw sources: sparse files with data at the start, somewhere inside and in the last bytes,
// so a wrong extent size, offset or rounding shows up as a difference.
const SIZES: { name: string; size: number }[] = [
  { name: '1 GiB + 512 bytes', size: GiB + 512 },
  { name: '10 MiB + 3 sectors', size: 10 * MiB + 3 * 512 },
  { name: '2 TiB', size: 2 * 1024 * GiB },
  { name: '1 MiB + 100 bytes (not whole sectors)', size: MiB + 100 },
];

let tmp: Awaited<ReturnType<typeof tempDir>>;

beforeAll(async () => {
  requireQemu();
  tmp = await tempDir('descriptor');
});
afterAll(async () => {
  await tmp?.remove();
});

async function makeRaw(path: string, size: number, seed: number): Promise<void> {
  const tail = Math.min(size, 4096 + (size % 512));
  await writeSparseRaw(path, size, [
    { offset: 0, bytes: patternBytes(`${seed}-head`, 65536) },
    { offset: Math.floor(size / 3 / 512) * 512 + 77, bytes: patternBytes(`${seed}-mid`, 100_000) },
    { offset: size - tail, bytes: patternBytes(`${seed}-tail`, tail) },
  ]);
}

interface QemuInfo {
  format: string;
  'virtual-size': number;
}

describe('synthesized descriptors open in qemu and read like the raw source', () => {
  SIZES.forEach(({ name, size }, i) => {
    for (const target of ['esxi', 'hosted'] as DescriptorTarget[]) {
      it(`${name}, ${target}`, async () => {
        const disk = `disk${i}-${target}`;
        const files = diskFileNames(disk);
        const flat = join(tmp.dir, files.flat);
        const descriptor = join(tmp.dir, files.descriptor);
        await makeRaw(flat, size, i);
        const text = writeDescriptor({
          target,
          size,
          flatFileName: files.flat,
          controller: i % 2 ? 'ide' : 'pvscsi',
          identity: { repository: 'r', vm: 'vm', point: '0123456789abcdef', disk },
        });
        await writeFile(descriptor, text);
        const sectorsSize = Math.ceil(size / 512) * 512;
        expect(descriptorSize(parseDescriptor(text))).toBe(sectorsSize);

        const info = JSON.parse(await qemuImg('info', '--output=json', descriptor)) as QemuInfo;
        expect(info.format).toBe('vmdk');
        expect(info['virtual-size']).toBe(sectorsSize);

        // Not strict mode (-s): it also fails on differing allocation status, and qemu reports
        // the extent's holes differently from the raw file's. The sizes were checked above; a
        // raw file of a size that is not whole sectors compares with its missing tail as zeros.
        const started = performance.now();
        const cmp = await qemuImgStatus('compare', '-f', 'raw', '-F', 'vmdk', flat, descriptor);
        expect(cmp.stderr).toBe('');
        expect(cmp.stdout).toContain('Images are identical');
        expect(cmp.code).toBe(0);
        // 2 TiB of holes compares in milliseconds (qemu asks the file system where data is).
        expect(performance.now() - started).toBeLessThan(20_000);
      });
    }
  });

  it('qemu-img compare notices a descriptor of the wrong size (the check can fail)', async () => {
    const flat = join(tmp.dir, 'wrong-flat.vmdk');
    await makeRaw(flat, 10 * MiB, 7);
    const text = writeDescriptor({
      target: 'esxi',
      size: 10 * MiB - 512,
      flatFileName: 'wrong-flat.vmdk',
      controller: 'lsilogic',
      identity: { repository: 'r', vm: 'vm', point: 'p', disk: 'wrong' },
    });
    await writeFile(join(tmp.dir, 'wrong.vmdk'), text);
    const cmp = await qemuImgStatus(
      'compare',
      '-f',
      'raw',
      '-F',
      'vmdk',
      flat,
      join(tmp.dir, 'wrong.vmdk'),
    );
    expect(cmp.code).toBe(1);
  });

  it('qemu reads an extent twice after a blank line, which is why the parser rejects one', async () => {
    await writeSparseRaw(join(tmp.dir, 'blank-flat.vmdk'), MiB, []);
    const text =
      'version=1\nCID=12345678\nparentCID=ffffffff\ncreateType="vmfs"\n\nRW 2048 VMFS "blank-flat.vmdk"\n';
    await writeFile(join(tmp.dir, 'blank.vmdk'), text);
    const info = JSON.parse(
      await qemuImg('info', '--output=json', join(tmp.dir, 'blank.vmdk')),
    ) as QemuInfo;
    expect(info['virtual-size']).toBe(2 * MiB);
    expect(() => parseDescriptor(text)).toThrow(/line 5 before this RW extent is blank/);
  });
});

describe('descriptors qemu-img writes', () => {
  it('monolithicFlat and twoGbMaxExtentFlat text descriptors', async () => {
    const flat = join(tmp.dir, 'qflat.vmdk');
    await qemuImg('create', '-q', '-f', 'vmdk', '-o', 'subformat=monolithicFlat', flat, '10M');
    const d = parseDescriptor(await readFile(flat), { name: flat });
    expect(d.createType).toBe('monolithicFlat');
    expect(d.extents).toEqual([
      { access: 'RW', sectors: 20480, type: 'FLAT', fileName: 'qflat-flat.vmdk', offset: 0 },
    ]);
    expect(d.ddb.adapterType).toBe('ide');

    const split = join(tmp.dir, 'qsplit.vmdk');
    await qemuImg(
      'create',
      '-q',
      '-f',
      'vmdk',
      '-o',
      'subformat=twoGbMaxExtentFlat,adapter_type=lsilogic',
      split,
      '5G',
    );
    const s = parseDescriptor(await readFile(split), { name: split });
    expect(s.createType).toBe('twoGbMaxExtentFlat');
    expect(s.extents.map((e) => e.fileName)).toEqual([
      'qsplit-f001.vmdk',
      'qsplit-f002.vmdk',
      'qsplit-f003.vmdk',
    ]);
    expect(s.extents.every((e) => e.type === 'FLAT' && e.offset === 0)).toBe(true);
    expect(descriptorSize(s)).toBe(5 * GiB);
    expect(s.ddb.adapterType).toBe('lsilogic');
  });

  it('the descriptors embedded in monolithicSparse and streamOptimized files', async () => {
    for (const subformat of ['monolithicSparse', 'streamOptimized']) {
      const path = join(tmp.dir, `q-${subformat}.vmdk`);
      await qemuImg('create', '-q', '-f', 'vmdk', '-o', `subformat=${subformat}`, path, '100M');
      const vmdk = await SparseVmdk.open(path);
      try {
        expect(vmdk.createType).toBe(subformat);
        expect(vmdk.descriptor?.createType).toBe(subformat);
        expect(vmdk.descriptor?.extents).toEqual([
          { access: 'RW', sectors: 204800, type: 'SPARSE', fileName: `q-${subformat}.vmdk` },
        ]);
        expect(vmdk.size).toBe(100 * MiB);
      } finally {
        await vmdk.close();
      }
    }
  });
});
