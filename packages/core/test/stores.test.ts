import * as fs from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ErrorCode, LocalStore, MemoryStore, type ObjectKind } from '../src/index.js';
import { describeStoreConformance } from '../src/testing/index.js';
import { expectBytes, randomBytesFrom } from './support/bytes.js';
import { openFilesUnder, useTempDirs } from './support/temp-dir.js';

// Faults injected into the file system calls LocalStore makes, to see what a failed put leaves.
const faults = vi.hoisted(() => ({ failAt: null as null | 'write' | 'sync' | 'rename' }));

vi.mock('node:fs/promises', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs/promises')>();
  const ioError = (call: string, code: string) =>
    Object.assign(new Error(`${code}: simulated failure, ${call}`), { code });
  return {
    ...real,
    open: async (...args: Parameters<typeof real.open>) => {
      const fh = await real.open(...args);
      if (args[1] === 'wx' && faults.failAt === 'write') {
        // Half the bytes reach the file, then the disk is full.
        fh.writeFile = async (data) => {
          const bytes = data as Uint8Array;
          await fh.write(bytes, 0, bytes.length >> 1);
          throw ioError('write', 'ENOSPC');
        };
      }
      if (args[1] === 'wx' && faults.failAt === 'sync') {
        fh.sync = async () => {
          throw ioError('fsync', 'EIO');
        };
      }
      return fh;
    },
    rename: async (...args: Parameters<typeof real.rename>) => {
      if (faults.failAt === 'rename') throw ioError('rename', 'EIO');
      return real.rename(...args);
    },
  };
});

const tempDir = useTempDirs('store');

afterEach(() => {
  faults.failAt = null;
});

describeStoreConformance('MemoryStore', { create: async () => new MemoryStore() });

describeStoreConformance('LocalStore', {
  create: async () => LocalStore.open(await tempDir(), { create: true }),
});

describe('LocalStore', () => {
  it('keeps objects where FORMAT.md says', async () => {
    const dir = await tempDir();
    const store = await LocalStore.open(dir, { create: true });
    const pack = 'ab'.repeat(32);
    const paths: [ObjectKind, string, string][] = [
      ['config', 'config', 'config'],
      ['pack', pack, `packs/ab/${pack}`],
      ['index', 'i1', 'index/i1'],
      ['map', 'm1', 'maps/m1'],
      ['point', 'p1', 'points/p1'],
      ['lock', 'l1', 'locks/l1'],
    ];
    for (const [kind, name, path] of paths) {
      const data = randomBytesFrom(name.length, 100);
      await store.put(kind, name, data);
      expectBytes(await fs.readFile(join(dir, path)), data, path);
    }
    await store.close();
  });

  it('opening a missing directory is IVMR_NOT_FOUND, a file IVMR_INVALID_ARGUMENT', async () => {
    const dir = await tempDir();
    await expect(LocalStore.open(join(dir, 'nope'))).rejects.toMatchObject({
      code: ErrorCode.NOT_FOUND,
    });
    await fs.writeFile(join(dir, 'file'), 'x');
    await expect(LocalStore.open(join(dir, 'file'))).rejects.toMatchObject({
      code: ErrorCode.INVALID_ARGUMENT,
    });
  });

  it('writes through a temporary file and leaves none behind', async () => {
    const dir = await tempDir();
    const store = await LocalStore.open(dir, { create: true });
    await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        store.put(i % 2 ? 'pack' : 'point', `obj${i % 5}`, randomBytesFrom(i, 50_000 + i)),
      ),
    );
    expect(await fs.readdir(join(dir, 'tmp'))).toEqual([]);
    await store.close();
  });

  it.each([
    'write',
    'sync',
    'rename',
  ] as const)('a put whose %s fails rejects (IVMR_NOSPC for a full disk, else IVMR_IO) and leaves neither the object nor a temporary file', async (failAt) => {
    const dir = await tempDir();
    const store = await LocalStore.open(dir, { create: true });
    const old = randomBytesFrom(1, 10_000);
    await store.put('point', 'kept', old);
    faults.failAt = failAt;
    for (const [kind, name] of [
      ['pack', 'cd'.repeat(32)],
      ['point', 'new'],
      ['point', 'kept'],
    ] as const) {
      const err = await store.put(kind, name, randomBytesFrom(2, 70_000)).then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).toMatchObject({
        code: failAt === 'write' ? ErrorCode.NO_SPACE : ErrorCode.IO,
        details: { kind, name },
      });
      expect((err as Error).cause).toMatchObject({ code: failAt === 'write' ? 'ENOSPC' : 'EIO' });
    }
    faults.failAt = null;
    expect(await store.has('pack', 'cd'.repeat(32))).toBe(false);
    expect(await store.has('point', 'new')).toBe(false);
    // A failed replace keeps the old object whole.
    expectBytes(await store.get('point', 'kept'), old);
    expect(await fs.readdir(join(dir, 'tmp'))).toEqual([]);
    await store.close();
  });

  it('closes every file handle on close(), and refuses calls afterwards', async () => {
    const dir = await tempDir();
    const store = await LocalStore.open(dir, { create: true });
    const names = Array.from({ length: 30 }, (_, i) => `${i}`.padStart(64, 'f'));
    for (const name of names) await store.put('pack', name, randomBytesFrom(3, 8192));
    for (const name of names) await store.get('pack', name, { offset: 100, length: 10 });
    expect(openFilesUnder(dir).length).toBeGreaterThan(0);
    await store.close();
    expect(openFilesUnder(dir)).toEqual([]);
    await expect(store.get('pack', names[0]!, { offset: 0, length: 1 })).rejects.toMatchObject({
      code: ErrorCode.CLOSED,
    });
    await expect(store.put('pack', names[0]!, new Uint8Array(1))).rejects.toMatchObject({
      code: ErrorCode.CLOSED,
    });
  });

  it('keeps at most maxOpenFiles handles, without closing one a reader still uses', async () => {
    const dir = await tempDir();
    const store = await LocalStore.open(dir, { create: true, maxOpenFiles: 2 });
    const packs = Array.from({ length: 6 }, (_, i) => ({
      name: `${i}`.repeat(64),
      data: randomBytesFrom(10 + i, 200_000),
    }));
    for (const p of packs) await store.put('pack', p.name, p.data);
    const reads = Array.from({ length: 60 }, (_, i) => {
      const p = packs[(i * 7) % packs.length]!;
      const offset = (i * 3331) % 190_000;
      return { p, offset };
    });
    const got = await Promise.all(
      reads.map(({ p, offset }) => store.get('pack', p.name, { offset, length: 5000 })),
    );
    for (const [i, { p, offset }] of reads.entries()) {
      expectBytes(got[i]!, p.data.subarray(offset, offset + 5000), `read ${i}`);
    }
    await vi.waitFor(async () => expect(openFilesUnder(dir).length).toBeLessThanOrEqual(2));
    await store.close();
    expect(openFilesUnder(dir)).toEqual([]);
  });
});
