import { describe, expect, it } from 'vitest';
import { MemoryBlockSource, MemoryStore, Repository } from '../src/index.js';

function disk(size: number, seed: number): Uint8Array {
  const b = new Uint8Array(size);
  let x = seed;
  for (let i = 0; i < size; i += 1) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = (x >>> 16) & 0xff;
  }
  b.fill(0, 200_000, 400_000);
  return b;
}

describe('smoke', () => {
  it('backs up, reads back, increments, verifies, forgets', async () => {
    const repo = await Repository.init(new MemoryStore(), {
      blockSize: 65536,
      frameSize: 16384,
      packSize: 1 << 20,
    });
    const a = disk(1_000_003, 1);
    const p1 = await repo.backup({
      vm: 'vm1',
      disks: [{ name: 'd0', source: new MemoryBlockSource(a) }],
    });
    expect(p1.kind).toBe('full');
    const b = a.slice();
    b.fill(7, 500_000, 520_000);
    const p2 = await repo.backup({
      vm: 'vm1',
      disks: [{ name: 'd0', source: new MemoryBlockSource(b) }],
    });
    expect(p2.kind).toBe('incremental');
    const c = b.slice();
    c.fill(9, 10, 20);
    const p3 = await repo.backup({
      vm: 'vm1',
      disks: [{ name: 'd0', source: new MemoryBlockSource(c) }],
      reverse: true,
    });
    expect(p3.kind).toBe('full');
    for (const [p, want] of [
      [p1, a],
      [p2, b],
      [p3, c],
    ] as const) {
      const pt = await repo.openPoint('vm1', p.id);
      const got = await pt.disk('d0').read(0, want.length);
      expect(Buffer.from(got).equals(Buffer.from(want))).toBe(true);
      const part = await pt.disk('d0').read(123_457, 5000);
      expect(Buffer.from(part).equals(Buffer.from(want.subarray(123_457, 128_457)))).toBe(true);
      await pt.close();
    }
    const v = await repo.verify();
    expect(v.ok).toBe(true);
    const f = await repo.forget({ vm: 'vm1', keepLast: 2 });
    expect(f.removed).toEqual([p1.id]);
    const pts = await repo.listPoints('vm1');
    expect(pts.map((p) => p.id)).toEqual([p2.id, p3.id]);
    for (const [p, want] of [
      [p2, b],
      [p3, c],
    ] as const) {
      const pt = await repo.openPoint('vm1', p.id);
      const got = await pt.disk('d0').read(0, want.length);
      expect(Buffer.from(got).equals(Buffer.from(want))).toBe(true);
      await pt.close();
    }
    expect((await repo.verify()).ok).toBe(true);
  });
});
