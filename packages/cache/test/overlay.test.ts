import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ErrorCode, isIvmrError, MemoryBlockSource } from '@ivmr/core';
import { describe, expect, it } from 'vitest';
import { expectSettlesAfterItsParts, Hold } from '../../../scripts/testing/settling-read.js';
import { noSpaceError } from '../src/errors.js';
import { type WritableBlockSource, WriteOverlay } from '../src/index.js';
import { expectBytes } from './support/bytes.js';
import { countingFs } from './support/counting-fs.js';
import { CrashFs } from './support/crash-fs.js';
import { randomBytesFrom } from './support/prng.js';
import { ReadOnlyBase } from './support/read-only-base.js';
import { useTempDirs } from './support/temp-dir.js';

const tempDir = useTempDirs('overlay');
const KiB = 1024;

function baseOf(size: number, seed = 1): ReadOnlyBase {
  return new ReadOnlyBase(randomBytesFrom(seed, size));
}

describe('WriteOverlay reads and writes', () => {
  it('merges overlay and base at byte precision, and a partial grain keeps its base bytes', async () => {
    const dir = await tempDir();
    const base = baseOf(64 * KiB);
    const model = await base.read(0, base.size);
    const ov = await WriteOverlay.open(base, { dir });
    const writes: [number, number][] = [
      [1, 1],
      [4095, 2],
      [10_000, 9000],
      [40_960, 4096],
      [65_535, 1],
    ];
    for (const [offset, length] of writes) {
      const data = randomBytesFrom(offset, length);
      await ov.write(offset, data);
      model.set(data, offset);
    }
    for (let offset = 0; offset < base.size; offset += 3001) {
      const length = Math.min(7777, base.size - offset);
      expectBytes(await ov.read(offset, length), model.subarray(offset, offset + length));
    }
    // Only grains written take room: grains 0, 1, 2..4, 10 and 15 of 4 KiB.
    expect(ov.stats().usedBytes).toBe(7 * 4096);
    await ov.close();
    base.expectUntouched();
  });

  it('reads into a caller buffer and rejects reads and writes past the end', async () => {
    const dir = await tempDir();
    const base = baseOf(10_000);
    const ov = await WriteOverlay.open(base, { dir, grainSize: 512 });
    const into = new Uint8Array(100);
    const got = await ov.read(9_950, 50, into);
    expect(got.buffer).toBe(into.buffer);
    expect(got.length).toBe(50);
    await expect(ov.read(9_990, 20)).rejects.toMatchObject({ code: ErrorCode.RANGE });
    await expect(ov.write(9_990, new Uint8Array(20))).rejects.toMatchObject({
      code: ErrorCode.RANGE,
    });
    await expect(ov.write(-1, new Uint8Array(1))).rejects.toMatchObject({
      code: ErrorCode.INVALID_ARGUMENT,
    });
    await ov.close();
    await expect(ov.read(0, 1)).rejects.toMatchObject({ code: ErrorCode.CLOSED });
  });

  it('discard makes bytes read as the base again; writeZeroes as zeros, without data slots', async () => {
    const dir = await tempDir();
    const base = baseOf(32 * KiB);
    const model = await base.read(0, base.size);
    const ov = await WriteOverlay.open(base, { dir });
    await ov.write(0, new Uint8Array(32 * KiB).fill(7));
    await ov.discard(1000, 10_000);
    await ov.writeZeroes(16 * KiB, 8 * KiB);
    const want = new Uint8Array(32 * KiB).fill(7);
    want.set(model.subarray(1000, 11_000), 1000);
    want.fill(0, 16 * KiB, 24 * KiB);
    expectBytes(await ov.read(0, ov.size), want);
    // Grains 1 and 4..5 left the overlay (back to base / zero): 8 - 1 - 2 = 5 grains hold data.
    expect(ov.stats().usedBytes).toBe(5 * 4096);
    await ov.flush();
    await ov.close();
    const again = await WriteOverlay.open(base, { dir });
    expectBytes(await again.read(0, again.size), want);
    await again.close();
    base.expectUntouched();
  });

  it('grows (new bytes read as zeros) and shrinks (hidden base bytes stay hidden)', async () => {
    const dir = await tempDir();
    const base = baseOf(10_000);
    const model = await base.read(0, base.size);
    const ov = await WriteOverlay.open(base, { dir, grainSize: 4096 });
    await ov.write(8000, new Uint8Array(2000).fill(9));
    await ov.resize(9000);
    expect(ov.size).toBe(9000);
    await ov.resize(20_000);
    const want = new Uint8Array(20_000);
    want.set(model.subarray(0, 8000));
    want.fill(9, 8000, 9000);
    expectBytes(await ov.read(0, ov.size), want);
    await ov.close();
    const again = await WriteOverlay.open(base, { dir });
    expect(again.size).toBe(20_000);
    expectBytes(await again.read(0, again.size), want);
    await again.close();
  });

  it('satisfies the WritableBlockSource shape', async () => {
    const dir = await tempDir();
    const disk: WritableBlockSource = await WriteOverlay.open(baseOf(4096), { dir });
    await disk.write(0, new Uint8Array([1, 2, 3]));
    await disk.flush();
    expect([...(await disk.read(0, 3))]).toEqual([1, 2, 3]);
    await disk.close?.();
  });
});

