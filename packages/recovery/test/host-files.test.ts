import { mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { tempDir } from '../../nfs/test/real-clients/harness.js';
import { HostFiles } from '../src/index.js';

describe('HostFiles', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>;
  let dir: string;
  let statePath: string;
  const open = () => HostFiles.open(dir, statePath);

  beforeEach(async () => {
    tmp = await tempDir();
    dir = join(tmp.path, 'files');
    statePath = join(tmp.path, 'host-files.json');
    await mkdir(dir);
  });

  afterEach(async () => {
    await tmp.remove();
  });

  it('keeps its verifier across clean runs and runs whose writes were all synced', async () => {
    const first = await open();
    const verifier = first.verifier;
    expect(verifier).toHaveLength(8);
    const lck = await first.create('.lck-01', 'guarded', {}, undefined);
    await first.write(lck, 0, Buffer.from('lock'), 'unstable');
    await first.close();
    const second = await open();
    expect(second.verifier).toEqual(verifier);
    // A run that ends without close() but whose writes were all FILE_SYNC or DATA_SYNC lost
    // nothing a client still holds: the verifier stays.
    await second.write(lck, 0, Buffer.from('LOCK'), 'file_sync');
    await second.write(lck, 4, Buffer.from('!'), 'data_sync');
    const third = await open();
    expect(third.verifier).toEqual(verifier);
    expect(await readFile(join(dir, '.lck-01'), 'utf8')).toBe('LOCK!');
    await second.close();
    await third.close();
  });

  it('changes its verifier after a run that acknowledged an UNSTABLE write and did not close', async () => {
    const first = await open();
    const verifier = first.verifier;
    const log = await first.create('vmware.log', 'unchecked', {}, undefined);
    // The mark is durable before the write is acknowledged.
    await first.write(log, 0, Buffer.from('line 1\n'), 'unstable');
    expect(JSON.parse(await readFile(statePath, 'utf8'))).toMatchObject({ dirty: true });
    // A crash: the next run opens without close() having run.
    const second = await open();
    expect(second.verifier).not.toEqual(verifier);
    expect(JSON.parse(await readFile(statePath, 'utf8'))).toEqual({
      verifier: Buffer.from(second.verifier).toString('hex'),
      dirty: false,
    });
    // And the new verifier is kept by the next clean run.
    await second.close();
    expect((await open()).verifier).toEqual(second.verifier);
    await first.close();
  });

  it('draws a new verifier when its state file is damaged', async () => {
    const first = await open();
    await first.close();
    await writeFile(statePath, '{"verifier": "zz');
    const second = await open();
    expect(second.verifier).not.toEqual(first.verifier);
    await second.close();
  });

  it('applies SETATTR size and lists every file the hypervisor makes, .tmp ones too', async () => {
    const files = await open();
    const swap = await files.create('app01-5f3e.vswp', 'unchecked', {}, undefined);
    await files.setattr(swap, { size: 64 * 1024 * 1024 });
    expect((await stat(join(dir, 'app01-5f3e.vswp'))).size).toBe(64 * 1024 * 1024);
    await files.create('app01.vmx.tmp', 'guarded', {}, undefined);
    // ivmr's own half-written files are not the hypervisor's.
    await writeFile(join(dir, 'app01.vmx.ivmr-tmp'), 'partial');
    expect((await files.list()).map((f) => f.name)).toEqual(['app01-5f3e.vswp', 'app01.vmx.tmp']);
    await files.close();
  });
});
