import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { type BlockSource, ErrorCode, isIvmrError, MemoryBlockSource } from '@ivmr/core';
import { describe, expect, it, vi } from 'vitest';
import { expectSettlesAfterItsParts, Hold } from '../../../scripts/testing/settling-read.js';
import type { CacheFile } from '../src/fs/cache-file-system.js';
import {
  type CacheFileSystem,
  nodeFileSystem,
  ReadCache,
  type ReadCacheOptions,
  requireRecoverySpace,
  WriteOverlay,
} from '../src/index.js';
import { dataStart } from '../src/read-cache/cache-file-format.js';
import { expectBytes } from './support/bytes.js';
import { countingFs } from './support/counting-fs.js';
import { CrashFs } from './support/crash-fs.js';
import { randomBytesFrom } from './support/prng.js';
import { ReadOnlyBase } from './support/read-only-base.js';
import { useTempDirs } from './support/temp-dir.js';

const tempDir = useTempDirs('rcache');
const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

/** A source whose reads wait until `release()`; counts them. */
class GatedSource implements BlockSource {
  readonly size: number;
  reads = 0;
  readonly #inner: MemoryBlockSource;
  #open!: () => void;
  #gate = new Promise<void>((resolve) => {
    this.#open = resolve;
  });

  constructor(bytes: Uint8Array) {
    this.#inner = new MemoryBlockSource(bytes);
    this.size = bytes.length;
  }

  release(): void {
    this.#open();
  }

  async read(offset: number, length: number, into?: Uint8Array): Promise<Uint8Array> {
    this.reads++;
    await this.#gate;
    return this.#inner.read(offset, length, into);
  }
}

function memCache(
  source: BlockSource,
  options: Partial<ReadCacheOptions> = {},
  fs: CacheFileSystem = new CrashFs(),
) {
  return ReadCache.open(source, { path: '/c/cache', fs, readAhead: 0, ...options });
}

/** `inner` with its files' reads and writes passed through `read` / `write` (defaults: as is). */
function wrapFs(
  inner: CacheFileSystem,
  wrap: {
    read?: (file: CacheFile, into: Uint8Array, position: number) => Promise<number>;
    write?: (file: CacheFile, data: Uint8Array, position: number) => Promise<void>;
    /** Files get `writev` only when this is given. */
    writev?: (file: CacheFile, buffers: readonly Uint8Array[], position: number) => Promise<void>;
  },
): CacheFileSystem {
  return {
    open: async (path, flags) => {
      const file = await inner.open(path, flags);
      return {
        read: (into, position) => (wrap.read ?? ((f, i, p) => f.read(i, p)))(file, into, position),
        write: (data, position) =>
          (wrap.write ?? ((f, d, p) => f.write(d, p)))(file, data, position),
        ...(wrap.writev && {
          writev: (buffers, position) => wrap.writev!(file, buffers, position),
        }),
        sync: () => file.sync(),
        truncate: (size) => file.truncate(size),
        size: () => file.size(),
        close: () => file.close(),
      };
    },
    exists: (path) => inner.exists(path),
    rename: (from, to) => inner.rename(from, to),
    unlink: (path) => inner.unlink(path),
    mkdir: (path) => inner.mkdir(path),
    syncDir: (path) => inner.syncDir(path),
    statfs: (path) => inner.statfs(path),
  };
}

describe('ReadCache hits and misses', () => {
  it('loads a block once, then serves it from the cache file', async () => {
    const base = new ReadOnlyBase(randomBytesFrom(1, 1 * MiB));
    const cache = await memCache(base, { blockSize: 64 * KiB });
    expectBytes(await cache.read(100, 4000), await base.read(100, 4000));
    expect(cache.stats()).toMatchObject({
      hits: 0,
      misses: 1,
      sourceReads: 1,
      bytesFromSource: 64 * KiB,
      bytesFromCache: 0,
    });
    const readsBefore = base.reads;
    expectBytes(await cache.read(5000, 60_000), await base.read(5000, 60_000));
    expect(base.reads - readsBefore, 'source reads for a hit').toBe(1);
    expect(cache.stats()).toMatchObject({
      hits: 1,
      misses: 1,
      sourceReads: 1,
      bytesFromCache: 60_000,
    });
    // A read across three blocks: one hit, two misses, loaded with one source read.
    expectBytes(await cache.read(60 * KiB, 100 * KiB), await base.read(60 * KiB, 100 * KiB));
    expect(cache.stats()).toMatchObject({ hits: 2, misses: 3, sourceReads: 2 });
    await cache.close();
    base.expectUntouched();
  });

  it('serves blocks cached in consecutive slots with one file read, block by block when it fails', async () => {
    const base = new ReadOnlyBase(randomBytesFrom(3, 1 * MiB));
    const fs = new CrashFs();
    // Counts the cache file's reads; `shortReads` makes each read return one byte less.
    let fileReads = 0;
    let shortReads = false;
    const counting = wrapFs(fs, {
      read: async (file, into, position) => {
        fileReads++;
        const n = await file.read(into, position);
        return shortReads ? Math.max(0, n - 1) : n;
      },
    });
    const cache = await memCache(base, { blockSize: 64 * KiB }, counting);
    // Blocks 2..9 are loaded in order, so they take consecutive slots.
    for (let b = 2; b < 10; b++) await cache.read(b * 64 * KiB, 64 * KiB);
    // Once verified (the first hit of each slot checks its CRC), a read across them is one read.
    expectBytes(
      await cache.read(2 * 64 * KiB, 8 * 64 * KiB),
      await base.read(2 * 64 * KiB, 8 * 64 * KiB),
    );
    const sourceReads = cache.stats().sourceReads;
    fileReads = 0;
    const from = 2 * 64 * KiB + 1000;
    const length = 7 * 64 * KiB - 3000;
    expectBytes(await cache.read(from, length), await base.read(from, length));
    expect(fileReads, 'file reads for eight consecutive cached blocks').toBe(1);
    expect(cache.stats().sourceReads).toBe(sourceReads);
    // A short file read is not trusted: each block is retried alone, and the source serves them.
    shortReads = true;
    expectBytes(await cache.read(from, length), await base.read(from, length));
    expect(cache.stats().sourceReads).toBeGreaterThan(sourceReads);
    await cache.close();
    base.expectUntouched();
  });

  it('serves known-zero blocks without the source or the cache', async () => {
    const bytes = new Uint8Array(256 * KiB);
    bytes.fill(7, 128 * KiB);
    const inner = new MemoryBlockSource(bytes);
    let reads = 0;
    const source = {
      size: bytes.length,
      blockSize: 128 * KiB,
      isZeroBlock: (i: number) => i === 0,
      read: (o: number, l: number, into?: Uint8Array) => {
        reads++;
        return inner.read(o, l, into);
      },
    };
    const cache = await memCache(source, { blockSize: 64 * KiB });
    expectBytes(await cache.read(0, 256 * KiB), bytes);
    // Blocks 0 and 1 are zero; 2 and 3 come with one source read.
    expect(reads).toBe(1);
    expect(cache.stats().zeroReads).toBe(2);
    await cache.close();
  });
});

