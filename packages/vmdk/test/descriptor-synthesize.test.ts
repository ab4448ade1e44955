import { ErrorCode, isIvmrError } from '@ivmr/core';
import { describe, expect, it } from 'vitest';
import {
  adapterTypeFor,
  deriveDiskIds,
  diskFileNames,
  diskGeometry,
  formatDescriptor,
  parseDescriptor,
  type SynthesizeDescriptorOptions,
  synthesizeDescriptor,
  type VmdkDescriptor,
  writeDescriptor,
} from '../src/index.js';

const identity = { repository: 'repo-1', vm: 'web01', point: '0123456789abcdef', disk: 'disk0' };
const base: SynthesizeDescriptorOptions = {
  target: 'esxi',
  size: 10 * 1024 * 1024 + 3 * 512,
  flatFileName: 'disk0-flat.vmdk',
  controller: 'pvscsi',
  identity,
};

function expectCode(fn: () => unknown, code: string): void {
  try {
    fn();
  } catch (err) {
    expect(isIvmrError(err) && err.code).toBe(code);
    return;
  }
  throw new Error(`expected ${code}, nothing was thrown`);
}

describe('writeDescriptor: the rules qemu and ESXi need', () => {
  const text = writeDescriptor(base);
  const lines = text.split('\n');
  const content = lines.filter((l) => l !== '' && !l.startsWith('#'));

  it('puts version=1 first, then encoding, CID before parentCID=ffffffff, then createType', () => {
    expect(content.slice(0, 5)).toEqual([
      'version=1',
      'encoding="UTF-8"',
      expect.stringMatching(/^CID=[0-9a-f]{8}$/),
      'parentCID=ffffffff',
      'createType="vmfs"',
    ]);
    expect(text).not.toMatch(/version=3/);
  });

  it('writes createType with no spaces around = and mentions createType on no other line', () => {
    expect(lines.filter((l) => l.includes('createType'))).toEqual(['createType="vmfs"']);
  });

  it('writes one RW VMFS extent without offset, of the size rounded up to sectors', () => {
    expect(lines.filter((l) => /^(RW|RDONLY|NOACCESS) /.test(l))).toEqual([
      `RW ${20480 + 3} VMFS "disk0-flat.vmdk"`,
    ]);
  });

  it('writes the hosted flavour as monolithicFlat with a FLAT extent at offset 0', () => {
    const hosted = writeDescriptor({ ...base, target: 'hosted' });
    expect(hosted).toContain('createType="monolithicFlat"');
    expect(hosted).toContain(`\nRW ${20483} FLAT "disk0-flat.vmdk" 0\n`);
  });

  it('writes the disk database: adapter, geometry, ids, thin, hardware version', () => {
    const d = synthesizeDescriptor(base);
    const ids = deriveDiskIds(identity);
    expect(d.ddb).toEqual({
      adapterType: 'lsilogic',
      'geometry.cylinders': '1',
      'geometry.heads': '255',
      'geometry.sectors': '63',
      longContentID: ids.longContentId,
      thinProvisioned: '1',
      uuid: ids.uuid,
      virtualHWVersion: '14',
    });
    expect(d.cid).toBe(ids.cid);
    expect(text).toContain(`ddb.uuid = "${ids.uuid}"`);
    const thick = synthesizeDescriptor({ ...base, thinProvisioned: false, hardwareVersion: 19 });
    expect(thick.ddb.thinProvisioned).toBeUndefined();
    expect(thick.ddb.virtualHWVersion).toBe('19');
  });

  it('rounds a size that is not a multiple of 512 up to whole sectors', () => {
    expect(synthesizeDescriptor({ ...base, size: 1 }).extents[0]!.sectors).toBe(1);
    expect(synthesizeDescriptor({ ...base, size: 1000 }).extents[0]!.sectors).toBe(2);
    expect(synthesizeDescriptor({ ...base, size: 1024 }).extents[0]!.sectors).toBe(2);
  });

  it('gives the same bytes for the same point every time, and different ids for another point', () => {
    expect(writeDescriptor(base)).toBe(text);
    expect(writeDescriptor({ ...base })).toBe(writeDescriptor(structuredClone(base)));
    for (const change of [
      { repository: 'repo-2' },
      { vm: 'web02' },
      { point: 'fedcba9876543210' },
      { disk: 'disk1' },
    ]) {
      const other = synthesizeDescriptor({ ...base, identity: { ...identity, ...change } });
      expect(other.cid).not.toBe(synthesizeDescriptor(base).cid);
      expect(other.ddb.uuid).not.toBe(synthesizeDescriptor(base).ddb.uuid);
    }
  });

  it('refuses sizes, names and controllers it cannot describe', () => {
    expectCode(() => writeDescriptor({ ...base, size: 0 }), ErrorCode.INVALID_ARGUMENT);
    expectCode(() => writeDescriptor({ ...base, size: 2 ** 53 }), ErrorCode.INVALID_ARGUMENT);
    expectCode(
      () => writeDescriptor({ ...base, flatFileName: 'a"b-flat.vmdk' }),
      ErrorCode.INVALID_ARGUMENT,
    );
    expectCode(
      () => writeDescriptor({ ...base, flatFileName: 'a\nb' }),
      ErrorCode.INVALID_ARGUMENT,
    );
    expectCode(
      () => writeDescriptor({ ...base, flatFileName: '../x-flat.vmdk' }),
      ErrorCode.INVALID_ARGUMENT,
    );
    expectCode(
      () => writeDescriptor({ ...base, controller: 'virtio' }),
      ErrorCode.INVALID_ARGUMENT,
    );
    expectCode(
      () => writeDescriptor({ ...base, identity: { ...identity, point: '' } }),
      ErrorCode.INVALID_ARGUMENT,
    );
  });
});

