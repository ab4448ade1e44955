import { readFile, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { parseVmx } from '../../src/index.js';
import { qemuImg, qemuImgStatus, requireQemu, tempDir } from '../helpers/qemu.js';

const README = fileURLToPath(new URL('../../README.md', import.meta.url));
const cleanup: (() => Promise<void>)[] = [];

afterAll(async () => {
  for (const c of cleanup) await c();
});

describe('README example', () => {
  it('runs, and qemu-img opens the folder it writes', async () => {
    requireQemu();
    const readme = await readFile(README, 'utf8');
    const code = /## Example[^\n]*\n+```ts\n([\s\S]*?)```/.exec(readme)?.[1];
    expect(code).toBeDefined();
    // Run the block as a module, through vitest so that @ivmr/* resolve to the sources.
    const tmp = await tempDir('readme');
    cleanup.push(tmp.remove);
    const module = join(tmp.dir, 'example.ts');
    await writeFile(module, code!);
    const log = vi.spyOn(console, 'log').mockImplementation(() => undefined);
    let printed: string;
    try {
      await import(/* @vite-ignore */ module);
      printed = String(log.mock.calls[0]?.[0]);
    } finally {
      log.mockRestore();
    }
    expect(printed).toMatch(/^qemu-img info \/.*disk0\.vmdk$/);
    const descriptor = printed.replace(/^qemu-img info /, '');
    const dir = dirname(descriptor);
    cleanup.push(() => rm(dirname(dir), { recursive: true, force: true }));

    const info = JSON.parse(await qemuImg('info', '--output=json', descriptor)) as Record<
      string,
      unknown
    >;
    expect(info.format).toBe('vmdk');
    expect(info['virtual-size']).toBe(1024 * 1024 + 512);
    const flat = join(dir, 'disk0-flat.vmdk');
    const cmp = await qemuImgStatus('compare', '-f', 'raw', '-F', 'vmdk', flat, descriptor);
    expect(cmp.code).toBe(0);
    const bytes = await readFile(flat);
    expect(bytes.subarray(4096, 4117).toString()).toBe('hello from the backup');
    const vmx = parseVmx(await readFile(join(dir, 'web01.vmx')));
    expect(vmx.config).toMatchObject({
      name: 'web01',
      firmware: 'efi',
      memoryMB: 2048,
      controller: 'pvscsi',
    });
    expect(vmx.disks.map((d) => d.fileName)).toEqual(['disk0.vmdk']);
  });
});