describe('ReadCache circular pruning', () => {
  it('reuses the oldest slot when full, and the file does not grow past its capacity', async () => {
    const base = new ReadOnlyBase(randomBytesFrom(2, 64 * KiB));
    const cache = await memCache(base, {
      blockSize: 4 * KiB,
      maxBytes: 16 * KiB,
      secondChance: false,
    });
    for (let b = 0; b < 6; b++) await cache.read(b * 4 * KiB, 4 * KiB);
    expect(cache.stats()).toMatchObject({
      fileBytes: 16 * KiB,
      cachedBytes: 16 * KiB,
      blocksPruned: 2,
      bytesPruned: 8 * KiB,
    });
    const before = base.reads;
    for (let b = 2; b < 6; b++) await cache.read(b * 4 * KiB, 4 * KiB);
    expect(base.reads - before, 'blocks 2..5 are hits').toBe(0);
    expectBytes(await cache.read(0, 4 * KiB), await base.read(0, 4 * KiB));
    expect(base.reads - before, 'block 0 was pruned: one load (+1 for the check)').toBe(2);
    await cache.close();
  });

  it('gives a block hit since the ring last passed it a second chance', async () => {
    const base = new ReadOnlyBase(randomBytesFrom(3, 64 * KiB));
    const cache = await memCache(base, { blockSize: 4 * KiB, maxBytes: 16 * KiB });
    for (let b = 0; b < 4; b++) await cache.read(b * 4 * KiB, 4 * KiB);
    await cache.read(0, 100);
    await cache.read(4 * 4 * KiB, 4 * KiB);
    const before = cache.stats().sourceReads;
    await cache.read(0, 4 * KiB);
    expect(cache.stats().sourceReads - before, 'block 0 kept').toBe(0);
    await cache.read(4 * KiB, 4 * KiB);
    expect(cache.stats().sourceReads - before, 'block 1 pruned in its place').toBe(1);
    await cache.close();
  });
});