describe('WriteOverlay on a full volume', () => {
  it('reports a failed write only after all its pieces landed, so a slot it freed is never overwritten later', async () => {
    const fs = new CrashFs();
    const base = baseOf(64 * KiB);
    const model = await base.read(0, base.size);
    const ov = await WriteOverlay.open(base, { dir: '/n', fs, grainSize: 4 * KiB });
    // A write across two partial grains: two fresh slots, two data writes. The first is held
    // back, the second finds the volume full.
    const held = new Hold();
    let dataWrites = 0;
    fs.hold = (path) => (path.endsWith('.data') && ++dataWrites === 1 ? held.wait() : undefined);
    fs.fault = (op, path) => {
      if (op === 'write' && path.endsWith('.data') && dataWrites === 2) {
        throw noSpaceError('write: no space left', { path });
      }
    };
    const failed = ov.write(100, new Uint8Array(4 * KiB).fill(0xaa)).then(
      () => undefined,
      (err: unknown) => err,
    );
    await held.started;
    await new Promise((resolve) => setTimeout(resolve, 10));
    // Writes to other grains meanwhile: they must not get the failed write's slots while a
    // piece of it is still on its way to one of them.
    const a = new Uint8Array(4 * KiB).fill(0x55);
    const b = new Uint8Array(4 * KiB).fill(0x77);
    await ov.write(5 * 4 * KiB, a);
    await ov.write(6 * 4 * KiB, b);
    model.set(a, 5 * 4 * KiB);
    model.set(b, 6 * 4 * KiB);
    held.release();
    expect(await failed).toMatchObject({ code: ErrorCode.NO_SPACE });
    expectBytes(await ov.read(0, ov.size), model);
    await ov.close();
  });
});

describe('WriteOverlay reads that fail', () => {
  it('settle only once each of their parts stopped writing into the buffer', async () => {
    const bytes = randomBytesFrom(4, 64 * KiB);
    const inner = new MemoryBlockSource(bytes);
    const hold = new Hold();
    const base = {
      size: bytes.length,
      // Grain 0 of the base is damaged and fails at once; grain 2 is slow.
      read: async (o: number, l: number, into?: Uint8Array) => {
        if (o < 4 * KiB) throw new Error('chunk corrupt');
        if (o < 12 * KiB && o + l > 8 * KiB) await hold.wait();
        return inner.read(o, l, into);
      },
    };
    const ov = await WriteOverlay.open(base, { dir: '/r', fs: new CrashFs(), grainSize: 4 * KiB });
    // Grain 1 in the overlay: a read of grains 0..2 is three parts (base, overlay, base).
    await ov.write(4 * KiB, new Uint8Array(4 * KiB).fill(9));
    const into = new Uint8Array(12 * KiB);
    await expectSettlesAfterItsParts(ov.read(0, 12 * KiB, into), into, hold, /chunk corrupt/);
    await ov.close();
  });
});

