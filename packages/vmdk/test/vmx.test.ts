import { ErrorCode, IvmrError, isIvmrError, type VmConfig } from '@ivmr/core';
import { describe, expect, it } from 'vitest';
import {
  diskSlots,
  escapeVmxValue,
  parseVmx,
  synthesizeVmx,
  unescapeVmxValue,
} from '../src/index.js';

const config: VmConfig = {
  name: 'web01',
  guestOs: 'debian12-64',
  firmware: 'efi',
  memoryMB: 4096,
  cpus: 2,
  controller: 'pvscsi',
  nics: [
    { network: 'VM Network', type: 'vmxnet3', mac: '00:50:56:12:34:56' },
    { network: 'Backup LAN', type: 'e1000e', mac: '00:50:56:a1:b2:c3' },
    { network: 'DMZ' },
  ],
};

/** The entries of a .vmx as [key, raw value] in file order. */
function entries(text: string): [string, string][] {
  return text
    .trim()
    .split('\n')
    .map((l) => {
      const m = /^(\S+) = "(.*)"$/.exec(l);
      if (!m) throw new Error(`not an entry: ${l}`);
      return [m[1]!, m[2]!];
    });
}

function failure(fn: () => unknown): IvmrError {
  try {
    fn();
  } catch (err) {
    if (err instanceof IvmrError) return err;
    throw err;
  }
  throw new Error('nothing was thrown');
}

describe('escapeVmxValue', () => {
  it('escapes quotes, pipes, line breaks and controls as VMware does, keeping tabs and UTF-8', () => {
    expect(escapeVmxValue('say "hi" | bye\nnext\ttab\u007f\u0001')).toBe(
      'say |22hi|22 |7C bye|0Anext\ttab|7F|01',
    );
    expect(escapeVmxValue('Büro-Server ✓')).toBe('Büro-Server ✓');
  });

  it('unescapes |XX in either case and leaves other pipes alone', () => {
    expect(unescapeVmxValue('a|22b|7cc|0A|zz|')).toBe('a"b|c\n|zz|');
  });
});