describe('ReadCache single-flight and read-ahead', () => {
  it('loads a block once for many concurrent misses', async () => {
    const bytes = randomBytesFrom(4, 512 * KiB);
    const source = new GatedSource(bytes);
    const cache = await memCache(source, { blockSize: 64 * KiB });
    const reads = Array.from({ length: 12 }, (_, i) => cache.read(3 * 64 * KiB + i * 1000, 3000));
    await new Promise((resolve) => setImmediate(resolve));
    source.release();
    const got = await Promise.all(reads);
    expect(source.reads).toBe(1);
    got.forEach((g, i) => {
      expectBytes(g, bytes.subarray(3 * 64 * KiB + i * 1000, 3 * 64 * KiB + i * 1000 + 3000));
    });
    expect(cache.stats()).toMatchObject({ misses: 12, sourceReads: 1 });
    await cache.close();
  });

  it('loads a run of missing blocks with one source read, stores each, and retries after a failure', async () => {
    const bytes = randomBytesFrom(9, 1 * MiB);
    const inner = new MemoryBlockSource(bytes);
    const reads: [number, number][] = [];
    let fail = true;
    const source = {
      size: bytes.length,
      read: async (o: number, l: number, into?: Uint8Array) => {
        reads.push([o, l]);
        if (fail) throw new Error('backup store down');
        return inner.read(o, l, into);
      },
    };
    const cache = await memCache(source, { blockSize: 64 * KiB });
    await expect(cache.read(64 * KiB + 5, 5 * 64 * KiB)).rejects.toThrow(/backup store down/);
    // The run's read failed, then each block was asked for alone.
    const alone = [1, 2, 3, 4, 5, 6].map((k) => [k * 64 * KiB, 64 * KiB]);
    expect(reads).toEqual([[64 * KiB, 6 * 64 * KiB], ...alone]);
    // Nothing of the failed load stays in flight or cached: the same read asks the source again.
    fail = false;
    expectBytes(
      await cache.read(64 * KiB + 5, 5 * 64 * KiB),
      bytes.subarray(64 * KiB + 5, 6 * 64 * KiB + 5),
    );
    expect(reads).toEqual([[64 * KiB, 6 * 64 * KiB], ...alone, [64 * KiB, 6 * 64 * KiB]]);
    await cache.settle();
    expect(cache.stats()).toMatchObject({ sourceReads: 1, misses: 12, cachedBytes: 6 * 64 * KiB });
    // Each block of the run was stored on its own: any one of them is now a hit.
    expectBytes(
      await cache.read(4 * 64 * KiB, 100),
      bytes.subarray(4 * 64 * KiB, 4 * 64 * KiB + 100),
    );
    expect(reads).toHaveLength(8);
    await cache.close();
  });

  it('a damaged block fails only the reads that need it, not its neighbours in a run or read-ahead', async () => {
    const bytes = randomBytesFrom(10, 2 * MiB);
    const inner = new MemoryBlockSource(bytes);
    const bad = 5 * 64 * KiB;
    let open!: () => void;
    const gate = new Promise<void>((resolve) => {
      open = resolve;
    });
    const source = {
      size: bytes.length,
      // Like a backup chain: any read that covers the damaged block fails as a whole. Reads of
      // more than one block wait for the gate, so that others can join them meanwhile.
      read: async (o: number, l: number, into?: Uint8Array) => {
        if (l > 64 * KiB) await gate;
        if (o < bad + 64 * KiB && o + l > bad) throw new Error('chunk corrupt');
        return inner.read(o, l, into);
      },
    };
    const block = (b: number) => bytes.subarray(b * 64 * KiB, (b + 1) * 64 * KiB);
    const cache = await memCache(source, {
      blockSize: 64 * KiB,
      readAhead: 8,
      readAheadTrigger: 2,
    });
    // A run of blocks 3..6 is loading when reads of its good blocks 4 and 6 join it.
    const run = cache.read(3 * 64 * KiB, 4 * 64 * KiB);
    const four = cache.read(4 * 64 * KiB, 64 * KiB);
    const six = cache.read(6 * 64 * KiB, 64 * KiB);
    open();
    await expect(run).rejects.toThrow(/chunk corrupt/);
    expectBytes(await four, block(4), 'block 4, which joined the failing run');
    expectBytes(await six, block(6), 'block 6, which joined the failing run');
    // A sequential stream whose read-ahead runs across the damaged block, with every read in
    // flight at once: all but the damaged block's succeed.
    const fresh = await memCache(source, {
      blockSize: 64 * KiB,
      readAhead: 8,
      readAheadTrigger: 2,
    });
    await fresh.read(0, 64 * KiB);
    await fresh.read(64 * KiB, 64 * KiB);
    const reads = [];
    for (let b = 2; b < 12; b++) reads.push(fresh.read(b * 64 * KiB, 64 * KiB));
    const got = await Promise.allSettled(reads);
    got.forEach((r, i) => {
      const b = i + 2;
      if (b === 5) expect(r.status, 'the damaged block').toBe('rejected');
      else if (r.status === 'rejected') throw new Error(`block ${b} failed: ${r.reason}`);
      else expectBytes(r.value, block(b), `block ${b}`);
    });
    await fresh.close();
    await cache.close();
  });

  it('a read that fails settles only once each of its parts stopped writing into its buffer', async () => {
    const bytes = randomBytesFrom(12, 1 * MiB);
    const inner = new MemoryBlockSource(bytes);
    const bs = 64 * KiB;
    const hold = new Hold();
    const source = {
      size: bytes.length,
      // Block 0 is damaged and fails at once; block 2 loads slowly.
      read: async (o: number, l: number, into?: Uint8Array) => {
        if (o < bs) throw new Error('chunk corrupt');
        if (o < 3 * bs && o + l > 2 * bs) await hold.wait();
        return inner.read(o, l, into);
      },
    };
    const cache = await memCache(source, { blockSize: bs });
    // Block 1 cached: a read of blocks 0..2 is then three parts (miss, hit, miss).
    await cache.read(bs, bs);
    await cache.settle();
    const into = new Uint8Array(3 * bs);
    await expectSettlesAfterItsParts(cache.read(0, 3 * bs, into), into, hold, /chunk corrupt/);
    await cache.close();
  });

  it('reads a sequential stream ahead, and random reads not', async () => {
    const bytes = randomBytesFrom(5, 2 * MiB);
    const base = new ReadOnlyBase(bytes);
    const cache = await memCache(base, { blockSize: 64 * KiB, readAhead: 4, readAheadTrigger: 2 });
    await cache.read(0, 64 * KiB);
    await cache.read(64 * KiB, 64 * KiB);
    // Two misses, then the four blocks ahead in two source reads (runs of half a window).
    await vi.waitFor(() => expect(cache.stats().sourceReads).toBe(4));
    expect(cache.stats().readAheadLoads).toBe(4);
    const misses = cache.stats().misses;
    for (let b = 2; b < 6; b++) {
      expectBytes(
        await cache.read(b * 64 * KiB, 64 * KiB),
        bytes.subarray(b * 64 * KiB, (b + 1) * 64 * KiB),
      );
    }
    expect(cache.stats().misses, 'read-ahead blocks are hits').toBe(misses);
    await vi.waitFor(() => expect(cache.stats().readAheadLoads).toBe(8));
    for (const b of [20, 11, 25, 14]) await cache.read(b * 64 * KiB + 7, 1000);
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(cache.stats().readAheadLoads, 'no read-ahead for random reads').toBe(8);
    await cache.close();
  });
});