describe('WriteOverlay modes', () => {
  it('non-persistent: writes are readable, then vanish with their file on close', async () => {
    const dir = await tempDir();
    const base = baseOf(64 * KiB);
    const pristine = await base.read(0, base.size);
    const ov = await WriteOverlay.open(base, { dir, mode: 'non-persistent' });
    await ov.write(100, new Uint8Array(10_000).fill(5));
    await ov.flush();
    expect((await ov.read(100, 3)).every((b) => b === 5)).toBe(true);
    expect(await readdir(dir)).toEqual(['overlay.sandbox.data']);
    await ov.close();
    expect(await readdir(dir)).toEqual([]);
    const again = await WriteOverlay.open(base, { dir, mode: 'non-persistent' });
    expectBytes(await again.read(0, again.size), pristine);
    await again.close();
    base.expectUntouched();
  });

  it('non-persistent does not touch a persistent overlay of the same name', async () => {
    const dir = await tempDir();
    const base = baseOf(8 * KiB);
    const p = await WriteOverlay.open(base, { dir });
    await p.write(0, new Uint8Array([(await base.read(0, 1))[0]! ^ 0xff]));
    await p.close();
    const sandbox = await WriteOverlay.open(base, { dir, mode: 'non-persistent' });
    // The sandbox starts from the base alone, not from the persistent overlay.
    expect((await sandbox.read(0, 1))[0]).toBe((await base.read(0, 1))[0]);
    await sandbox.close();
    const back = await WriteOverlay.open(base, { dir });
    expect((await back.read(0, 1))[0]).toBe((await base.read(0, 1))[0]! ^ 0xff);
    await back.close();
  });

  it('read-only: shows an existing overlay, rejects every change, writes no file', async () => {
    const dir = await tempDir();
    const base = baseOf(8 * KiB);
    const p = await WriteOverlay.open(base, { dir });
    await p.write(10, new Uint8Array([1, 2, 3]));
    await p.close();
    const before = await readFile(join(dir, 'overlay.meta'));
    const ro = await WriteOverlay.open(base, { dir, mode: 'read-only' });
    expect([...(await ro.read(10, 3))]).toEqual([1, 2, 3]);
    for (const change of [
      () => ro.write(0, new Uint8Array(1)),
      () => ro.discard(0, 1),
      () => ro.writeZeroes(0, 1),
      () => ro.resize(1),
    ]) {
      const err = await change().catch((e: unknown) => e);
      expect(isIvmrError(err, ErrorCode.UNSUPPORTED)).toBe(true);
      expect((err as { details: { reason: string } }).details.reason).toBe('EROFS');
    }
    await ro.close();
    expect(Buffer.compare(await readFile(join(dir, 'overlay.meta')), before)).toBe(0);
    const none = await WriteOverlay.open(base, { dir: join(dir, 'none'), mode: 'read-only' });
    expectBytes(await none.read(0, none.size), await base.read(0, base.size));
    await none.close();
    await expect(stat(join(dir, 'none'))).rejects.toThrow();
  });

  it('seal inside whileQuiesced refuses the writes that waited for the pause, keeps the rest', async () => {
    const dir = await tempDir();
    const base = baseOf(8 * KiB);
    const ov = await WriteOverlay.open(base, { dir });
    await ov.write(0, new Uint8Array([7]));
    let waiting: Promise<unknown> | undefined;
    await ov.whileQuiesced(async () => {
      // This write starts while writes are paused: it must not be acknowledged after the seal.
      waiting = ov.write(1, new Uint8Array([8])).catch((e: unknown) => e);
      await new Promise((r) => setTimeout(r, 10));
      ov.seal();
    });
    const err = await waiting;
    expect(isIvmrError(err, ErrorCode.UNSUPPORTED)).toBe(true);
    expect(ov.sealed).toBe(true);
    expect([...(await ov.read(0, 2))]).toEqual([7, (await base.read(1, 1))[0]]);
    await expect(ov.discard(0, 1)).rejects.toMatchObject({ code: ErrorCode.UNSUPPORTED });
    await ov.flush();
    await ov.close();
    const again = await WriteOverlay.open(base, { dir });
    expect((await again.read(0, 1))[0]).toBe(7);
    await again.close();
  });

  it('refuses an overlay made with another grain size or over a base of another size', async () => {
    const dir = await tempDir();
    const p = await WriteOverlay.open(baseOf(8 * KiB), { dir, grainSize: 512 });
    await p.close();
    await expect(
      WriteOverlay.open(baseOf(8 * KiB), { dir, grainSize: 4096 }),
    ).rejects.toMatchObject({ code: ErrorCode.INVALID_ARGUMENT });
    await expect(WriteOverlay.open(baseOf(9 * KiB), { dir })).rejects.toMatchObject({
      code: ErrorCode.INVALID_ARGUMENT,
    });
    await expect(
      WriteOverlay.open(baseOf(8 * KiB), { dir: `${dir}/x`, grainSize: 3000 }),
    ).rejects.toMatchObject({
      code: ErrorCode.INVALID_ARGUMENT,
    });
  });
});

