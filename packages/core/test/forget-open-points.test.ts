import { describe, expect, it } from 'vitest';
import {
  MemoryBlockSource,
  MemoryStore,
  Repository,
  type RestorePoint,
  type StoreAdapter,
} from '../src/index.js';
import { Prng } from './support/bytes.js';

const BS = 64 * 1024;

function image(seed: number, blocks: number): Uint8Array {
  return new Prng(seed).fill(new Uint8Array(blocks * BS + 1234));
}

async function reads(open: RestorePoint, expected: Uint8Array): Promise<boolean> {
  return Buffer.from(await open.disk('d').read(0, expected.length)).equals(Buffer.from(expected));
}

async function lockCount(store: StoreAdapter): Promise<number> {
  let n = 0;
  for await (const _ of store.list('lock')) n++;
  return n;
}

/** Two points of one VM: the second changes blocks 5..14 of twenty. */
async function twoPoints(store: StoreAdapter) {
  const repo = await Repository.init(store, { blockSize: BS, packSize: 1 << 20 });
  const v1 = image(1, 20);
  const v2 = v1.slice();
  v2.set(new Prng(2).fill(new Uint8Array(10 * BS)), 5 * BS);
  const p1 = await repo.backup({
    vm: 'vm',
    disks: [{ name: 'd', source: new MemoryBlockSource(v1) }],
  });
  const p2 = await repo.backup({
    vm: 'vm',
    disks: [{ name: 'd', source: new MemoryBlockSource(v2) }],
  });
  return { repo, v1, v2, p1, p2 };
}

describe('forget and prune while restore points are open', () => {
  it('keep what open points read, even a removed one, and a later prune frees it', async () => {
    const store = new MemoryStore();
    const { repo, v1, v2, p1, p2 } = await twoPoints(store);
    // Another repository object stands for another process: its own index, its own leases. No
    // frame cache: every read below goes to the store.
    const reader = await Repository.open(store, { frameCache: { maxBytes: 0 } });
    const old = await reader.openPoint('vm', p1.id);
    const open = await reader.openPoint('vm', p2.id);
    expect(await lockCount(store)).toBe(2);

    const report = await repo.forget({ vm: 'vm', keepLast: 1 });
    expect(report.removed).toEqual([p1.id]);
    // The prune ran, but the removed point's lease kept its ten blocks.
    expect(report.prune).toMatchObject({ blobsRemoved: 0 });
    expect((await repo.listPoints('vm')).map((p) => p.id)).toEqual([p2.id]);
    expect(await reads(old, v1)).toBe(true);
    expect(await reads(open, v2)).toBe(true);
    await old.close();

    // Now they go; the pack holding them and blocks of v2 is rewritten under the open reader,
    // whose index still names the old pack: it finds the blobs' new place by itself.
    const pruned = await repo.prune();
    expect(pruned.blobsRemoved).toBe(10);
    expect(pruned.packsRewritten).toBeGreaterThan(0);
    expect(await reads(open, v2)).toBe(true);
    await open.close();
    expect(await lockCount(store)).toBe(0);
    await expect(reader.openPoint('vm', p1.id)).rejects.toMatchObject({ code: 'IVMR_NOT_FOUND' });

    const again = await repo.openPoint('vm', p2.id);
    expect(await reads(again, v2)).toBe(true);
    expect(again.disks[0]!.allocatedBytes).toBe(v2.length);
    await again.close();
    expect((await repo.verify()).ok).toBe(true);
  });

  it('a reader opened after a backup of another process sees the new point and its blobs', async () => {
    const store = new MemoryStore();
    const { repo, v2 } = await twoPoints(store);
    const reader = await Repository.open(store);
    const v3 = v2.slice();
    v3.set(new Prng(3).fill(new Uint8Array(4 * BS)), 0);
    const p3 = await repo.backup({
      vm: 'vm',
      disks: [{ name: 'd', source: new MemoryBlockSource(v3) }],
    });
    const open = await reader.openPoint('vm');
    expect(open.info.id).toBe(p3.id);
    expect(await reads(open, v3)).toBe(true);
    await open.close();
  });

  it('a pack lost for good is still IVMR_NOT_FOUND naming the blob', async () => {
    const store = new MemoryStore();
    const { repo, p2 } = await twoPoints(store);
    const open = await repo.openPoint('vm', p2.id);
    for await (const { name } of store.list('pack')) await store.delete('pack', name);
    await expect(open.disk('d').read(0, BS)).rejects.toMatchObject({
      code: 'IVMR_NOT_FOUND',
      details: { blob: expect.any(String) },
    });
    await open.close();
  });
});