describe('ReadCache stream admission', () => {
  /** Reads `[0, blocks)` of 64 KiB blocks in order, as one stream, checking every byte. */
  async function stream(cache: ReadCache, bytes: Uint8Array, blocks: number): Promise<void> {
    for (let b = 0; b < blocks; b++) {
      expectBytes(
        await cache.read(b * 64 * KiB, 64 * KiB),
        bytes.subarray(b * 64 * KiB, (b + 1) * 64 * KiB),
        `block ${b}`,
      );
    }
  }

  it('holds blocks read ahead for a stream in memory the first time, and stores them the second', async () => {
    const bytes = randomBytesFrom(11, 4 * MiB);
    const cache = await memCache(new ReadOnlyBase(bytes), { blockSize: 64 * KiB, readAhead: 8 });
    await stream(cache, bytes, 64);
    await cache.settle();
    const first = cache.stats();
    // The first pass stored only the blocks it read before it was known as a stream; the stream
    // loaded all the others (read ahead, nearly all of them) and held them in memory only.
    expect(first.readAheadLoads).toBeGreaterThanOrEqual(60);
    expect(first.streamedBlocks).toBeGreaterThanOrEqual(first.readAheadLoads);
    expect(first.cachedBytes).toBeLessThanOrEqual(2 * 64 * KiB);
    expect(first.cachedBytes + first.streamedBlocks * 64 * KiB).toBe(4 * MiB);
    // The second pass reads them ahead again, and now they are stored.
    await stream(cache, bytes, 64);
    await cache.settle();
    const second = cache.stats();
    expect(second.streamedBlocks).toBe(first.streamedBlocks);
    expect(second.cachedBytes).toBe(4 * MiB);
    // The third pass is served by the cache file alone.
    await stream(cache, bytes, 64);
    expect(cache.stats().sourceReads).toBe(second.sourceReads);
    await cache.close();
  });

  it('prefetch stores the blocks a stream holds in memory, without reading them again', async () => {
    const bytes = randomBytesFrom(15, 2 * MiB);
    const cache = await memCache(new ReadOnlyBase(bytes), { blockSize: 64 * KiB, readAhead: 8 });
    await stream(cache, bytes, 8);
    await cache.settle();
    const before = cache.stats();
    // The first c blocks were stored (read before the stream was known); the stream loaded the
    // next ones and read them up to block 7, so 8.. are held, not stored: prefetch stores them
    // as they are.
    const c = before.cachedBytes / (64 * KiB);
    expect(c).toBeGreaterThan(0);
    const held = before.streamedBlocks - (8 - c);
    expect(held).toBeGreaterThan(0);
    await cache.prefetch(8 * 64 * KiB, held * 64 * KiB);
    await cache.settle();
    expect(cache.stats().sourceReads).toBe(before.sourceReads);
    expect(cache.stats().cachedBytes).toBe((c + held) * 64 * KiB);
    await cache.close();
  });

  it("stores blocks read ahead at once with 'first-read'", async () => {
    const bytes = randomBytesFrom(12, 2 * MiB);
    const cache = await memCache(new ReadOnlyBase(bytes), {
      blockSize: 64 * KiB,
      readAhead: 8,
      streamAdmission: 'first-read',
    });
    await stream(cache, bytes, 32);
    await cache.settle();
    expect(cache.stats().streamedBlocks).toBe(0);
    expect(cache.stats().cachedBytes).toBe(2 * MiB);
    await cache.close();
  });

  it('serves right bytes while read-ahead buffers are reused under interleaved streams and random reads', async () => {
    // Several streams at once, random reads between them, some read twice (stored from reused
    // buffers): every read is checked, so a buffer reused while a block in it was still wanted
    // shows up as wrong bytes.
    const bytes = randomBytesFrom(13, 8 * MiB);
    const cache = await memCache(new ReadOnlyBase(bytes), { blockSize: 64 * KiB, readAhead: 8 });
    const BLOCK = 64 * KiB;
    const rnd = randomBytesFrom(14, 4096);
    let r = 0;
    const next = () => rnd[r++ % rnd.length]!;
    const streamAt = async (startBlock: number, n: number, size: number) => {
      for (let o = startBlock * BLOCK; o < (startBlock + n) * BLOCK; o += size) {
        const len = Math.min(size, bytes.length - o);
        expectBytes(await cache.read(o, len), bytes.subarray(o, o + len), `stream read at ${o}`);
      }
    };
    for (let round = 0; round < 3; round++) {
      const work: Promise<void>[] = [
        streamAt(0, 40, 16 * KiB),
        streamAt(40, 40, 48 * KiB),
        streamAt(80, 40, 128 * KiB),
      ];
      for (let i = 0; i < 30; i++) {
        const o = (next() * 131 + next()) % (bytes.length - 5000);
        work.push(cache.read(o, 5000).then((got) => expectBytes(got, bytes.subarray(o, o + 5000))));
      }
      await Promise.all(work);
    }
    await cache.settle();
    expect(cache.stats().streamedBlocks).toBeGreaterThan(0);
    expect(cache.stats().cachedBytes).toBeGreaterThan(0);
    await cache.close();
  });
});

