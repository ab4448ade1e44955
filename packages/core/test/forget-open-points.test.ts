import { describe, expect, it } from 'vitest';
import { MemoryBlockSource, MemoryStore, Repository } from '../src/index.js';
import { Prng } from './support/bytes.js';

const BS = 64 * 1024;

function image(seed: number, blocks: number): Uint8Array {
  return new Prng(seed).fill(new Uint8Array(blocks * BS + 1234));
}

describe('forget while restore points are open in the same process', () => {
  it('keeps open points readable: prune waits until they are closed', async () => {
    const repo = await Repository.init(new MemoryStore(), { blockSize: BS, packSize: 1 << 20 });
    const v1 = image(1, 20);
    const v2 = v1.slice();
    v2.set(new Prng(2).fill(new Uint8Array(10 * BS)), 5 * BS);
    await repo.backup({ vm: 'vm', disks: [{ name: 'd', source: new MemoryBlockSource(v1) }] });
    const p2 = await repo.backup({
      vm: 'vm',
      disks: [{ name: 'd', source: new MemoryBlockSource(v2) }],
    });

    const open = await repo.openPoint('vm', p2.id);
    const report = await repo.forget({ vm: 'vm', keepLast: 1 });
    expect(report.removed).toHaveLength(1);
    expect(report.prune).toBeNull();
    await expect(repo.prune()).rejects.toMatchObject({ code: 'IVMR_LOCKED' });
    expect(Buffer.from(await open.disk('d').read(0, v2.length)).equals(Buffer.from(v2))).toBe(true);
    await open.close();

    const pruned = await repo.prune();
    expect(pruned.blobsRemoved).toBe(10);
    const again = await repo.openPoint('vm', p2.id);
    expect(Buffer.from(await again.disk('d').read(0, v2.length)).equals(Buffer.from(v2))).toBe(
      true,
    );
    expect(again.disks[0]!.allocatedBytes).toBe(v2.length);
    await again.close();
    expect((await repo.verify()).ok).toBe(true);
  });
});