describe('synthesizeVmx', () => {
  it('writes exactly the minimal fields ESXi registers, NICs disconnected', () => {
    const text = synthesizeVmx({ config, disks: ['disk0.vmdk', 'data "1".vmdk'] });
    expect(entries(text)).toEqual([
      ['.encoding', 'UTF-8'],
      ['config.version', '8'],
      ['virtualHW.version', '14'],
      ['displayName', 'web01'],
      ['guestOS', 'debian12-64'],
      ['firmware', 'efi'],
      ['memSize', '4096'],
      ['numvcpus', '2'],
      ['scsi0.present', 'TRUE'],
      ['scsi0.virtualDev', 'pvscsi'],
      ['scsi0:0.present', 'TRUE'],
      ['scsi0:0.fileName', 'disk0.vmdk'],
      ['scsi0:1.present', 'TRUE'],
      ['scsi0:1.fileName', 'data |221|22.vmdk'],
      ['ethernet0.present', 'TRUE'],
      ['ethernet0.virtualDev', 'vmxnet3'],
      ['ethernet0.networkName', 'VM Network'],
      ['ethernet0.startConnected', 'FALSE'],
      ['ethernet0.addressType', 'static'],
      ['ethernet0.address', '00:50:56:12:34:56'],
      ['ethernet1.present', 'TRUE'],
      ['ethernet1.virtualDev', 'e1000e'],
      ['ethernet1.networkName', 'Backup LAN'],
      ['ethernet1.startConnected', 'FALSE'],
      ['ethernet1.addressType', 'static'],
      ['ethernet1.address', '00:50:56:a1:b2:c3'],
      ['ethernet1.checkMACAddress', 'FALSE'],
      ['ethernet2.present', 'TRUE'],
      ['ethernet2.networkName', 'DMZ'],
      ['ethernet2.startConnected', 'FALSE'],
      ['ethernet2.addressType', 'generated'],
      ['uuid.action', 'keep'],
    ]);
  });

  it('connects NICs, drops MACs and sets the swap folder when asked', () => {
    const text = synthesizeVmx({
      config,
      disks: [],
      nicsConnected: true,
      keepMacAddresses: false,
      swapDirectory: '/vmfs/volumes/ssd1/swap',
      hardwareVersion: 19,
    });
    const map = new Map(entries(text));
    expect(map.get('ethernet0.startConnected')).toBe('TRUE');
    expect(map.get('ethernet0.addressType')).toBe('generated');
    expect(map.has('ethernet0.address')).toBe(false);
    expect(map.get('sched.swap.dir')).toBe('/vmfs/volumes/ssd1/swap');
    expect(map.get('virtualHW.version')).toBe('19');
  });

  it('places disks on IDE, SATA and NVMe slots, skipping SCSI unit 7', () => {
    const disks = Array.from({ length: 17 }, (_, i) => `d${i}.vmdk`);
    const scsi = new Map(entries(synthesizeVmx({ config, disks })));
    expect(scsi.has('scsi0:7.fileName')).toBe(false);
    expect(scsi.get('scsi0:8.fileName')).toBe('d7.vmdk');
    expect(scsi.get('scsi1.virtualDev')).toBe('pvscsi');
    expect(scsi.get('scsi1:0.fileName')).toBe('d15.vmdk');
    const ide = new Map(
      entries(
        synthesizeVmx({
          config: { ...config, controller: 'ide' },
          disks: ['a.vmdk', 'b.vmdk', 'c.vmdk'],
        }),
      ),
    );
    expect([
      ide.get('ide0:0.fileName'),
      ide.get('ide0:1.fileName'),
      ide.get('ide1:0.fileName'),
    ]).toEqual(['a.vmdk', 'b.vmdk', 'c.vmdk']);
    expect([...ide.keys()].some((k) => /^ide\d\.present/.test(k))).toBe(false);
    const sata = new Map(
      entries(synthesizeVmx({ config: { ...config, controller: 'sata' }, disks: ['a.vmdk'] })),
    );
    expect(sata.get('sata0.present')).toBe('TRUE');
    expect(sata.get('sata0:0.fileName')).toBe('a.vmdk');
    const nvme = new Map(
      entries(synthesizeVmx({ config: { ...config, controller: 'nvme' }, disks: ['a.vmdk'] })),
    );
    expect(nvme.get('nvme0:0.fileName')).toBe('a.vmdk');
    expect(diskSlots('ide', 4).map((s) => `${s.controller}:${s.unit}`)).toEqual([
      '0:0',
      '0:1',
      '1:0',
      '1:1',
    ]);
  });

  it('refuses configurations ESXi would refuse', () => {
    const bad: [Partial<Parameters<typeof synthesizeVmx>[0]>, RegExp][] = [
      [{ config: { ...config, memoryMB: 1023 } }, /multiple of 4/],
      [{ config: { ...config, cpus: 0 } }, /cpus/],
      [{ config: { ...config, controller: 'virtio-scsi' } }, /unknown disk controller/],
      [{ config: { ...config, controller: 'nvme' }, hardwareVersion: 11 }, /version 13/],
      [
        { config: { ...config, controller: 'ide' }, disks: ['1', '2', '3', '4', '5'] },
        /do not fit/,
      ],
      [{ config: { ...config, nics: [{ mac: '00-50-56-00-00-01' }] } }, /MAC/],
    ];
    for (const [change, message] of bad) {
      const err = failure(() => synthesizeVmx({ config, disks: [], ...change }));
      expect(err.code).toBe(ErrorCode.INVALID_ARGUMENT);
      expect(err.message).toMatch(message);
    }
  });
});