describe('ReadCache prefetch', () => {
  it('loads the missing blocks of a range in runs, skips cached ones, and later reads hit', async () => {
    const bytes = randomBytesFrom(21, 2 * MiB);
    const base = new ReadOnlyBase(bytes);
    const reads: [number, number][] = [];
    const source = {
      size: base.size,
      read: (o: number, l: number, into?: Uint8Array) => {
        reads.push([o, l]);
        return base.read(o, l, into);
      },
    };
    const cache = await memCache(source, { blockSize: 64 * KiB });
    await cache.read(3 * 64 * KiB, 10); // block 3 is cached before the prefetch
    reads.length = 0;
    // Blocks 1..8 (the range starts and ends inside blocks), in runs of at most 3 blocks.
    const loaded = await cache.prefetch(64 * KiB + 100, 8 * 64 * KiB - 200, { maxRun: 3 });
    expect(loaded).toBe(7 * 64 * KiB);
    expect(reads).toEqual([
      [1 * 64 * KiB, 2 * 64 * KiB],
      [4 * 64 * KiB, 3 * 64 * KiB],
      [7 * 64 * KiB, 2 * 64 * KiB],
    ]);
    await cache.settle();
    const before = cache.stats();
    expect(before.cachedBytes).toBe(8 * 64 * KiB);
    expectBytes(await cache.read(64 * KiB, 8 * 64 * KiB), bytes.subarray(64 * KiB, 9 * 64 * KiB));
    expect(reads, 'reads after the prefetch never reach the source').toHaveLength(3);
    expect(cache.stats().misses).toBe(before.misses);
    // A second prefetch of the same range loads nothing.
    expect(await cache.prefetch(64 * KiB, 8 * 64 * KiB)).toBe(0);
    expect(reads).toHaveLength(3);
    base.expectUntouched();
    await cache.close();
  });

  it('keeps at most `parallel` loads out at once', async () => {
    const bytes = randomBytesFrom(22, 4 * MiB);
    const inner = new MemoryBlockSource(bytes);
    let out = 0;
    let most = 0;
    const source = {
      size: bytes.length,
      read: async (o: number, l: number, into?: Uint8Array) => {
        most = Math.max(most, ++out);
        await new Promise((resolve) => setTimeout(resolve, 2));
        out--;
        return inner.read(o, l, into);
      },
    };
    const cache = await memCache(source, { blockSize: 64 * KiB });
    expect(await cache.prefetch(0, 4 * MiB, { maxRun: 2, parallel: 3 })).toBe(4 * MiB);
    expect(most).toBe(3);
    await cache.close();
  });

  it('a damaged block fails the prefetch after the rest is loaded, and is not cached', async () => {
    const bytes = randomBytesFrom(23, 1 * MiB);
    const inner = new MemoryBlockSource(bytes);
    const bad = 5 * 64 * KiB;
    const source = {
      size: bytes.length,
      read: async (o: number, l: number, into?: Uint8Array) => {
        if (o < bad + 64 * KiB && o + l > bad) throw new Error('chunk corrupt');
        return inner.read(o, l, into);
      },
    };
    const cache = await memCache(source, { blockSize: 64 * KiB });
    await expect(cache.prefetch(0, 1 * MiB)).rejects.toThrow(/chunk corrupt/);
    await cache.settle();
    expect(cache.stats().cachedBytes).toBe(15 * 64 * KiB);
    await expect(cache.read(bad, 10)).rejects.toThrow(/chunk corrupt/);
    await cache.close();
  });

  it('refuses ranges past the end, and any range once closed', async () => {
    const cache = await memCache(new MemoryBlockSource(new Uint8Array(256 * KiB)));
    await expect(cache.prefetch(200 * KiB, 100 * KiB)).rejects.toMatchObject({
      code: ErrorCode.RANGE,
    });
    await cache.close();
    await expect(cache.prefetch(0, 10)).rejects.toMatchObject({ code: ErrorCode.CLOSED });
  });
});