describe('WriteOverlay verifier', () => {
  const base = () => new MemoryBlockSource(randomBytesFrom(3, 64 * KiB));

  it('changes after a crash that may have lost unflushed writes', async () => {
    let fs = new CrashFs();
    const ov = await WriteOverlay.open(base(), { dir: '/v', fs });
    const v1 = ov.verifier;
    await ov.write(0, new Uint8Array(100).fill(1));
    await ov.flush();
    await ov.write(5000, new Uint8Array(100).fill(2));
    fs = fs.crash(1);
    const after = await WriteOverlay.open(base(), { dir: '/v', fs });
    expect(Buffer.compare(after.verifier, v1)).not.toBe(0);
    expect(after.epoch).toBe(2);
    expect((await after.read(0, 1))[0]).toBe(1);
    await after.close();
  });

  it('stays after a clean close, and after a crash of a run that wrote nothing', async () => {
    let fs = new CrashFs();
    const ov = await WriteOverlay.open(base(), { dir: '/v', fs });
    const v1 = ov.verifier;
    await ov.write(0, new Uint8Array(100).fill(1));
    await ov.close();
    const clean = await WriteOverlay.open(base(), { dir: '/v', fs });
    expect(Buffer.compare(clean.verifier, v1)).toBe(0);
    await clean.read(0, 100);
    fs = fs.crash(2);
    const readOnlyRun = await WriteOverlay.open(base(), { dir: '/v', fs });
    expect(Buffer.compare(readOnlyRun.verifier, v1)).toBe(0);
    expect(readOnlyRun.epoch).toBe(1);
    await readOnlyRun.close();
  });

  it('is a fresh random value per non-persistent overlay', async () => {
    const fs = new CrashFs();
    const a = await WriteOverlay.open(base(), { dir: '/s', fs, mode: 'non-persistent' });
    const va = a.verifier;
    await a.close();
    const b = await WriteOverlay.open(base(), { dir: '/s', fs, mode: 'non-persistent' });
    expect(Buffer.compare(b.verifier, va)).not.toBe(0);
    await b.close();
  });
});

describe('WriteOverlay durability machinery', () => {
  it('checkpoints the journal into a map snapshot and replays both', async () => {
    const dir = await tempDir();
    const base = baseOf(256 * KiB);
    const model = await base.read(0, base.size);
    const ov = await WriteOverlay.open(base, { dir, checkpointAfterBytes: 2048 });
    for (let i = 0; i < 200; i++) {
      const offset = (i * 7919) % (base.size - 5000);
      const data = randomBytesFrom(i, 1 + ((i * 31) % 5000));
      await ov.write(offset, data);
      model.set(data, offset);
      if (i % 5 === 4) await ov.flush();
    }
    await ov.discard(0, 64 * KiB);
    model.set(await base.read(0, 64 * KiB), 0);
    await ov.flush();
    expect(ov.stats().checkpoints).toBeGreaterThanOrEqual(2);
    expect((await stat(join(dir, 'overlay.map'))).size).toBeGreaterThan(72);
    await ov.close();
    const again = await WriteOverlay.open(base, { dir });
    expectBytes(await again.read(0, again.size), model);
    await again.close();
  });

  it('reports a damaged map snapshot instead of losing what it held', async () => {
    const dir = await tempDir();
    const base = baseOf(64 * KiB);
    const ov = await WriteOverlay.open(base, { dir, checkpointAfterBytes: 1 });
    await ov.write(0, new Uint8Array(8192).fill(3));
    await ov.close();
    const map = await readFile(join(dir, 'overlay.map'));
    map.writeUInt8(map.readUInt8(map.length - 1) ^ 0xff, map.length - 1);
    await writeFile(join(dir, 'overlay.map'), map);
    await expect(WriteOverlay.open(base, { dir })).rejects.toMatchObject({
      code: ErrorCode.FORMAT,
    });
  });

  it('after a failed sync, refuses changes until reopened, and reopening keeps the last flush', async () => {
    let fs = new CrashFs();
    const base = baseOf(64 * KiB);
    const ov = await WriteOverlay.open(base, { dir: '/f', fs });
    await ov.write(0, new Uint8Array(10).fill(1));
    await ov.flush();
    await ov.write(0, new Uint8Array(10).fill(2));
    fs.fault = (op, path) => {
      if (op === 'sync' && path.endsWith('.data')) throw new Error('EIO');
    };
    await expect(ov.flush()).rejects.toMatchObject({ code: ErrorCode.IO });
    await expect(ov.write(0, new Uint8Array(1))).rejects.toMatchObject({ code: ErrorCode.IO });
    fs.fault = undefined;
    await ov.close();
    fs = fs.crash(5);
    const again = await WriteOverlay.open(base, { dir: '/f', fs });
    expect((await again.read(0, 1))[0]).toBe(1);
    expect(again.epoch).toBe(2);
    await again.close();
  });

  it('overlapping concurrent writes end with one of them per byte range, whole', async () => {
    const dir = await tempDir();
    const base = baseOf(64 * KiB);
    const ov = await WriteOverlay.open(base, { dir, grainSize: 512 });
    const a = new Uint8Array(3000).fill(0xaa);
    const b = new Uint8Array(3000).fill(0xbb);
    await Promise.all([ov.write(1000, a), ov.write(1000, b), ov.read(0, 8000)]);
    const got = await ov.read(1000, 3000);
    expect(got.every((x) => x === got[0]) && (got[0] === 0xaa || got[0] === 0xbb)).toBe(true);
    await ov.close();
  });
});