describe('parseVmx', () => {
  it('reads back what synthesizeVmx writes: the same VmConfig and disks', () => {
    for (const c of [
      config,
      { ...config, firmware: 'bios' as const, controller: 'lsisas1068', nics: [] },
      {
        ...config,
        name: 'odd "name" | with\nbreak',
        controller: 'ide',
        guestOs: 'windows2019srv-64',
      },
      { ...config, controller: 'sata' },
      { ...config, controller: 'nvme' },
      { ...config, controller: 'buslogic', cpus: 1, memoryMB: 4 },
    ]) {
      const disks = ['disk0.vmdk', 'disk 1.vmdk'];
      const parsed = parseVmx(synthesizeVmx({ config: c, disks }));
      expect(parsed.config).toEqual(c);
      expect(parsed.disks.map((d) => d.fileName)).toEqual(disks);
      expect(parsed.hardwareVersion).toBe(14);
    }
  });

  it('reads an ESXi-written .vmx: comments, case, escapes, CD-ROM, vCenter MACs', () => {
    const parsed = parseVmx(`.encoding = "UTF-8"
config.version = "8"
virtualHW.version = "19"
vmci0.present = "TRUE"
floppy0.present = "FALSE"
memSize = "8192"
tools.upgrade.policy = "manual"
sched.cpu.units = "mhz"
vm.createDate = "1612345678901234"
scsi0.virtualDev = "pvscsi"
scsi0.present = "TRUE"
sata0.present = "TRUE"
sata0:0.deviceType = "cdrom-image"
sata0:0.fileName = "/vmfs/volumes/5f1e/iso/debian-12.iso"
sata0:0.present = "TRUE"
scsi0:0.deviceType = "scsi-hardDisk"
scsi0:0.fileName = "app|2001.vmdk"
scsi0:0.present = "TRUE"
scsi0:1.deviceType = "scsi-hardDisk"
scsi0:1.fileName = "/vmfs/volumes/datastore2/app01/app01_1.vmdk"
scsi0:1.present = "TRUE"
scsi0:2.fileName = "app01_2.vmdk"
scsi0:2.present = "FALSE"
ethernet0.virtualDev = "vmxnet3"
ethernet0.networkName = "Prod VLAN 20"
ethernet0.addressType = "vpx"
ethernet0.generatedAddress = "00:50:56:9A:1B:2C"
ethernet0.uptCompatibility = "TRUE"
ethernet0.present = "TRUE"
ethernet1.present = "FALSE"
displayName = "app|2201|22 (prod)"
guestOS = "rhel8-64"
toolScripts.afterPowerOn = "TRUE"
firmware = "efi"
numvcpus = "4"
cpuid.coresPerSocket = "2"
uuid.bios = "42 1a 2b 3c 4d 5e 6f 70-81 92 a3 b4 c5 d6 e7 f8"
`);
    expect(parsed.config).toEqual({
      name: 'app"01" (prod)',
      guestOs: 'rhel8-64',
      firmware: 'efi',
      memoryMB: 8192,
      cpus: 4,
      controller: 'pvscsi',
      nics: [{ network: 'Prod VLAN 20', type: 'vmxnet3', mac: '00:50:56:9a:1b:2c' }],
    });
    expect(parsed.disks).toEqual([
      { bus: 'scsi', controller: 0, unit: 0, fileName: 'app 01.vmdk' },
      {
        bus: 'scsi',
        controller: 0,
        unit: 1,
        fileName: '/vmfs/volumes/datastore2/app01/app01_1.vmdk',
      },
    ]);
    expect(parsed.hardwareVersion).toBe(19);
    expect(parsed.entries.get('uuid.bios')).toBe('42 1a 2b 3c 4d 5e 6f 70-81 92 a3 b4 c5 d6 e7 f8');
  });

  it('reads a hand-edited Workstation .vmx: bare values, odd case, trailing comments, CRLF, defaults', () => {
    const parsed = parseVmx(
      [
        '#!/usr/bin/vmware',
        '# a hand-edited file',
        '.encoding = "windows-1252"',
        'config.version = "8"',
        'virtualhw.version = 10',
        '  DISPLAYNAME = "Legacy XP"   # renamed',
        'GuestOS = winxppro',
        'MEMSIZE = 512',
        'ide0:0.present = "TRUE"',
        'ide0:0.fileName = "Windows XP Professional.vmdk"',
        'ide1:0.present = "TRUE"',
        'ide1:0.fileName = "auto detect"',
        'ide1:0.deviceType = "cdrom-raw"',
        'ide0:1.present = TRUE',
        'ide0:1.fileName = "data.vmdk"',
        'Ethernet0.Present = "TRUE"',
        'ethernet0.connectionType = "nat"',
        'ethernet0.addressType = "generated"',
        'ethernet0.generatedAddress = "00:0c:29:ab:cd:ef"',
        'ethernet0.generatedAddressOffset = "0"',
        'empty.value =',
        '',
      ].join('\r\n'),
    );
    expect(parsed.config).toEqual({
      name: 'Legacy XP',
      guestOs: 'winxppro',
      firmware: 'bios',
      memoryMB: 512,
      cpus: 1,
      controller: 'ide',
      nics: [{ mac: '00:0c:29:ab:cd:ef' }],
    });
    expect(parsed.disks.map((d) => `${d.bus}${d.controller}:${d.unit} ${d.fileName}`)).toEqual([
      'ide0:0 Windows XP Professional.vmdk',
      'ide0:1 data.vmdk',
    ]);
    expect(parsed.entries.get('empty.value')).toBe('');
  });

  it('puts the disk bios.hddOrder names first and ignores disks on absent controllers', () => {
    const parsed = parseVmx(`displayName = "x"
memSize = "1024"
scsi0.present = "TRUE"
scsi0.virtualDev = "lsilogic"
scsi0:0.present = "TRUE"
scsi0:0.fileName = "data.vmdk"
sata0.present = "TRUE"
sata0:0.present = "TRUE"
sata0:0.fileName = "boot.vmdk"
scsi1.present = "FALSE"
scsi1:0.present = "TRUE"
scsi1:0.fileName = "ghost.vmdk"
bios.hddOrder = "scsi0:0"
`);
    expect(parsed.disks.map((d) => d.fileName)).toEqual(['data.vmdk', 'boot.vmdk']);
    expect(parsed.config.controller).toBe('lsilogic');
  });

  it('reads bytes in the declared encoding', () => {
    const text = '.encoding = "windows-1252"\ndisplayName = "Caf\u00e9"\nmemSize = "64"\n';
    expect(parseVmx(Buffer.from(text, 'latin1')).config.name).toBe('Caf\u00e9');
    expect(parseVmx(Buffer.from(text.replace('windows-1252', 'UTF-8'))).config.name).toBe(
      'Caf\u00e9',
    );
  });

  it('names the line of a malformed entry or value', () => {
    const cases: [string, number, RegExp][] = [
      ['displayName = "a"\nmemSize = "1000 MB"\n', 2, /memsize/],
      ['displayName = "a"\nmemSize = "1022"\n', 2, /multiple of 4/],
      ['displayName = "a"\nmemSize = "1024"\nnumvcpus = "0"\n', 3, /numvcpus/],
      ['displayName = "a"\nmemSize = "1024"\nfirmware = "uefi"\n', 3, /bios or efi/],
      [
        'displayName = "a"\nmemSize = "1024"\nscsi0.present = "TRUE"\nscsi0.virtualDev = "virtio"\n',
        4,
        /unknown SCSI/,
      ],
      ['displayName = "a"\nthis is not an entry\n', 2, /not a "name = value" entry/],
      ['displayName = "a\nmemSize = "1024"\n', 1, /not a "name = value" entry/],
      ['displayName = "a"\nmem\u0000Size = "1"\n', 2, /binary data/],
      ['KDMV\u0001\u0000\u0000\u0000', 1, /binary data/],
    ];
    for (const [text, line, message] of cases) {
      const err = failure(() => parseVmx(text));
      expect(err.code).toBe(ErrorCode.FORMAT);
      expect(err.details.line).toBe(line);
      expect(err.message).toMatch(message);
    }
  });

  it('reads U+FFFD as text, but names the line of bytes that are not UTF-8', () => {
    const text = 'displayName = "a\ufffdb"\nmemSize = "64"\n';
    expect(parseVmx(text).config.name).toBe('a\ufffdb');
    expect(parseVmx(Buffer.from(text, 'utf8')).config.name).toBe('a\ufffdb');
    const invalid = Buffer.concat([
      Buffer.from('memSize = "64"\ndisplayName = "a'),
      Buffer.from([0xff, 0xfe]),
      Buffer.from('"\n'),
    ]);
    const err = failure(() => parseVmx(invalid));
    expect(err.code).toBe(ErrorCode.FORMAT);
    expect(err.details.line).toBe(2);
    expect(err.message).toMatch(/binary data/);
  });

  it('names the key a required entry misses, and accepts a default name', () => {
    const err = failure(() => parseVmx('displayName = "a"\n'));
    expect(isIvmrError(err, ErrorCode.FORMAT)).toBe(true);
    expect(err.details.key).toBe('memSize');
    expect(failure(() => parseVmx('memSize = "64"\n')).details.key).toBe('displayName');
    expect(parseVmx('memSize = "64"\n', { defaultName: 'from-file' }).config.name).toBe(
      'from-file',
    );
  });
});