describe('ReadCache free-space floor', () => {
  it('stops growing at the floor (5% of the volume by default) and wraps around', async () => {
    const fs = new CrashFs(4 * MiB);
    const base = new ReadOnlyBase(randomBytesFrom(6, 8 * MiB));
    const cache = await memCache(base, { blockSize: 64 * KiB, maxBytes: 8 * MiB }, fs);
    for (let b = 0; b < 128; b++) {
      expectBytes(
        await cache.read(b * 64 * KiB, 64 * KiB),
        await base.read(b * 64 * KiB, 64 * KiB),
      );
    }
    const floor = Math.ceil(0.05 * 4 * MiB);
    const s = cache.stats();
    expect(s.floorBytes).toBe(floor);
    expect(fs.capacity - fs.usedBytes, 'volume keeps the floor free').toBeGreaterThanOrEqual(floor);
    // It keeps 64 KiB of slack beyond the floor for what it cannot count (file-system metadata).
    expect(fs.capacity - fs.usedBytes, 'the cache used what was above the floor').toBeLessThan(
      floor + 64 * KiB + 64 * KiB,
    );
    expect(s.fileBytes).toBeLessThan(4 * MiB);
    expect(s.blocksPruned).toBe(128 - s.fileBytes / (64 * KiB));
    await cache.close();
  });

  it('asks an injected statfs, and grows only up to the floor it reports', async () => {
    const base = new ReadOnlyBase(randomBytesFrom(11, 4 * MiB));
    const total = 100 * MiB;
    const floor = 0.05 * total;
    const calls: string[] = [];
    let cache: ReadCache | undefined;
    // A volume whose only user is the cache: free space is what the cache has not taken. Room
    // for 3 blocks above the floor and the guard's 64 KiB of slack.
    const statfs = async (path: string) => {
      calls.push(path);
      return {
        totalBytes: total,
        freeBytes: floor + 64 * KiB + 3 * 64 * KiB + 1000 - (cache?.stats().fileBytes ?? 0),
      };
    };
    cache = await memCache(base, { blockSize: 64 * KiB, maxBytes: 4 * MiB, statfs });
    for (let b = 0; b < 20; b++) await cache.read(b * 64 * KiB, 64 * KiB);
    expect(cache.stats()).toMatchObject({
      fileBytes: 3 * 64 * KiB,
      floorBytes: floor,
      blocksPruned: 17,
    });
    expect(calls.length).toBeGreaterThan(0);
    expect(calls.every((p) => p === '/c')).toBe(true);
    await cache.close();
  });

  it('takes an absolute floor, and gives space back when the volume falls below it', async () => {
    const fs = new CrashFs(4 * MiB);
    const base = new ReadOnlyBase(randomBytesFrom(7, 8 * MiB));
    const cache = await memCache(
      base,
      { blockSize: 64 * KiB, maxBytes: 8 * MiB, minFreeBytes: 1 * MiB, statfsIntervalMs: 0 },
      fs,
    );
    for (let b = 0; b < 64; b++) await cache.read(b * 64 * KiB, 64 * KiB);
    expect(fs.capacity - fs.usedBytes).toBeGreaterThanOrEqual(1 * MiB);
    const grown = cache.stats().fileBytes;
    // Someone else fills the volume: 512 KiB of it.
    const other = await fs.open('/other', 'create');
    await other.write(new Uint8Array(512 * KiB), 0);
    for (let b = 64; b < 80; b++) await cache.read(b * 64 * KiB, 64 * KiB);
    await vi.waitFor(() => expect(cache.stats().shrunkBytes).toBeGreaterThan(0));
    expect(cache.stats().fileBytes).toBeLessThan(grown);
    await vi.waitFor(() => expect(fs.capacity - fs.usedBytes).toBeGreaterThanOrEqual(1 * MiB));
    await other.close();
    await cache.close();
  });

  it('checks the per-VM minimum at start and names both numbers', async () => {
    const statfs = async () => ({ totalBytes: 500 * GiB, freeBytes: 12 * GiB });
    const err = await requireRecoverySpace({ dir: '/cache', vmSize: 100 * GiB, statfs }).catch(
      (e: unknown) => e,
    );
    expect(isIvmrError(err, ErrorCode.NO_SPACE)).toBe(true);
    const e = err as Error & { details: Record<string, unknown> };
    expect(e.message).toContain('12 GiB free');
    expect(e.message).toContain('at least 20 GiB');
    expect(e.details).toMatchObject({ freeBytes: 12 * GiB, requiredBytes: 20 * GiB });
    // 15% of a 1 TiB VM is more than 20 GiB.
    await expect(
      requireRecoverySpace({
        dir: '/cache',
        vmSize: 1024 * GiB,
        statfs: async () => ({ totalBytes: 1, freeBytes: 100 * GiB }),
      }),
    ).rejects.toThrow(/at least 153\.6 GiB/);
    await expect(
      requireRecoverySpace({ dir: '/cache', vmSize: 100 * GiB, minFreeBytes: 10 * GiB, statfs }),
    ).resolves.toMatchObject({ freeBytes: 12 * GiB });
  });

  it('adds the floor to the per-VM minimum when asked', async () => {
    const statfs = async () => ({ totalBytes: 100 * GiB, freeBytes: 12 * GiB });
    // 10 GiB for the VM + 5% of 100 GiB = 15 GiB > 12 GiB free.
    const err = await requireRecoverySpace({
      dir: '/cache',
      vmSize: 1 * GiB,
      minFreeBytes: 10 * GiB,
      floorFraction: 0.05,
      statfs,
    }).catch((e: unknown) => e);
    expect(isIvmrError(err, ErrorCode.NO_SPACE)).toBe(true);
    expect((err as Error).message).toContain('a floor of 5 GiB');
    expect((err as { details: unknown }).details).toMatchObject({
      requiredBytes: 15 * GiB,
      floorBytes: 5 * GiB,
    });
    await expect(
      requireRecoverySpace({
        dir: '/cache',
        vmSize: 1 * GiB,
        minFreeBytes: 6 * GiB,
        floorFraction: 0.05,
        statfs,
      }),
    ).resolves.toMatchObject({ freeBytes: 12 * GiB });
    await expect(
      requireRecoverySpace({ dir: '/cache', vmSize: 1, floorFraction: 1, statfs }),
    ).rejects.toMatchObject({ code: ErrorCode.INVALID_ARGUMENT });
  });
});

/** Reads the first `count` 64 KiB blocks of `cache` one by one and checks them against `bytes`. */
async function expectBlocks(cache: ReadCache, bytes: Uint8Array, count: number): Promise<void> {
  for (let b = 0; b < count; b++) {
    expectBytes(
      await cache.read(b * 64 * KiB, 64 * KiB),
      bytes.subarray(b * 64 * KiB, (b + 1) * 64 * KiB),
    );
  }
}

/** Options of a 32-slot cache of 64 KiB blocks in `dir` on `fs`, on a roomy volume. */
function ringOf32(dir: string, fs: CacheFileSystem): ReadCacheOptions {
  return {
    path: join(dir, 'c.rcache'),
    blockSize: 64 * KiB,
    maxBytes: 2 * MiB,
    readAhead: 0,
    fs,
    statfs: async () => ({ totalBytes: 100 * GiB, freeBytes: 50 * GiB }),
  };
}

