import { describe, expect, it } from 'vitest';
import { BufferPool } from '../src/nfs3/buffer-pool.js';

describe('BufferPool (READ data buffers)', () => {
  it('rounds sizes up to a power of two of at least 4 KiB and hands a given buffer out again', () => {
    const pool = new BufferPool(1024 * 1024);
    expect(pool.take(1).length).toBe(4096);
    expect(pool.take(4097).length).toBe(8192);
    const big = pool.take(1_000_000);
    expect(big.length).toBe(1024 * 1024);
    pool.give(big);
    expect(pool.freeBytes).toBe(1024 * 1024);
    expect(pool.take(600_000)).toBe(big);
    expect(pool.freeBytes).toBe(0);
  });

  it('keeps at most its budget of free buffers per size, and ignores buffers it did not make', () => {
    const pool = new BufferPool(64 * 1024);
    const taken = Array.from({ length: 5 }, () => pool.take(16 * 1024));
    for (const b of taken) pool.give(b);
    expect(pool.freeBytes).toBe(64 * 1024);
    pool.give(Buffer.alloc(5000));
    expect(pool.freeBytes).toBe(64 * 1024);
    // A buffer larger than the budget is still kept, one at a time.
    const huge = pool.take(128 * 1024);
    const other = pool.take(128 * 1024);
    pool.give(huge);
    pool.give(other);
    expect(pool.freeBytes).toBe(64 * 1024 + 128 * 1024);
    expect(pool.take(128 * 1024)).toBe(huge);
  });
});
