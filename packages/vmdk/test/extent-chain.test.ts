import { MemoryBlockSource } from '@ivmr/core';
import { describe, expect, it } from 'vitest';
import { expectSettlesAfterItsParts, Hold } from '../../../scripts/testing/settling-read.js';
import { ExtentChain } from '../src/index.js';

const KiB = 1024;

describe('ExtentChain', () => {
  it('reads across extents, zeros for ZERO extents and past a short source', async () => {
    const a = new Uint8Array(8 * KiB).fill(1);
    const b = new Uint8Array(2 * KiB).fill(2);
    const chain = new ExtentChain([
      { size: 4 * KiB, source: new MemoryBlockSource(a), start: 4 * KiB },
      { size: 4 * KiB, source: null, start: 0 },
      { size: 4 * KiB, source: new MemoryBlockSource(b), start: 0 },
    ]);
    expect(chain.size).toBe(12 * KiB);
    const want = new Uint8Array(12 * KiB);
    want.fill(1, 0, 4 * KiB);
    want.fill(2, 8 * KiB, 10 * KiB);
    expect(Buffer.compare(await chain.read(0, 12 * KiB), want)).toBe(0);
    expect(
      Buffer.compare(await chain.read(3 * KiB, 6 * KiB), want.subarray(3 * KiB, 9 * KiB)),
    ).toBe(0);
  });

  it('a read that fails settles only once each extent it reads stopped writing into its buffer', async () => {
    const bytes = new Uint8Array(4 * KiB).fill(7);
    const hold = new Hold();
    const failing = {
      size: 4 * KiB,
      read: async () => {
        throw new Error('extent unreadable');
      },
    };
    const slow = {
      size: 4 * KiB,
      read: async (o: number, l: number, into?: Uint8Array) => {
        await hold.wait();
        return new MemoryBlockSource(bytes).read(o, l, into);
      },
    };
    const chain = new ExtentChain([
      { size: 4 * KiB, source: failing, start: 0 },
      { size: 4 * KiB, source: slow, start: 0 },
    ]);
    const into = new Uint8Array(8 * KiB);
    await expectSettlesAfterItsParts(chain.read(0, 8 * KiB, into), into, hold, /extent unreadable/);
  });
});