describe('ReadCache persistence', () => {
  it('writes the table entries of stores in batches, and a reopened cache finds every block', async () => {
    const dir = await tempDir();
    const bytes = randomBytesFrom(9, 2 * MiB);
    const base = new ReadOnlyBase(bytes);
    const writes = { data: 0, table: 0 };
    // The 32 data writes finish together (each waits for the last to be written), so that the
    // test does not depend on how fast the machine is.
    let allWritten: () => void = () => {};
    const gate = new Promise<void>((resolve) => {
      allWritten = resolve;
    });
    const fs = wrapFs(nodeFileSystem, {
      write: async (file, data, position) => {
        if (position < dataStart(32)) {
          writes.table++;
          return file.write(data, position);
        }
        await file.write(data, position);
        if (++writes.data === 32) allWritten();
        await gate;
      },
    });
    const opts = ringOf32(dir, fs);
    const first = await ReadCache.open(base, opts);
    writes.table = 0;
    // 32 misses at once (random reads, so each block is stored as it loads).
    const order = Array.from({ length: 32 }, (_, i) => (i * 13) % 32);
    await Promise.all(order.map((b) => first.read(b * 64 * KiB + 10, 100)));
    await first.settle();
    expect(writes.data, 'one data write per block').toBe(32);
    expect(writes.table, 'table writes for 32 stores').toBeLessThanOrEqual(2);
    await first.close();
    const second = await ReadCache.open(base, opts);
    const before = base.reads;
    await expectBlocks(second, bytes, 32);
    expect(base.reads - before, 'every block was found after the reopen').toBe(0);
    await second.close();
  });

  it('writes the blocks of misses ready together with one writev per run of neighbouring slots', async () => {
    const dir = await tempDir();
    // 32 blocks, the last one short: it must end its run.
    const bytes = randomBytesFrom(11, 2 * MiB - 1000);
    const source = new GatedSource(bytes);
    const calls: number[] = [];
    const fs = wrapFs(nodeFileSystem, {
      write: (file, data, position) => {
        if (position >= dataStart(32)) calls.push(1);
        return file.write(data, position);
      },
      writev: (file, buffers, position) => {
        calls.push(buffers.length);
        return file.writev!(buffers, position);
      },
    });
    const opts = ringOf32(dir, fs);
    const first = await ReadCache.open(source, opts);
    // 32 misses loading at once; they all arrive when the source lets them go.
    const order = Array.from({ length: 32 }, (_, i) => (i * 13) % 32);
    const reads = order.map((b) => first.read(b * 64 * KiB, b === 31 ? 64 * KiB - 1000 : 100));
    source.release();
    await Promise.all(reads);
    await first.settle();
    expect(
      calls.reduce((a, n) => a + n, 0),
      'blocks written',
    ).toBe(32);
    expect(
      calls.length,
      `data write calls (blocks per call: ${calls.join(' ')})`,
    ).toBeLessThanOrEqual(4);
    expect(Math.max(...calls), 'blocks in the largest call').toBeGreaterThan(8);
    await first.close();
    // Every block landed in its own slot: a reopened cache serves them all without the source.
    const second = await ReadCache.open(source, opts);
    const before = source.reads;
    expectBytes(await second.read(0, bytes.length), bytes, 'whole disk after the reopen');
    expect(source.reads - before, 'every block was found after the reopen').toBe(0);
    await second.close();
  });

  it('reloads its index after a restart, checks each block once, drops a damaged one', async () => {
    const dir = await tempDir();
    const path = join(dir, 'disk.rcache');
    const bytes = randomBytesFrom(8, 1 * MiB);
    const base = new ReadOnlyBase(bytes);
    const opts = {
      path,
      blockSize: 64 * KiB,
      maxBytes: 1 * MiB,
      sourceId: 'vm1/disk0',
      readAhead: 0,
      // This test is about persistence, not the free-space floor: a volume with room to spare,
      // whatever the machine's disk holds while other tests run.
      statfs: async () => ({ totalBytes: 100 * GiB, freeBytes: 50 * GiB }),
    };
    const first = await ReadCache.open(base, opts);
    for (let b = 0; b < 8; b++) await first.read(b * 64 * KiB, 64 * KiB);
    await first.close();
    expect(first.stats().cachedBytes, 'every block was stored before close').toBe(8 * 64 * KiB);
    // Damage block 5's bytes in slot 5 (blocks went to slots in order).
    const fh = await open(path, 'r+');
    await fh.write(new Uint8Array([1, 2, 3]), 0, 3, dataStart(16) + 5 * 64 * KiB + 100);
    await fh.close();
    const second = await ReadCache.open(base, opts);
    const before = base.reads;
    await expectBlocks(second, bytes, 8);
    expect(base.reads - before, 'only the damaged block is loaded again').toBe(1);
    expect(second.stats()).toMatchObject({ hits: 7, misses: 1 });
    await second.close();
    const other = await ReadCache.open(base, { ...opts, sourceId: 'vm1/disk1' });
    await other.read(0, 10);
    expect(other.stats().misses, 'a cache of another source is emptied').toBe(1);
    await other.close();
  });
});

