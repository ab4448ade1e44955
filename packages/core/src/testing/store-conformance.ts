import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ErrorCode } from '../errors.js';
import type { ObjectKind, StoreAdapter } from '../store/adapter.js';

/** Creates a fresh, empty store for one test, and optionally disposes of it. */
export interface StoreFactory {
  create(): Promise<StoreAdapter>;
  destroy?(store: StoreAdapter): Promise<void>;
}

async function listNames(store: StoreAdapter, kind: ObjectKind): Promise<string[]> {
  const names: string[] = [];
  for await (const o of store.list(kind)) names.push(o.name);
  return names.sort();
}

function bytes(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
}

/**
 * The store adapter contract as vitest tests. Every store (local, memory, S3, yours) runs it:
 *
 * ```ts
 * import { describeStoreConformance } from '@ivmr/core/testing';
 * describeStoreConformance('my store', { create: async () => new MyStore(...) });
 * ```
 */
export function describeStoreConformance(name: string, factory: StoreFactory): void {
  describe(`store conformance: ${name}`, () => {
    let store: StoreAdapter;
    beforeEach(async () => {
      store = await factory.create();
    });
    afterEach(async () => {
      await factory.destroy?.(store);
      await store.close?.();
    });

    it('put then get returns the same bytes, for every kind', async () => {
      for (const kind of ['config', 'pack', 'index', 'map', 'point', 'lock'] as const) {
        const data = bytes(1000 + kind.length, kind.length);
        await store.put(kind, kind === 'config' ? 'config' : `obj-${kind}`, data);
        expect(
          Buffer.from(await store.get(kind, kind === 'config' ? 'config' : `obj-${kind}`)),
        ).toEqual(Buffer.from(data));
      }
    });

    it('get of a missing object rejects with IVMR_NOT_FOUND', async () => {
      await expect(store.get('pack', 'nope')).rejects.toMatchObject({ code: ErrorCode.NOT_FOUND });
      await expect(store.get('pack', 'nope', { offset: 0, length: 10 })).rejects.toMatchObject({
        code: ErrorCode.NOT_FOUND,
      });
    });

    it('ranged get returns exactly the range, and a short result at the end', async () => {
      const data = bytes(300_000, 7);
      await store.put('pack', 'p1', data);
      const mid = await store.get('pack', 'p1', { offset: 123_457, length: 4096 });
      expect(Buffer.from(mid)).toEqual(Buffer.from(data.subarray(123_457, 123_457 + 4096)));
      const tail = await store.get('pack', 'p1', { offset: 299_990, length: 100 });
      expect(Buffer.from(tail)).toEqual(Buffer.from(data.subarray(299_990)));
      expect((await store.get('pack', 'p1', { offset: 400_000, length: 10 })).length).toBe(0);
    });

    it('concurrent ranged gets of one object all return their own bytes', async () => {
      const data = bytes(1 << 20, 9);
      await store.put('pack', 'p2', data);
      const offsets = Array.from({ length: 64 }, (_, i) => (i * 15_913) % (data.length - 5000));
      const got = await Promise.all(
        offsets.map((o) => store.get('pack', 'p2', { offset: o, length: 5000 })),
      );
      for (const [i, g] of got.entries()) {
        expect(Buffer.from(g)).toEqual(Buffer.from(data.subarray(offsets[i]!, offsets[i]! + 5000)));
      }
    });

    it('ranged gets with a lent buffer (range.into) return their bytes, used or not', async () => {
      const data = bytes(200_000, 11);
      await store.put('pack', 'p3', data);
      // Lent buffers larger than the range, filled with garbage first; each is reused at once
      // for the next get, as the blob reader does.
      const lent = [new Uint8Array(70_000).fill(0xee), new Uint8Array(70_000).fill(0xdd)];
      for (let i = 0; i < 20; i++) {
        const offset = (i * 37_411) % 150_000;
        const into = lent[i % 2]!;
        const got = await store.get('pack', 'p3', { offset, length: 50_000, into });
        expect(got.length).toBe(50_000);
        expect(Buffer.from(got)).toEqual(Buffer.from(data.subarray(offset, offset + 50_000)));
      }
      const tail = await store.get('pack', 'p3', {
        offset: 199_000,
        length: 5000,
        into: new Uint8Array(5000).fill(0xcc),
      });
      expect(Buffer.from(tail)).toEqual(Buffer.from(data.subarray(199_000)));
    });

    it('put replaces an existing object whole', async () => {
      await store.put('point', 'x', bytes(5000, 1));
      await store.put('point', 'x', bytes(10, 2));
      expect(Buffer.from(await store.get('point', 'x'))).toEqual(Buffer.from(bytes(10, 2)));
      // Ranged reads after a replace see the new object, not a cached handle of the old one.
      await store.put('pack', 'r', bytes(5000, 3));
      await store.get('pack', 'r', { offset: 0, length: 10 });
      await store.put('pack', 'r', bytes(5000, 4));
      expect(Buffer.from(await store.get('pack', 'r', { offset: 0, length: 10 }))).toEqual(
        Buffer.from(bytes(5000, 4).subarray(0, 10)),
      );
    });

    it('put does not keep a reference to the caller buffer', async () => {
      const data = bytes(100, 5);
      await store.put('map', 'm', data);
      data.fill(0);
      expect(Buffer.from(await store.get('map', 'm'))).toEqual(Buffer.from(bytes(100, 5)));
    });

    it('has, list and delete agree', async () => {
      expect(await store.has('index', 'a')).toBe(false);
      expect(await listNames(store, 'index')).toEqual([]);
      await store.put('index', 'a', bytes(10, 1));
      await store.put('index', 'b', bytes(20, 2));
      await store.put('map', 'c', bytes(30, 3));
      expect(await store.has('index', 'a')).toBe(true);
      expect(await listNames(store, 'index')).toEqual(['a', 'b']);
      const sizes: Record<string, number> = {};
      for await (const o of store.list('index')) sizes[o.name] = o.size;
      expect(sizes).toEqual({ a: 10, b: 20 });
      await store.delete('index', 'a');
      expect(await store.has('index', 'a')).toBe(false);
      expect(await listNames(store, 'index')).toEqual(['b']);
      expect(await listNames(store, 'map')).toEqual(['c']);
    });

    it('delete of a missing object is not an error', async () => {
      await expect(store.delete('pack', 'never-was')).resolves.toBeUndefined();
    });

    it('lists many packs (sharded layouts included)', async () => {
      const names = Array.from(
        { length: 40 },
        (_, i) => `${(i * 7919).toString(16).padStart(8, '0')}abcdef`,
      );
      for (const n of names) await store.put('pack', n, bytes(16, 1));
      expect(await listNames(store, 'pack')).toEqual([...names].sort());
    });

    it('refuses names that could escape the store', async () => {
      for (const bad of ['../x', 'a/b', '..', '', 'a\0b']) {
        await expect(store.put('pack', bad, bytes(1, 1))).rejects.toMatchObject({
          code: ErrorCode.INVALID_ARGUMENT,
        });
      }
    });

    it('empty objects round-trip', async () => {
      await store.put('lock', 'empty', new Uint8Array(0));
      expect((await store.get('lock', 'empty')).length).toBe(0);
    });
  });
}
