import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkBuilt, ivmr, pseudoRandom, run } from './helpers.js';

const MIB = 1024 * 1024;

describe('ivmr backup of VMDK images', () => {
  let dir: string;
  let raw: Buffer;

  beforeAll(async () => {
    await checkBuilt();
    dir = await mkdtemp(join(tmpdir(), 'ivmr-cli-vmdk-'));
    raw = pseudoRandom(5 * MIB + 512, 3);
    raw.fill(0, MIB, 3 * MIB);
    await writeFile(join(dir, 'source.raw'), raw);
  });

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  for (const subformat of ['streamOptimized', 'monolithicSparse', 'monolithicFlat'] as const) {
    it(`backs up a ${subformat} VMDK made by qemu-img and restores the same bytes`, async () => {
      const vmdk = join(dir, `${subformat}.vmdk`);
      const made = await run('qemu-img', [
        'convert',
        '-f',
        'raw',
        '-O',
        'vmdk',
        '-o',
        `subformat=${subformat}`,
        join(dir, 'source.raw'),
        vmdk,
      ]);
      expect(made.code, made.stderr).toBe(0);
      const repo = join(dir, `repo-${subformat}`);
      const b = await ivmr(['backup', vmdk, '--repo', repo, '--vm', 'ova']);
      expect(b.code, b.stderr).toBe(0);
      const out = join(dir, `out-${subformat}`);
      const r = await ivmr(['restore', '--repo', repo, '--vm', 'ova', '--out', out]);
      expect(r.code, r.stderr).toBe(0);
      const restored = await readFile(join(out, `${subformat}.raw`));
      expect(restored.length).toBe(raw.length);
      expect(restored.equals(raw)).toBe(true);
    });
  }
});
