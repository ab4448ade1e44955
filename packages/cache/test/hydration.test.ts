import { execFile } from 'node:child_process';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { type HydrationProgress, startHydration, WriteOverlay } from '../src/index.js';
import { expectBytes } from './support/bytes.js';
import { Prng, randomBytesFrom } from './support/prng.js';
import { ReadOnlyBase } from './support/read-only-base.js';
import { useTempDirs } from './support/temp-dir.js';

const tempDir = useTempDirs('hydrate');
const KiB = 1024;
const MiB = 1024 * KiB;

/**
 * Writes (and discards) at random places and flushes every few changes, until `stop()`; the
 * last changes may stay unflushed. Resolves `stop()` once the loop has ended.
 */
function randomWriter(overlay: WriteOverlay, seed: number) {
  const rng = new Prng(seed);
  let running = true;
  let changes = 0;
  const loop = (async () => {
    while (running) {
      const length = rng.int(1, 64 * KiB);
      const offset = rng.int(0, overlay.size - length);
      if (rng.int(0, 9) === 0) await overlay.discard(offset, length);
      else await overlay.write(offset, randomBytesFrom(rng.u32(), length));
      changes++;
      if (rng.int(0, 3) === 0) await overlay.flush();
      await new Promise((resolve) => setTimeout(resolve, rng.int(0, 3)));
    }
  })();
  return {
    get changes() {
      return changes;
    },
    async stop() {
      running = false;
      await loop;
    },
  };
}

/** Waits until a hydration past its first pass has copied every changed chunk again. */
async function caughtUp(h: { progress(): { dirtyBytes: number } }): Promise<void> {
  while (h.progress().dirtyBytes > 0) await new Promise((r) => setTimeout(r, 5));
}