describe('ReadCache restart when stores finished out of slot order', () => {
  it('grows into free slots instead of evicting blocks it holds', async () => {
    const inner = new CrashFs();
    const base = new ReadOnlyBase(randomBytesFrom(11, 8 * 64 * KiB));
    const slot0 = dataStart(8);
    // The first cache's store of slot 0 lands last, so its block gets the newest sequence number.
    const slow = wrapFs(inner, {
      write: async (file, data, position) => {
        if (position === slot0) await new Promise((r) => setTimeout(r, 50));
        return file.write(data, position);
      },
    });
    const first = await memCache(base, { blockSize: 64 * KiB }, slow);
    for (let b = 0; b < 4; b++) await first.read(b * 64 * KiB, 64 * KiB);
    await first.close();
    expect(first.stats().cachedBytes).toBe(4 * 64 * KiB);

    const second = await memCache(base, { blockSize: 64 * KiB }, inner);
    await second.read(4 * 64 * KiB, 64 * KiB); // a new block: stored in a new slot
    await second.close(); // its store has landed
    const third = await memCache(base, { blockSize: 64 * KiB }, inner);
    const before = base.reads;
    for (let b = 0; b < 5; b++) {
      expectBytes(
        await third.read(b * 64 * KiB, 64 * KiB),
        await base.read(b * 64 * KiB, 64 * KiB),
      );
    }
    // Only the base.read calls of the comparison above: every block came from the cache.
    expect(base.reads - before, 'no block was evicted to make room').toBe(5);
    await third.close();
  });
});

describe('ReadCache stores', () => {
  it('beyond maxPendingStoreBytes waiting to be stored, a loaded block is served but not stored', async () => {
    const bs = 64 * KiB;
    const bytes = randomBytesFrom(16, 40 * bs);
    let open!: () => void;
    const gate = new Promise<void>((resolve) => {
      open = resolve;
    });
    const fs = wrapFs(new CrashFs(), {
      write: async (file, data, position) => {
        // The header is written at open; data and slot entries wait for the gate.
        if (position > 0) await gate;
        await file.write(data, position);
      },
    });
    const cache = await memCache(
      new ReadOnlyBase(bytes),
      { blockSize: bs, maxPendingStoreBytes: 32 * bs },
      fs,
    );
    // Every read is answered while no store can finish: reads never wait for the cache file.
    for (let b = 0; b < 40; b++) {
      expectBytes(await cache.read(b * bs, bs), bytes.subarray(b * bs, (b + 1) * bs), `block ${b}`);
    }
    // 32 blocks wait; the other 8 were not stored.
    expect(cache.stats().storesSkipped).toBe(8);
    open();
    await cache.settle();
    expect(cache.stats().cachedBytes).toBe(32 * bs);
    await cache.close();
  });
});

describe('ReadCache under a write overlay', () => {
  it('never holds overlay data: pruning the whole cache loses no write', async () => {
    const fs = new CrashFs();
    const base = new ReadOnlyBase(randomBytesFrom(9, 256 * KiB));
    const cache = await memCache(base, { blockSize: 16 * KiB }, fs);
    const ov = await WriteOverlay.open(cache, {
      dir: '/o',
      fs,
      reclaimSpace: (n) => cache.shrink(n),
    });
    const model = await base.read(0, base.size);
    await ov.read(0, ov.size);
    await cache.settle();
    const data = randomBytesFrom(10, 50_000);
    await ov.write(12_345, data);
    model.set(data, 12_345);
    expect(await cache.shrink(1 * GiB)).toBe(256 * KiB);
    expect(cache.stats().cachedBytes).toBe(0);
    expectBytes(await ov.read(0, ov.size), model);
    await ov.close();
    await cache.close();
    base.expectUntouched();
  });
});

describe('ReadCache synchronous reads of hot slots', () => {
  it('reads slots stored or read lately at once (readNow), others and first hits through the pool', async () => {
    const dir = await tempDir();
    const bytes = randomBytesFrom(12, 1 * MiB);
    const base = new ReadOnlyBase(bytes);
    // The real file system, counting which read each hit takes.
    const { fs: counting, calls } = countingFs();
    const opts = { path: join(dir, 'c.rcache'), blockSize: 64 * KiB, readAhead: 0, fs: counting };
    const cache = await ReadCache.open(base, opts);
    for (let b = 0; b < 4; b++) await cache.read(b * 64 * KiB, 64 * KiB);
    await cache.settle();
    calls.read = 0;
    // Just stored: hits, one block and a run of three, are read at once, with the right bytes.
    expectBytes(await cache.read(5000, 4096), bytes.subarray(5000, 9096));
    expectBytes(
      await cache.read(64 * KiB + 7, 3 * 64 * KiB - 7),
      bytes.subarray(64 * KiB + 7, 4 * 64 * KiB),
    );
    expect(calls).toEqual({ read: 0, readNow: 2 });
    await cache.close();

    // After a reopen nothing is hot: the first hit of a slot checks it through the pool; the
    // next one, within the window, is read at once.
    const again = await ReadCache.open(base, opts);
    calls.read = 0;
    calls.readNow = 0;
    expectBytes(
      await again.read(2 * 64 * KiB, 100),
      bytes.subarray(2 * 64 * KiB, 2 * 64 * KiB + 100),
    );
    expect(calls).toEqual({ read: 1, readNow: 0 });
    expectBytes(
      await again.read(2 * 64 * KiB + 100, 100),
      bytes.subarray(2 * 64 * KiB + 100, 2 * 64 * KiB + 200),
    );
    expect(calls).toEqual({ read: 1, readNow: 1 });
    await again.close();

    // A window of 0 sends every hit through the pool.
    const off = await ReadCache.open(base, { ...opts, syncReadWindowMs: 0 });
    calls.read = 0;
    calls.readNow = 0;
    for (let i = 0; i < 3; i++) await off.read(0, 4096);
    expect(calls).toEqual({ read: 3, readNow: 0 });
    await off.close();
  });
});