describe('WriteOverlay synchronous reads of recent slots', () => {
  it('reads back grains written or read lately at once (readNow), others through the pool', async () => {
    const dir = await tempDir();
    const base = baseOf(256 * KiB);
    const { fs, calls } = countingFs();
    const opts = { dir, grainSize: 4 * KiB, fs };
    const ov = await WriteOverlay.open(base, opts);
    const data = randomBytesFrom(3, 64 * KiB);
    await ov.write(16 * KiB, data);
    await ov.flush();
    calls.read = 0;
    calls.readNow = 0;
    // Just written: read back at once, in part and across grains, with the right bytes.
    expectBytes(await ov.read(16 * KiB + 100, 5000), data.subarray(100, 5100));
    expectBytes(await ov.read(16 * KiB, 64 * KiB), data);
    expect(calls).toEqual({ read: 0, readNow: 2 });
    // A read that also covers unwritten grains takes those from the base.
    const model = await base.read(0, 256 * KiB);
    model.set(data, 16 * KiB);
    expectBytes(await ov.read(0, 128 * KiB), model.subarray(0, 128 * KiB));
    expect(calls).toEqual({ read: 0, readNow: 3 });
    await ov.close();

    // After a reopen nothing is recent: the first read of a slot goes through the pool, the
    // next one within the window is done at once. A partial first read makes no slot recent.
    const again = await WriteOverlay.open(base, opts);
    calls.read = 0;
    calls.readNow = 0;
    expectBytes(await again.read(20 * KiB + 1, 100), data.subarray(4 * KiB + 1, 4 * KiB + 101));
    expectBytes(await again.read(20 * KiB + 1, 100), data.subarray(4 * KiB + 1, 4 * KiB + 101));
    expect(calls).toEqual({ read: 2, readNow: 0 });
    expectBytes(await again.read(20 * KiB, 8 * KiB), data.subarray(4 * KiB, 12 * KiB));
    expectBytes(await again.read(24 * KiB + 7, 100), data.subarray(8 * KiB + 7, 8 * KiB + 107));
    expect(calls).toEqual({ read: 3, readNow: 1 });
    await again.close();

    // A window of 0 sends every read through the pool.
    const off = await WriteOverlay.open(base, { ...opts, syncReadWindowMs: 0 });
    calls.read = 0;
    calls.readNow = 0;
    await off.write(0, randomBytesFrom(4, 4 * KiB));
    for (let i = 0; i < 3; i++) await off.read(0, 4 * KiB);
    expect(calls).toEqual({ read: 3, readNow: 0 });
    await off.close();
  });
});