describe('hydration', () => {
  it('copies the merged disk byte for byte while writes go on, then follows them until switch-over', async () => {
    const dir = await tempDir();
    const base = new ReadOnlyBase(randomBytesFrom(31, 16 * MiB));
    const overlay = await WriteOverlay.open(base, { dir: join(dir, 'overlay') });
    await overlay.write(3 * MiB + 5, randomBytesFrom(32, 100 * KiB));
    const events: HydrationProgress[] = [];
    const target = join(dir, 'target.raw');
    const h = await startHydration(overlay, target, {
      chunkSize: 256 * KiB,
      rateBytesPerSec: 64 * MiB,
      onProgress: (p) => events.push(p),
    });
    const writer = randomWriter(overlay, 33);
    await h.done;
    const duringCopy = writer.changes;
    // Keep writing a while after the first pass: the target must follow.
    while (writer.changes < duringCopy + 30) await new Promise((r) => setTimeout(r, 5));
    let merged: Uint8Array = new Uint8Array(0);
    await h.switchOver(async () => {
      // Writes are paused here: this is the disk the target must equal.
      merged = await overlay.read(0, overlay.size);
    });
    await writer.stop();
    expect(duringCopy, 'writes while the first pass ran').toBeGreaterThan(5);
    const copy = await readFile(target);
    expectBytes(copy, merged, 'target');
    // The same check by qemu-img, on the files.
    await writeFile(join(dir, 'merged.raw'), merged);
    const { stdout } = await promisify(execFile)('qemu-img', [
      'compare',
      '-f',
      'raw',
      '-F',
      'raw',
      target,
      join(dir, 'merged.raw'),
    ]);
    expect(stdout).toContain('Images are identical');
    // Progress: the first pass only moves forward, and ends with the switch-over.
    const copied = events.map((e) => e.copiedBytes);
    expect(copied).toEqual([...copied].sort((a, b) => a - b));
    expect(events.at(-1)).toMatchObject({
      phase: 'done',
      copiedBytes: 16 * MiB,
      totalBytes: 16 * MiB,
    });
    expect(events.some((e) => e.phase === 'mirroring')).toBe(true);
    await expect(stat(`${target}.hydration.json`)).rejects.toThrow();
    await overlay.close();
    base.expectUntouched();
  });

  it('keeps to its rate limit, and pause holds it', async () => {
    const dir = await tempDir();
    const base = new ReadOnlyBase(randomBytesFrom(34, 4 * MiB));
    const t0 = performance.now();
    const h = await startHydration(base, join(dir, 't.raw'), {
      chunkSize: 256 * KiB,
      rateBytesPerSec: 8 * MiB,
    });
    h.pause();
    await new Promise((r) => setTimeout(r, 150));
    const whilePaused = h.progress().copiedBytes;
    expect(whilePaused, 'at most the chunk in progress when paused').toBeLessThanOrEqual(256 * KiB);
    await new Promise((r) => setTimeout(r, 100));
    expect(h.progress()).toMatchObject({ copiedBytes: whilePaused, paused: true });
    h.resume();
    await h.done;
    const secs = (performance.now() - t0) / 1000;
    // 4 MiB at 8 MiB/s, less the first chunk's burst, plus 250 ms paused.
    expect(secs).toBeGreaterThan(0.4 + 0.2);
    expect(h.progress().bytesPerSec).toBeLessThan(8 * MiB);
    await h.switchOver();
    expectBytes(await readFile(join(dir, 't.raw')), await base.read(0, base.size));
  });

  it('resumes after a restart where it stopped, and stays exact', async () => {
    const dir = await tempDir();
    const base = new ReadOnlyBase(randomBytesFrom(35, 16 * MiB));
    const ovDir = join(dir, 'overlay');
    const target = join(dir, 'target.raw');
    let overlay = await WriteOverlay.open(base, { dir: ovDir });
    let writer = randomWriter(overlay, 36);
    const first = await startHydration(overlay, target, {
      chunkSize: 256 * KiB,
      rateBytesPerSec: 24 * MiB,
    });
    while (first.progress().copiedBytes < 6 * MiB) await new Promise((r) => setTimeout(r, 10));
    await writer.stop();
    await first.stop();
    await expect(first.done).rejects.toMatchObject({ code: 'IVMR_ABORTED' });
    const stoppedAt = first.progress().copiedBytes;
    await overlay.close();

    // The restart: a new overlay object over the same files, a new hydration of the same target.
    overlay = await WriteOverlay.open(base, { dir: ovDir });
    const second = await startHydration(overlay, target, { chunkSize: 256 * KiB });
    const { resumedFromBytes, dirtyBytes } = second.progress();
    expect(resumedFromBytes).toBe(stoppedAt);
    await second.done;
    await caughtUp(second);
    expect(
      second.progress().bytesRead,
      'the resumed run read what was left and the chunks that changed after their copy, once',
    ).toBe(16 * MiB - stoppedAt + dirtyBytes);
    // Writes after the first pass are followed until the switch-over.
    writer = randomWriter(overlay, 37);
    while (writer.changes < 20) await new Promise((r) => setTimeout(r, 5));
    await writer.stop();
    let merged: Uint8Array = new Uint8Array(0);
    await second.switchOver(async () => {
      merged = await overlay.read(0, overlay.size);
    });
    expectBytes(await readFile(target), merged, 'target after resume');
    await overlay.close();
  });

  it('finishes the first pass and switches over while a writer outpaces the copy rate', async () => {
    const dir = await tempDir();
    const base = new ReadOnlyBase(randomBytesFrom(40, 2 * MiB));
    const overlay = await WriteOverlay.open(base, { dir: join(dir, 'overlay') });
    const writer = randomWriter(overlay, 41);
    // About 32 KiB changed per ms against 4 MiB/s of copying: the changed set never empties.
    const h = await startHydration(overlay, join(dir, 'target.raw'), {
      chunkSize: 64 * KiB,
      rateBytesPerSec: 4 * MiB,
      catchUpMs: 100,
    });
    await h.done;
    expect(h.progress().phase).toBe('mirroring');
    let merged: Uint8Array = new Uint8Array(0);
    await h.switchOver(async () => {
      merged = await overlay.read(0, overlay.size);
    });
    await writer.stop();
    expect(writer.changes).toBeGreaterThan(100);
    expectBytes(await readFile(join(dir, 'target.raw')), merged, 'target at the switch-over');
    await overlay.close();
  });

  it('compares every copied chunk again when the disk changed while it was stopped', async () => {
    const dir = await tempDir();
    const base = new ReadOnlyBase(randomBytesFrom(38, 4 * MiB));
    const target = join(dir, 'target.raw');
    const overlay = await WriteOverlay.open(base, { dir: join(dir, 'overlay') });
    const first = await startHydration(overlay, target, { chunkSize: 64 * KiB });
    await first.done;
    await first.stop();
    // Untracked: written and committed while no hydration watched.
    await overlay.write(100 * KiB, randomBytesFrom(39, 300 * KiB));
    await overlay.flush();
    const second = await startHydration(overlay, target, { chunkSize: 64 * KiB });
    await second.done;
    await caughtUp(second);
    expect(second.progress().resumedFromBytes).toBe(4 * MiB);
    expect(second.progress().bytesRead, 'every copied chunk read again').toBe(4 * MiB);
    expect(second.progress().bytesWritten, 'only the changed chunks rewritten').toBe(6 * 64 * KiB);
    await second.switchOver();
    expectBytes(await readFile(target), await overlay.read(0, overlay.size));
    await overlay.close();
  });
});
