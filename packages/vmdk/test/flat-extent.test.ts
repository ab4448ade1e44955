import {
  type BlockSource,
  checkReadRange,
  ErrorCode,
  isIvmrError,
  MemoryBlockSource,
} from '@ivmr/core';
import { describe, expect, it } from 'vitest';
import { type AllocationInfo, FlatExtent, type WritableBlockSource } from '../src/index.js';
import { patternBytes } from './helpers/bytes.js';

/** A writable layer over memory that records its calls, as the cache package will provide. */
class MemoryLayer implements WritableBlockSource, AllocationInfo {
  readonly size: number;
  readonly bytes: Uint8Array;
  readonly writes: { offset: number; length: number }[] = [];
  flushes = 0;
  allocatedBytes = 0;

  constructor(bytes: Uint8Array) {
    this.bytes = bytes;
    this.size = bytes.length;
  }

  async read(offset: number, length: number, into?: Uint8Array): Promise<Uint8Array> {
    checkReadRange(this.size, offset, length, into);
    const out = into ? into.subarray(0, length) : new Uint8Array(length);
    out.set(this.bytes.subarray(offset, offset + length));
    return out;
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    checkReadRange(this.size, offset, data.length);
    this.bytes.set(data, offset);
    this.writes.push({ offset, length: data.length });
  }

  async flush(): Promise<void> {
    this.flushes++;
  }
}

async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error('expected a rejection');
}

describe('FlatExtent', () => {
  const real = 10 * 512 + 100; // not a whole number of sectors
  const disk = patternBytes('flat', real);

  it('has the size rounded up to whole sectors and reads the source below its real end', async () => {
    const extent = new FlatExtent(new MemoryBlockSource(disk));
    expect(extent.size).toBe(11 * 512);
    expect(extent.sourceSize).toBe(real);
    expect(await extent.read(0, real)).toEqual(new Uint8Array(disk));
    expect(await extent.read(700, 50)).toEqual(new Uint8Array(disk.subarray(700, 750)));
  });

  it('reads zeros past the real end, also in a read that straddles it, into a caller buffer', async () => {
    const extent = new FlatExtent(new MemoryBlockSource(disk));
    const into = new Uint8Array(1000).fill(0xee);
    const got = await extent.read(real - 88, 500, into);
    expect(got.length).toBe(500);
    expect(got.subarray(0, 88)).toEqual(new Uint8Array(disk.subarray(real - 88)));
    expect(got.subarray(88).every((b) => b === 0)).toBe(true);
    expect(into[500]).toBe(0xee);
    const pad = await extent.read(real, extent.size - real);
    expect(pad.length).toBe(412);
    expect(pad.every((b) => b === 0)).toBe(true);
  });

  it('rejects reads past the rounded size with IVMR_RANGE', async () => {
    const extent = new FlatExtent(new MemoryBlockSource(disk));
    const err = await rejection(extent.read(extent.size - 10, 11));
    expect(isIvmrError(err, ErrorCode.RANGE)).toBe(true);
  });

  it('keeps a size that is already whole sectors', () => {
    expect(new FlatExtent(new MemoryBlockSource(new Uint8Array(4096))).size).toBe(4096);
  });

  it('is read-only over a plain block source', async () => {
    const extent = new FlatExtent(new MemoryBlockSource(disk));
    expect(extent.writable).toBe(false);
    expect(
      isIvmrError(await rejection(extent.write(0, new Uint8Array(512))), ErrorCode.UNSUPPORTED),
    ).toBe(true);
    await extent.flush();
  });

  it('passes writes and flushes to a writable layer', async () => {
    const layer = new MemoryLayer(new Uint8Array(disk));
    const extent = new FlatExtent(layer);
    expect(extent.writable).toBe(true);
    const data = patternBytes('w', 1024);
    await extent.write(512, data);
    expect(layer.writes).toEqual([{ offset: 512, length: 1024 }]);
    expect(await extent.read(512, 1024)).toEqual(new Uint8Array(data));
    await extent.flush();
    expect(layer.flushes).toBe(1);
  });

  it('accepts zeros past the real end but writes only the part inside the source', async () => {
    const layer = new MemoryLayer(new Uint8Array(disk));
    const extent = new FlatExtent(layer);
    const lastSector = new Uint8Array(512);
    lastSector.set(patternBytes('last', 100));
    await extent.write(10 * 512, lastSector);
    expect(layer.writes).toEqual([{ offset: 10 * 512, length: 100 }]);
    expect(await extent.read(10 * 512, 512)).toEqual(lastSector);
  });

  it('refuses non-zero bytes past the real end, writing nothing', async () => {
    const layer = new MemoryLayer(new Uint8Array(disk));
    const extent = new FlatExtent(layer);
    const err = await rejection(extent.write(10 * 512, new Uint8Array(512).fill(1)));
    expect(isIvmrError(err, ErrorCode.RANGE)).toBe(true);
    expect(layer.writes).toEqual([]);
    expect(
      isIvmrError(await rejection(extent.write(extent.size, new Uint8Array(1))), ErrorCode.RANGE),
    ).toBe(true);
  });

  it('reports used bytes from the source allocation, in whole sectors, or the size when unknown', () => {
    const layer = new MemoryLayer(new Uint8Array(disk));
    const extent = new FlatExtent(layer);
    expect(extent.used).toBe(0);
    layer.allocatedBytes = 1;
    expect(extent.used).toBe(512);
    layer.allocatedBytes = 4096;
    expect(extent.used).toBe(4096);
    layer.allocatedBytes = real;
    expect(extent.used).toBe(extent.size);
    const plain: BlockSource = new MemoryBlockSource(disk);
    expect(new FlatExtent(plain).used).toBe(11 * 512);
  });
});
