import { describe, expect, it } from 'vitest';
import { LruCache } from '../src/lru.js';

describe('LruCache', () => {
  it('evicts the least recently used entry', async () => {
    const lru = new LruCache<number, string>(2);
    await lru.load(1, async () => 'a');
    await lru.load(2, async () => 'b');
    expect(lru.get(1)).toBe('a'); // 1 is now more recent than 2
    await lru.load(3, async () => 'c');
    expect(lru.get(2)).toBeUndefined();
    expect(lru.get(1)).toBe('a');
    expect(lru.get(3)).toBe('c');
    expect(lru.size).toBe(2);
  });

  it('runs one loader for concurrent misses on a key', async () => {
    const lru = new LruCache<string, number>(4);
    let calls = 0;
    let release!: (v: number) => void;
    const loader = () => {
      calls++;
      return new Promise<number>((resolve) => {
        release = resolve;
      });
    };
    const a = lru.load('k', loader);
    const b = lru.load('k', loader);
    release(42);
    expect(await Promise.all([a, b])).toEqual([42, 42]);
    expect(calls).toBe(1);
  });

  it('does not keep a failed load, so the next miss tries again', async () => {
    const lru = new LruCache<string, number>(4);
    await expect(lru.load('k', async () => Promise.reject(new Error('boom')))).rejects.toThrow(
      'boom',
    );
    expect(await lru.load('k', async () => 7)).toBe(7);
  });
});
