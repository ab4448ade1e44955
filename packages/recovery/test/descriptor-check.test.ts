import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { NfsServer } from '@ivmr/nfs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MemoryFileSystem } from '../../nfs/test/helpers/memory-fs.js';
import {
  lockPort111,
  requirePortFree,
  requireTools,
  tempDir,
} from '../../nfs/test/real-clients/harness.js';
import { checkDescriptor } from '../src/boot-check.js';

const MIB = 1024 * 1024;

/** A descriptor in the datastore's shape, with `extents` as its extent lines. */
function descriptor(extents: string): string {
  return [
    '# Disk DescriptorFile',
    'version=1',
    'encoding="UTF-8"',
    'CID=745d4e91',
    'parentCID=ffffffff',
    'createType="vmfs"',
    '',
    '# Extent description',
    extents,
    '',
    '# The Disk Data Base',
    '#DDB',
    '',
    'ddb.adapterType = "lsilogic"',
    'ddb.geometry.cylinders = "2"',
    'ddb.geometry.heads = "16"',
    'ddb.geometry.sectors = "63"',
    'ddb.virtualHWVersion = "14"',
    '',
  ].join('\n');
}

// verify --boot reaches a disk through the VMDK descriptor the datastore serves; this checks what
// it makes of descriptors a hypervisor would not boot from, served by a real NFS server to qemu.
describe('the boot check of a VMDK descriptor', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>;
  let release111: (() => Promise<void>) | undefined;
  let server: NfsServer;
  const fs = new MemoryFileSystem();
  const folder = 'nfs://127.0.0.1/ds/vm';

  beforeAll(async () => {
    requireTools('qemu-img');
    tmp = await tempDir();
    fs.writeFile('vm/d-flat.vmdk', '', { size: MIB });
    fs.writeFile('other/d-flat.vmdk', '', { size: MIB });
    fs.writeFile('vm/good.vmdk', descriptor('RW 2048 VMFS "d-flat.vmdk"'));
    fs.writeFile('vm/short.vmdk', descriptor('RW 1024 VMFS "d-flat.vmdk"'));
    fs.writeFile('vm/elsewhere.vmdk', descriptor('RW 2048 VMFS "../other/d-flat.vmdk"'));
    fs.writeFile('vm/self.vmdk', descriptor('RW 2048 VMFS "self.vmdk"'));
    fs.writeFile('vm/two.vmdk', descriptor('RW 1024 VMFS "d-flat.vmdk"\nRW 1024 VMFS "e.vmdk"'));
    fs.writeFile('vm/readonly.vmdk', descriptor('RDONLY 2048 VMFS "d-flat.vmdk"'));
    fs.writeFile('vm/garbage.vmdk', randomBytes(600));
    release111 = await lockPort111();
    await requirePortFree(111);
    server = new NfsServer({
      exports: [{ path: '/ds', fs }],
      host: '127.0.0.1',
      nfsPort: 0,
      portmap: 'embedded',
      portmapPort: 111,
      handleKey: randomBytes(32),
    });
    await server.start();
  }, 240_000);

  afterAll(async () => {
    await server?.stop();
    await release111?.();
    await tmp?.remove();
  });

  const check = (name: string, size = MIB) =>
    checkDescriptor(folder, name, size, join(tmp.path, name));

  it('passes a descriptor that qemu opens as a disk of the right size, naming its extent', async () => {
    await expect(check('good.vmdk')).resolves.toEqual({
      url: `${folder}/good.vmdk`,
      createType: 'vmfs',
      extent: 'd-flat.vmdk',
      virtualSize: MIB,
    });
  });

  it('fails a descriptor whose extent is not the size of the disk', async () => {
    await expect(check('short.vmdk')).rejects.toMatchObject({
      code: 'IVMR_FORMAT',
      message: expect.stringContaining('its extent has 1024 sectors, the disk 2048'),
    });
    // And the right descriptor for a disk of another size.
    await expect(check('good.vmdk', 2 * MIB)).rejects.toMatchObject({ code: 'IVMR_FORMAT' });
  });

  it('fails extents outside the folder, the descriptor itself, several or read-only ones', async () => {
    for (const name of ['elsewhere.vmdk', 'self.vmdk']) {
      await expect(check(name)).rejects.toMatchObject({
        code: 'IVMR_FORMAT',
        message: expect.stringContaining('is not a flat file of its folder'),
      });
    }
    await expect(check('two.vmdk')).rejects.toMatchObject({
      code: 'IVMR_FORMAT',
      message: expect.stringContaining('2 extents'),
    });
    await expect(check('readonly.vmdk')).rejects.toMatchObject({ code: 'IVMR_FORMAT' });
  });

  it('fails bytes that are no descriptor, and a descriptor the folder does not have', async () => {
    await expect(check('garbage.vmdk')).rejects.toMatchObject({ code: 'IVMR_FORMAT' });
    await expect(check('missing.vmdk')).rejects.toThrow(/missing\.vmdk/);
  });
});
