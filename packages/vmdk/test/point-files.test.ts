import type { RestorePointInfo } from '@ivmr/core';
import { describe, expect, it } from 'vitest';
import { parseDescriptor, parseVmx, synthesizePointFiles } from '../src/index.js';

const stats = {
  blocks: 1,
  zeroBlocks: 0,
  unchangedBlocks: 0,
  dedupBlocks: 0,
  newBlocks: 1,
  newBytes: 1,
  storedBytes: 1,
  readBytes: 1,
};
const point: RestorePointInfo = {
  version: 1,
  id: '5f0c2a9e41d7b3c8',
  vm: 'db01',
  time: '2026-01-01T00:00:00.000Z',
  sequence: 3,
  kind: 'incremental',
  base: '0000000000000001',
  vmConfig: {
    name: 'db01',
    guestOs: 'windows2019srv-64',
    firmware: 'efi',
    memoryMB: 16384,
    cpus: 4,
    controller: 'lsisas1068',
    nics: [{ network: 'VM Network', type: 'vmxnet3', mac: '00:50:56:aa:bb:cc' }],
  },
  disks: [
    {
      name: 'system',
      size: 64 * 1024 ** 3,
      blockSize: 1 << 20,
      map: 'm1',
      allocatedBytes: 1,
      stats,
    },
    {
      name: 'data 1',
      size: 10 * 1024 ** 3 + 100,
      blockSize: 1 << 20,
      map: 'm2',
      allocatedBytes: 1,
      stats,
    },
  ],
};

describe('synthesizePointFiles', () => {
  const files = synthesizePointFiles(point, { repository: 'repo-id', target: 'esxi' });

  it('names the VM folder files after the VM and its disks, in the point order', () => {
    expect(files.vmxName).toBe('db01.vmx');
    expect(files.disks.map((d) => [d.disk, d.descriptorName, d.flatName, d.size])).toEqual([
      ['system', 'system.vmdk', 'system-flat.vmdk', 64 * 1024 ** 3],
      ['data 1', 'data 1.vmdk', 'data 1-flat.vmdk', 10 * 1024 ** 3 + 100],
    ]);
  });

  it('writes descriptors for the target pointing at the flat files, with distinct ids', () => {
    const [system, data] = files.disks.map((d) => parseDescriptor(d.descriptor));
    expect(system!.createType).toBe('vmfs');
    expect(system!.extents[0]!.fileName).toBe('system-flat.vmdk');
    expect(data!.extents[0]!.sectors).toBe(Math.ceil((10 * 1024 ** 3 + 100) / 512));
    expect(system!.cid).not.toBe(data!.cid);
    const hosted = synthesizePointFiles(point, { repository: 'repo-id', target: 'hosted' });
    expect(parseDescriptor(hosted.disks[0]!.descriptor).createType).toBe('monolithicFlat');
  });

  it('writes a .vmx naming the descriptors, first disk first', () => {
    const vmx = parseVmx(files.vmx);
    expect(vmx.config).toEqual(point.vmConfig);
    expect(vmx.disks.map((d) => d.fileName)).toEqual(['system.vmdk', 'data 1.vmdk']);
    expect(vmx.entries.get('ethernet0.startconnected')).toBe('FALSE');
  });

  it('passes the options through and gives the same bytes every time', () => {
    const again = synthesizePointFiles(structuredClone(point), {
      repository: 'repo-id',
      target: 'esxi',
    });
    expect(again).toEqual(files);
    const other = synthesizePointFiles(point, {
      repository: 'repo-id',
      target: 'esxi',
      hardwareVersion: 19,
      nicsConnected: true,
      swapDirectory: '/vmfs/volumes/fast/swap',
    });
    const vmx = parseVmx(other.vmx);
    expect(vmx.hardwareVersion).toBe(19);
    expect(vmx.entries.get('ethernet0.startconnected')).toBe('TRUE');
    expect(vmx.entries.get('sched.swap.dir')).toBe('/vmfs/volumes/fast/swap');
    expect(parseDescriptor(other.disks[0]!.descriptor).ddb.virtualHWVersion).toBe('19');
    const otherRepo = synthesizePointFiles(point, { repository: 'repo-2', target: 'esxi' });
    expect(otherRepo.disks[0]!.descriptor).not.toBe(files.disks[0]!.descriptor);
  });
});