describe('ids', () => {
  it('formats ddb.uuid as 16 spaced hex bytes with a dash after the 8th, VMware prefix first', () => {
    const { uuid, longContentId, cid } = deriveDiskIds(identity);
    expect(uuid).toMatch(/^60 00 C2( [0-9a-f]{2}){5}-[0-9a-f]{2}( [0-9a-f]{2}){7}$/);
    expect(longContentId).toMatch(/^[0-9a-f]{32}$/);
    expect(longContentId.slice(-8)).toBe(cid);
    expect(['ffffffff', 'fffffffe']).not.toContain(cid);
  });

  it('does not collide when strings are concatenated differently', () => {
    const a = deriveDiskIds({ ...identity, vm: 'ab', point: 'c' });
    const b = deriveDiskIds({ ...identity, vm: 'a', point: 'bc' });
    expect(a.uuid).not.toBe(b.uuid);
  });
});

describe('geometry and adapter', () => {
  it('uses 255/63 for SCSI, uncapped', () => {
    expect(diskGeometry(2 * 1024 ** 4, 'scsi')).toEqual({
      cylinders: 267349,
      heads: 255,
      sectors: 63,
    });
    expect(diskGeometry(255 * 63 * 512 - 1, 'scsi').cylinders).toBe(0);
  });

  it('uses 16/63 for IDE with cylinders capped at 16383', () => {
    expect(diskGeometry(1024 ** 3, 'ide')).toEqual({ cylinders: 2080, heads: 16, sectors: 63 });
    expect(diskGeometry(100 * 1024 ** 3, 'ide').cylinders).toBe(16383);
  });

  it('maps controllers to adapter types; IDE and SATA disks get IDE geometry', () => {
    expect(adapterTypeFor('ide')).toBe('ide');
    expect(adapterTypeFor('sata')).toBe('ide');
    expect(adapterTypeFor('buslogic')).toBe('buslogic');
    for (const c of ['lsilogic', 'lsisas1068', 'pvscsi', 'nvme', 'PVSCSI'])
      expect(adapterTypeFor(c)).toBe('lsilogic');
    const sata = synthesizeDescriptor({ ...base, controller: 'sata', size: 100 * 1024 ** 3 });
    expect(sata.ddb).toMatchObject({
      adapterType: 'ide',
      'geometry.heads': '16',
      'geometry.cylinders': '16383',
    });
  });

  it('names the two files of a disk', () => {
    expect(diskFileNames('disk 0.img')).toEqual({
      descriptor: 'disk 0.img.vmdk',
      flat: 'disk 0.img-flat.vmdk',
    });
    expectCode(() => diskFileNames('a/b'), ErrorCode.INVALID_ARGUMENT);
  });
});

describe('formatDescriptor', () => {
  const sample: VmdkDescriptor = {
    version: 1,
    cid: '0000abcd',
    parentCid: 'ffffffff',
    createType: 'twoGbMaxExtentFlat',
    header: { encoding: 'UTF-8', isNativeSnapshot: 'no', changeTrackPath: 'x-ctk.vmdk' },
    extents: [
      { access: 'RW', sectors: 4192256, type: 'FLAT', fileName: 'x-f001.vmdk', offset: 0 },
      { access: 'RW', sectors: 100, type: 'ZERO' },
      { access: 'RDONLY', sectors: 8, type: 'FLAT', fileName: 'x-f002.vmdk', offset: 16 },
    ],
    ddb: { adapterType: 'ide', 'geometry.heads': '16' },
  };

  it('round-trips through parseDescriptor', () => {
    expect(parseDescriptor(formatDescriptor(sample))).toEqual(sample);
    const synthesized = synthesizeDescriptor(base);
    expect(parseDescriptor(formatDescriptor(synthesized))).toEqual(synthesized);
    expect(parseDescriptor(writeDescriptor({ ...base, target: 'hosted' }))).toEqual(
      synthesizeDescriptor({ ...base, target: 'hosted' }),
    );
  });

  it('never writes version=3, and refuses what the parser would reject', () => {
    expectCode(() => formatDescriptor({ ...sample, version: 3 }), ErrorCode.UNSUPPORTED);
    const bad: Partial<VmdkDescriptor>[] = [
      { cid: 'xyz' },
      { createType: 'bogus' },
      { header: { note: 'say "hi"' } },
      { header: { CID: '1' } },
      { ddb: { uuid: 'a\nb' } },
      { extents: [] },
      { extents: [{ access: 'RDONLY', sectors: 8, type: 'FLAT', fileName: 'a', offset: 0 }] },
      { extents: [{ access: 'RW', sectors: 8, type: 'FLAT', fileName: 'a' }] },
      {
        createType: 'vmfs',
        extents: [{ access: 'RW', sectors: 8, type: 'VMFS', fileName: 'a', offset: 0 }],
      },
      {
        createType: 'vmfs',
        extents: [{ access: 'RW', sectors: 8, type: 'FLAT', fileName: 'a', offset: 0 }],
      },
      { extents: [{ access: 'RW', sectors: 2 ** 50, type: 'FLAT', fileName: 'a', offset: 0 }] },
    ];
    for (const change of bad) {
      expectCode(() => formatDescriptor({ ...sample, ...change }), ErrorCode.INVALID_ARGUMENT);
    }
  });
});
