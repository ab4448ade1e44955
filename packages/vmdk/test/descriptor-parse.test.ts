import { ErrorCode, IvmrError, isIvmrError } from '@ivmr/core';
import { describe, expect, it } from 'vitest';
import { descriptorSize, parseDescriptor } from '../src/index.js';

/** The error parseDescriptor throws for `text`. */
function failure(text: string | Uint8Array): IvmrError {
  try {
    parseDescriptor(text);
  } catch (err) {
    if (err instanceof IvmrError) return err;
    throw err;
  }
  throw new Error('the descriptor was accepted');
}

const GOOD = `# Disk DescriptorFile
version=1
CID=fffffffe
parentCID=ffffffff
createType="vmfs"

# Extent description
RW 41943040 VMFS "web01-flat.vmdk"

# The Disk Data Base
#DDB

ddb.adapterType = "lsilogic"
`;

/** GOOD with line `n` (1-based) replaced by `line`. */
function withLine(n: number, line: string): string {
  const lines = GOOD.split('\n');
  lines[n - 1] = line;
  return lines.join('\n');
}

describe('parseDescriptor: every malformed line is a typed error naming it', () => {
  const cases: [name: string, text: string | Uint8Array, line: number, message: RegExp][] = [
    [
      'spaces around = in createType',
      withLine(5, 'createType = "vmfs"'),
      5,
      /without spaces around "="/,
    ],
    ['space after = in createType', withLine(5, 'createType= "vmfs"'), 5, /without spaces/],
    ['unquoted createType', withLine(5, 'createType=vmfs'), 5, /double quotes/],
    ['unknown createType', withLine(5, 'createType="vmfsThick"'), 5, /unknown createType/],
    ['missing extents', withLine(8, ''), 5, /no extent lines/],
    [
      'blank line right before an RW extent',
      withLine(7, ''),
      8,
      /line 7 before this RW extent is blank/,
    ],
    ['RDONLY-only', withLine(8, 'RDONLY 41943040 VMFS "web01-flat.vmdk"'), 8, /no RW extent/],
    ['NOACCESS-only', withLine(8, 'NOACCESS 41943040 VMFS "web01-flat.vmdk"'), 8, /no RW extent/],
    [
      'VMFS with offset',
      withLine(8, 'RW 41943040 VMFS "web01-flat.vmdk" 0'),
      8,
      /VMFS extent takes no offset/,
    ],
    [
      'FLAT without offset',
      withLine(5, 'createType="monolithicFlat"').replace(
        'VMFS "web01-flat.vmdk"',
        'FLAT "web01-flat.vmdk"',
      ),
      8,
      /needs its offset/,
    ],
    ['huge sector count', withLine(8, 'RW 99999999999999999999 VMFS "a"'), 8, /too large/],
    ['sector count past 2^53 bytes', withLine(8, `RW ${2 ** 44} VMFS "a"`), 8, /too large/],
    ['zero sectors', withLine(8, 'RW 0 VMFS "a"'), 8, /> 0/],
    ['negative sectors', withLine(8, 'RW -5 VMFS "a"'), 8, /whole number/],
    ['unknown extent type', withLine(8, 'RW 8 FLOPPY "a"'), 8, /unknown extent type/],
    ['extent without file', withLine(8, 'RW 8 VMFS'), 8, /needs a file name/],
    ['unterminated file name', withLine(8, 'RW 8 VMFS "a'), 8, /"<file>"/],
    ['truncated extent line', withLine(8, 'RW'), 8, /<access> <sectors> <type>/],
    [
      'extent type not of the createType',
      withLine(8, 'RW 8 SPARSE "a.vmdk"'),
      8,
      /takes VMFS extents/,
    ],
    ['binary garbage', withLine(10, 'ab\u0000\u0001\u0002cd'), 10, /binary data/],
    [
      'invalid UTF-8',
      Buffer.concat([
        Buffer.from(GOOD.slice(0, GOOD.indexOf('# The'))),
        Buffer.from([0xff, 0xfe, 0x0a]),
      ]),
      10,
      /binary data/,
    ],
    [
      'a sparse file given as descriptor',
      Buffer.from('KDMV\u0001\u0000\u0000\u0000\u0003', 'latin1'),
      1,
      /sparse extent/,
    ],
    ['comment containing createType', withLine(1, '# createType is vmfs'), 1, /word createType/],
    ['comment with CID= before CID', withLine(1, '# CID=1234'), 1, /CID=/],
    ['version not first', withLine(2, 'encoding="UTF-8"'), 2, /first entry must be version=1/],
    ['version with spaces', withLine(2, 'version = 1'), 2, /without spaces/],
    ['version 4', withLine(2, 'version=4'), 2, /1, 2 or 3/],
    [
      'CID after parentCID',
      GOOD.replace('CID=fffffffe\nparentCID=ffffffff', 'parentCID=ffffffff\nCID=fffffffe'),
      4,
      /before parentCID/,
    ],
    ['CID not hex', withLine(3, 'CID=xyz'), 3, /hex digits/],
    ['CID with spaces', withLine(3, 'CID = fffffffe'), 3, /without spaces/],
    ['duplicate ddb key', `${GOOD}ddb.adapterType = "ide"\n`, 14, /twice/],
    [
      'unquoted value with spaces',
      withLine(13, 'ddb.adapterType = lsi logic'),
      13,
      /double quotes/,
    ],
    ['stray text', withLine(6, 'hello world'), 6, /not an entry, extent or comment/],
    ['no CID at all', withLine(3, ''), 13, /no CID/],
    ['empty', '', 1, /no version=1/],
  ];
  for (const [name, text, line, message] of cases) {
    it(name, () => {
      const err = failure(text);
      expect(err.code).toBe(ErrorCode.FORMAT);
      expect(err.details.line).toBe(line);
      expect(err.message).toMatch(new RegExp(`line ${line}: `));
      expect(err.message).toMatch(message);
    });
  }

  it('accepts the baseline the cases are derived from, also padded with NULs as qemu-img convert leaves it', () => {
    expect(parseDescriptor(GOOD).createType).toBe('vmfs');
    expect(parseDescriptor(Buffer.concat([Buffer.from(GOOD), Buffer.alloc(300)]))).toEqual(
      parseDescriptor(GOOD),
    );
    expect(failure(`${GOOD}\u0000ddb.x = "1"\n`).details.line).toBe(14);
  });

  it('refuses more than 1 MiB without reading it as lines', () => {
    const err = failure(Buffer.alloc(1024 * 1024 + 1, 0x41));
    expect(err.code).toBe(ErrorCode.FORMAT);
    expect(err.details.line).toBe(1);
  });

  it('reports an encoding it cannot decode as unsupported, naming the line', () => {
    const text = GOOD.replace('version=1\n', 'version=1\nencoding="klingon-8"\n');
    const err = failure(Buffer.from(text));
    expect(isIvmrError(err, ErrorCode.UNSUPPORTED)).toBe(true);
    expect(err.details.line).toBe(3);
  });
});

