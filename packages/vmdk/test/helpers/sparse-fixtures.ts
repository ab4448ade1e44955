import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { imageWithHoles, patternBytes } from './bytes.js';
import { qemuImg, qemuImgStatus, tempDir } from './qemu.js';
import { writeStreamOptimized } from './stream-writer.js';

const MiB = 1024 * 1024;

/** The sparse VMDK kinds the readers are checked on. */
export const SPARSE_KINDS = [
  'monolithicSparse',
  'streamOptimized',
  'streamOptimized, GD at end',
] as const;
export type SparseKind = (typeof SPARSE_KINDS)[number];

export interface SparseFixtures {
  /** The disk's bytes. */
  readonly raw: Buffer;
  readonly rawPath: string;
  readonly files: Readonly<Record<SparseKind, string>>;
  readonly remove: () => Promise<void>;
}

/**
 * A 72 MiB + 3 sectors disk (not a whole number of 64 KiB grains) with data in 0..30 MiB (zero,
 * text and random regions), nothing in 30..70 MiB (a whole grain table's span stays empty), and
 * random data from 70 MiB to the end; as qemu-img's monolithicSparse and streamOptimized (grain
 * directory at the front) and as a VMware-style stream (grain directory at the end, footer).
 * Each file is checked with `qemu-img compare` against the raw disk before it is used.
 */
export async function makeSparseFixtures(seed: number): Promise<SparseFixtures> {
  const tmp = await tempDir('sparse');
  try {
    const size = 72 * MiB + 3 * 512;
    const raw = Buffer.alloc(size);
    imageWithHoles(seed, 30 * MiB).copy(raw, 0);
    patternBytes(`${seed}-end`, size - 70 * MiB).copy(raw, 70 * MiB);
    const rawPath = join(tmp.dir, 'disk.raw');
    await writeFile(rawPath, raw);
    const files = {
      monolithicSparse: join(tmp.dir, 'monolithic-sparse.vmdk'),
      streamOptimized: join(tmp.dir, 'stream-optimized.vmdk'),
      'streamOptimized, GD at end': join(tmp.dir, 'stream-gd-at-end.vmdk'),
    };
    for (const sub of ['monolithicSparse', 'streamOptimized'] as const) {
      await qemuImg(
        'convert',
        '-f',
        'raw',
        '-O',
        'vmdk',
        '-o',
        `subformat=${sub}`,
        rawPath,
        files[sub],
      );
    }
    await writeFile(files['streamOptimized, GD at end'], writeStreamOptimized(raw).bytes);
    for (const file of Object.values(files)) {
      const cmp = await qemuImgStatus('compare', '-f', 'raw', '-F', 'vmdk', rawPath, file);
      if (cmp.code !== 0)
        throw new Error(`fixture ${file} differs from the raw disk: ${cmp.stdout}${cmp.stderr}`);
    }
    return { raw, rawPath, files, remove: tmp.remove };
  } catch (err) {
    await tmp.remove();
    throw err;
  }
}
