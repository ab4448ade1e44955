import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { SequentialDetector } from '../src/read-cache/sequential-detector.js';
import { RangeLocks } from '../src/util/range-locks.js';
import { RwGate } from '../src/util/rw-gate.js';
import { numRuns } from './support/fc.js';

const tick = () => new Promise((resolve) => setImmediate(resolve));

describe('RangeLocks', () => {
  it('never lets an exclusive holder overlap another holder, and always finishes', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.tuple(fc.nat(20), fc.nat(6), fc.boolean(), fc.nat(3)), { maxLength: 40 }),
        async (ops) => {
          const locks = new RangeLocks();
          const holders = new Map<number, { exclusive: boolean; n: number }>();
          await Promise.all(
            ops.map(async ([first, span, exclusive, wait]) => {
              const release = await locks.lock(first, first + span, exclusive);
              for (let u = first; u <= first + span; u++) {
                const h = holders.get(u);
                if (h)
                  expect(exclusive || h.exclusive, `unit ${u} shared with a writer`).toBe(false);
                holders.set(u, { exclusive, n: (h?.n ?? 0) + 1 });
              }
              for (let i = 0; i < wait; i++) await tick();
              for (let u = first; u <= first + span; u++) {
                const h = holders.get(u)!;
                if (h.n === 1) holders.delete(u);
                else holders.set(u, { exclusive: false, n: h.n - 1 });
              }
              release();
            }),
          );
          expect(locks.busyRanges).toBe(0);
        },
      ),
      { numRuns: numRuns(100, 1000) },
    );
  });

  it('serves one unit in arrival order', async () => {
    const locks = new RangeLocks();
    const order: number[] = [];
    const first = await locks.lock(5, 5, true);
    const waiting = [1, 2, 3].map(async (i) => {
      const release = await locks.lock(0, 10, i !== 2);
      order.push(i);
      release();
    });
    first();
    await Promise.all(waiting);
    expect(order).toEqual([1, 2, 3]);
  });
});

describe('RwGate', () => {
  it('lets an exclusive holder wait for shared ones, and holds later shared ones behind it', async () => {
    const gate = new RwGate();
    const log: string[] = [];
    let releaseA!: () => void;
    const a = gate.shared(
      () =>
        new Promise<void>((resolve) => {
          log.push('a');
          releaseA = resolve;
        }),
    );
    const x = gate.exclusive(async () => {
      log.push('x');
    });
    const b = gate.shared(async () => {
      log.push('b');
    });
    await tick();
    expect(log).toEqual(['a']);
    releaseA();
    await Promise.all([a, x, b]);
    expect(log).toEqual(['a', 'x', 'b']);
  });
});

describe('SequentialDetector', () => {
  it('reads ahead once a stream is sequential, in runs of half a window or more, for interleaved streams, and not for random reads', () => {
    const d = new SequentialDetector(2);
    const bs = 65536;
    expect(d.note(0, bs, bs, 4)).toEqual([0, 0]);
    expect(d.streaming).toBe(false);
    expect(d.note(10 * bs, bs, bs, 4)).toEqual([0, 0]);
    expect(d.note(bs, bs, bs, 4)).toEqual([2, 6]);
    expect(d.streaming).toBe(true);
    expect(d.note(11 * bs, bs, bs, 4)).toEqual([12, 16]);
    // Blocks 3..5 are still ahead of the read of block 2: more than half the window, so nothing
    // is asked; after block 3 only 2 are, and the next run is asked for at once.
    expect(d.note(2 * bs, bs, bs, 4)).toEqual([0, 0]);
    expect(d.streaming, 'a stream read that asks for nothing ahead').toBe(true);
    expect(d.note(3 * bs, bs, bs, 4)).toEqual([6, 8]);
    expect(d.note(4 * bs, bs, bs, 4)).toEqual([0, 0]);
    expect(d.note(5 * bs, bs, bs, 4)).toEqual([8, 10]);
    expect(d.note(50 * bs, 4096, bs, 4)).toEqual([0, 0]);
    expect(d.streaming).toBe(false);
    expect(d.note(7 * bs, 4096, bs, 4)).toEqual([0, 0]);
  });
});