// Descriptors as VMware products write them, reconstructed from VMware's Virtual Disk Format
// specification and descriptors published in VMware KB articles.
describe('parseDescriptor: descriptors VMware products write', () => {
  it('reads an ESXi thin disk (vmfs) with tools and change-tracking entries', () => {
    const d = parseDescriptor(`# Disk DescriptorFile
version=3
encoding="UTF-8"
CID=8a3c0d51
parentCID=ffffffff
isNativeSnapshot="no"
createType="vmfs"
changeTrackPath="web01-ctk.vmdk"

# Extent description
RW 83886080 VMFS "web01-flat.vmdk"

# The Disk Data Base
#DDB

ddb.adapterType = "lsilogic"
ddb.deletable = "true"
ddb.geometry.cylinders = "5221"
ddb.geometry.heads = "255"
ddb.geometry.sectors = "63"
ddb.longContentID = "4c9b1e0f22d3a6b87f0e95aa8a3c0d51"
ddb.thinProvisioned = "1"
ddb.toolsInstallType = "4"
ddb.toolsVersion = "12352"
ddb.uuid = "60 00 C2 93 f9 0a 81 8b-3d 77 cb 31 ef 90 d6 b1"
ddb.virtualHWVersion = "14"
`);
    expect(d).toMatchObject({
      version: 3,
      cid: '8a3c0d51',
      parentCid: 'ffffffff',
      createType: 'vmfs',
      header: { encoding: 'UTF-8', isNativeSnapshot: 'no', changeTrackPath: 'web01-ctk.vmdk' },
      extents: [{ access: 'RW', sectors: 83886080, type: 'VMFS', fileName: 'web01-flat.vmdk' }],
    });
    expect(d.ddb.uuid).toBe('60 00 C2 93 f9 0a 81 8b-3d 77 cb 31 ef 90 d6 b1');
    expect(descriptorSize(d)).toBe(40 * 1024 ** 3);
  });

  it('reads an ESXi snapshot delta (vmfsSparse) with its parent hint', () => {
    const d = parseDescriptor(`# Disk DescriptorFile
version=1
encoding="UTF-8"
CID=2f1d6f3a
parentCID=8a3c0d51
isNativeSnapshot="no"
createType="vmfsSparse"
parentFileNameHint="web01.vmdk"
# Extent description
RW 83886080 VMFSSPARSE "web01-000001-delta.vmdk"

# The Disk Data Base
#DDB

ddb.longContentID = "0d17c4a9b55e8f3322cc71e42f1d6f3a"
`);
    expect(d.parentCid).toBe('8a3c0d51');
    expect(d.header.parentFileNameHint).toBe('web01.vmdk');
    expect(d.extents[0]!.type).toBe('VMFSSPARSE');
  });

  it('reads an ESXi seSparse delta and a raw device mapping', () => {
    const se = parseDescriptor(
      'version=1\nCID=11111111\nparentCID=22222222\ncreateType="seSparse"\nparentFileNameHint="a.vmdk"\nRW 2097152 SESPARSE "a-000001-sesparse.vmdk"\n',
    );
    expect(se.extents[0]!.type).toBe('SESPARSE');
    const rdm = parseDescriptor(
      'version=1\nCID=33333333\nparentCID=ffffffff\ncreateType="vmfsPassthroughRawDeviceMap"\nRW 209715200 VMFSRDM "db01-rdmp.vmdk"\nddb.adapterType = "lsilogic"\n',
    );
    expect(rdm.extents[0]).toEqual({
      access: 'RW',
      sectors: 209715200,
      type: 'VMFSRDM',
      fileName: 'db01-rdmp.vmdk',
    });
  });

  it('reads a Workstation split sparse disk (twoGbMaxExtentSparse) with CRLF line ends', () => {
    const d = parseDescriptor(
      [
        '# Disk DescriptorFile',
        'version=1',
        'encoding="windows-1252"',
        'CID=5c8e2a10',
        'parentCID=ffffffff',
        'isNativeSnapshot="no"',
        'createType="twoGbMaxExtentSparse"',
        '',
        '# Extent description',
        'RW 8323072 SPARSE "Windows 10 x64-s001.vmdk"',
        'RW 8323072 SPARSE "Windows 10 x64-s002.vmdk"',
        'RW 20480 SPARSE "Windows 10 x64-s003.vmdk"',
        '',
        '# The Disk Data Base ',
        '#DDB',
        '',
        'ddb.adapterType = "lsisas1068"',
        'ddb.geometry.cylinders = "1044"',
        'ddb.geometry.heads = "255"',
        'ddb.geometry.sectors = "63"',
        'ddb.longContentID = "a1e2f6b4c3d7e8f90a1b2c3d5c8e2a10"',
        'ddb.uuid = "60 00 C2 9d 8a 2f 61 7b-0e 3c 42 d9 81 aa 5b 16"',
        'ddb.virtualHWVersion = "18"',
        '',
      ].join('\r\n'),
    );
    expect(d.extents.map((e) => e.fileName)).toEqual([
      'Windows 10 x64-s001.vmdk',
      'Windows 10 x64-s002.vmdk',
      'Windows 10 x64-s003.vmdk',
    ]);
    expect(descriptorSize(d)).toBe((8323072 * 2 + 20480) * 512);
  });

  it('reads a Workstation preallocated disk (monolithicFlat) in windows-1252 from bytes', () => {
    const text =
      '# Disk DescriptorFile\nversion=1\nencoding="windows-1252"\nCID=fffffffe\nparentCID=ffffffff\ncreateType="monolithicFlat"\n\n# Extent description\nRW 16777216 FLAT "caf\u00e9-flat.vmdk" 0\n\n#DDB\nddb.adapterType = "lsilogic"\n';
    const d = parseDescriptor(Buffer.from(text, 'latin1'));
    expect(d.extents[0]!.fileName).toBe('caf\u00e9-flat.vmdk');
  });

  it('reads qemu-img style descriptors (short CID, no encoding)', () => {
    const d = parseDescriptor(
      '# Disk DescriptorFile\nversion=1\nCID=2b182b0\nparentCID=ffffffff\ncreateType="monolithicFlat"\n\n# Extent description\nRW 20480 FLAT "x-flat.vmdk" 0\n\n# The Disk Data Base\n#DDB\n\nddb.virtualHWVersion = "4"\nddb.adapterType = "ide"\nddb.toolsVersion = "2147483647"\n',
    );
    expect(d.cid).toBe('02b182b0');
    expect(d.ddb.toolsVersion).toBe('2147483647');
  });
});
