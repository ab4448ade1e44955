import { execFile } from 'node:child_process';
import { mkdtemp, rmdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ErrorCode, isIvmrError } from '@ivmr/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nodeStatFs, ReadCache, WriteOverlay } from '../src/index.js';
import { expectBytes } from './support/bytes.js';
import { randomBytesFrom } from './support/prng.js';
import { ReadOnlyBase } from './support/read-only-base.js';
import { openFilesUnder } from './support/temp-dir.js';

// A real full volume: a 32 MiB tmpfs holding both the read cache and the overlay of a 48 MiB
// disk. Mounting needs root; without it this test fails (it must not pass by skipping).

const run = promisify(execFile);
const MiB = 1024 * 1024;
let mountDir = '';
let mountError: unknown;

beforeAll(async () => {
  mountDir = await mkdtemp(join(tmpdir(), 'ivmr-tmpfs-'));
  try {
    await run('mount', ['-t', 'tmpfs', '-o', 'size=32m', 'tmpfs', mountDir]);
  } catch (err) {
    mountError = err;
  }
});

afterAll(async () => {
  if (mountError === undefined) {
    // A failed test may leave files open; a lazy unmount still detaches the volume.
    await run('umount', [mountDir]).catch(() => run('umount', ['-l', mountDir]));
  }
  await rmdir(mountDir);
});

describe('a full cache volume (32 MiB tmpfs)', () => {
  it('shrinks the read cache first, then fails the write with IVMR_NOSPC, losing nothing acknowledged', async () => {
    if (mountError !== undefined) {
      expect.fail(
        `cannot mount a 32 MiB tmpfs at ${mountDir} (this test needs root): ${String(mountError)}`,
      );
    }
    const base = new ReadOnlyBase(randomBytesFrom(21, 48 * MiB));
    const model = await base.read(0, base.size);
    const cache = await ReadCache.open(base, {
      path: join(mountDir, 'cache', 'disk.rcache'),
      blockSize: 64 * 1024,
      maxBytes: 64 * MiB,
      minFreeBytes: 2 * MiB,
      readAhead: 0,
    });
    // Fill the cache with reads until the floor stops it.
    for (let at = 0; at < 40 * MiB; at += MiB) await cache.read(at, MiB);
    await cache.settle();
    const filled = cache.stats().fileBytes;
    expect(filled, 'cache grew to fill the volume down to its floor').toBeGreaterThan(24 * MiB);
    expect((await nodeStatFs(mountDir)).freeBytes).toBeGreaterThanOrEqual(2 * MiB);

    let reclaims = 0;
    const overlay = await WriteOverlay.open(cache, {
      dir: join(mountDir, 'overlay'),
      reclaimSpace: async (n) => {
        reclaims++;
        return cache.shrink(n);
      },
    });
    let noSpace: unknown;
    let shrunkBeforeFailure = 0;
    let acknowledged = 0;
    for (let i = 0; i < 192; i++) {
      // 256 KiB writes, not grain-aligned, in new places each time.
      const offset = i * 256 * 1024 + (i % 7) * 100;
      const data = randomBytesFrom(1000 + i, Math.min(256 * 1024, base.size - offset));
      try {
        await overlay.write(offset, data);
      } catch (err) {
        noSpace = err;
        shrunkBeforeFailure = cache.stats().shrunkBytes;
        break;
      }
      model.set(data, offset);
      acknowledged++;
      if (i % 8 === 7) await overlay.flush();
    }
    expect(isIvmrError(noSpace, ErrorCode.NO_SPACE), `got ${String(noSpace)}`).toBe(true);
    expect((noSpace as Error).message).toMatch(/write of \d+ bytes at offset \d+/);
    expect(acknowledged, 'writes acknowledged before the volume was full').toBeGreaterThan(40);
    expect(reclaims, 'the overlay asked the read cache for room').toBeGreaterThan(0);
    expect(
      shrunkBeforeFailure,
      'the read cache gave space back before a write failed',
    ).toBeGreaterThan(20 * MiB);
    expect(cache.stats().fileBytes).toBeLessThan(filled);

    // Everything acknowledged is there, survives a flush on the full volume and a reopen.
    await overlay.flush();
    expectBytes(await overlay.read(0, overlay.size), model, 'after NOSPC');
    await overlay.close();
    await cache.close();
    const again = await WriteOverlay.open(base, { dir: join(mountDir, 'overlay') });
    expectBytes(await again.read(0, again.size), model, 'after reopening');
    await again.close();
    expect(openFilesUnder(mountDir)).toEqual([]);
    base.expectUntouched();
  });
});
