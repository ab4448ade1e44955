import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { NfsError } from '../src/errors.js';
import type { FileAttributes, FileType, SetAttributes } from '../src/filesystem.js';
import {
  readFattr3,
  readSattr3,
  readWccData,
  writeFattr3,
  writeSattr3,
  writeWccData,
} from '../src/nfs3/types.js';
import { XdrReader } from '../src/xdr/reader.js';
import { XdrWriter } from '../src/xdr/writer.js';

/** A short run locally, a longer one in CI. */
const numRuns = (local: number, ci: number) => (process.env.CI ? ci : local);

type Item =
  | { t: 'u32'; v: number }
  | { t: 'i32'; v: number }
  | { t: 'bool'; v: boolean }
  | { t: 'u64'; v: bigint }
  | { t: 'u64n'; v: number }
  | { t: 'fixed'; v: Uint8Array }
  | { t: 'opaque'; v: Uint8Array }
  | { t: 'string'; v: string };

const item: fc.Arbitrary<Item> = fc.oneof(
  fc.record({ t: fc.constant('u32' as const), v: fc.nat({ max: 0xffff_ffff }) }),
  fc.record({
    t: fc.constant('i32' as const),
    v: fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }),
  }),
  fc.record({ t: fc.constant('bool' as const), v: fc.boolean() }),
  fc.record({ t: fc.constant('u64' as const), v: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }) }),
  fc.record({ t: fc.constant('u64n' as const), v: fc.maxSafeNat() }),
  fc.record({ t: fc.constant('fixed' as const), v: fc.uint8Array({ maxLength: 40 }) }),
  fc.record({ t: fc.constant('opaque' as const), v: fc.uint8Array({ maxLength: 40 }) }),
  fc.record({
    t: fc.constant('string' as const),
    v: fc.string({ unit: 'grapheme', maxLength: 20 }),
  }),
);

function writeItem(w: XdrWriter, it: Item): void {
  switch (it.t) {
    case 'u32':
      w.u32(it.v);
      break;
    case 'i32':
      w.i32(it.v);
      break;
    case 'bool':
      w.bool(it.v);
      break;
    case 'u64':
      w.u64(it.v);
      break;
    case 'u64n':
      w.u64n(it.v);
      break;
    case 'fixed':
      w.fixed(it.v);
      break;
    case 'opaque':
      w.opaque(it.v);
      break;
    case 'string':
      w.string(it.v);
      break;
  }
}

function readItem(r: XdrReader, it: Item): unknown {
  switch (it.t) {
    case 'u32':
      return r.u32();
    case 'i32':
      return r.i32();
    case 'bool':
      return r.bool();
    case 'u64':
      return r.u64();
    case 'u64n':
      return r.u64n();
    case 'fixed':
      return new Uint8Array(r.fixed(it.v.length));
    case 'opaque':
      return new Uint8Array(r.opaque(1000));
    case 'string':
      return r.string(1000);
  }
}

const xdrSize = (it: Item): number => {
  const pad = (n: number) => n + ((4 - (n % 4)) % 4);
  switch (it.t) {
    case 'u64':
    case 'u64n':
      return 8;
    case 'fixed':
      return pad(it.v.length);
    case 'opaque':
      return 4 + pad(it.v.length);
    case 'string':
      return 4 + pad(Buffer.byteLength(it.v));
    default:
      return 4;
  }
};

describe('XDR reader and writer', () => {
  it('round-trip every primitive, in any sequence, through a small growing buffer', () => {
    fc.assert(
      fc.property(fc.array(item, { maxLength: 30 }), (items) => {
        const w = new XdrWriter(8);
        for (const it of items) writeItem(w, it);
        expect(w.pos).toBe(items.reduce((n, it) => n + xdrSize(it), 0));
        expect(w.pos % 4).toBe(0);
        const r = new XdrReader(Buffer.from(w.view()));
        for (const it of items) {
          const v = it.t === 'fixed' || it.t === 'opaque' ? new Uint8Array(it.v) : it.v;
          expect(readItem(r, it)).toEqual(v);
        }
        expect(r.remaining).toBe(0);
      }),
      { numRuns: numRuns(200, 2000) },
    );
  });

  it('throws IVMR_XDR, never anything else, on truncated input', () => {
    fc.assert(
      fc.property(fc.array(item, { minLength: 1, maxLength: 10 }), fc.nat(), (items, cutSeed) => {
        const w = new XdrWriter();
        for (const it of items) writeItem(w, it);
        const bytes = Buffer.from(w.view());
        fc.pre(bytes.length > 0);
        const cut = cutSeed % bytes.length;
        const r = new XdrReader(bytes.subarray(0, cut));
        try {
          for (const it of items) readItem(r, it);
          expect.unreachable('read past the end');
        } catch (err) {
          expect(err).toBeInstanceOf(NfsError);
          expect((err as NfsError).code).toBe('IVMR_XDR');
        }
      }),
      { numRuns: numRuns(200, 2000) },
    );
  });

  it('clamps u64n above 2^53 - 1 and reads it back exactly below', () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), (v) => {
        const r = new XdrReader(Buffer.from(new XdrWriter().u64(v).view()));
        const max = BigInt(Number.MAX_SAFE_INTEGER);
        expect(r.u64n()).toBe(Number(v > max ? max : v));
      }),
      { numRuns: numRuns(200, 2000) },
    );
  });

  it('refuses a length over its limit or over the data before allocating', () => {
    fc.assert(
      fc.property(fc.nat({ max: 0xffff_ffff }), fc.nat({ max: 64 }), (claimed, limit) => {
        const r = new XdrReader(Buffer.from(new XdrWriter().u32(claimed).u32(0).view()));
        if (claimed <= Math.min(limit, 4)) expect(r.opaque(limit)).toHaveLength(claimed);
        else expect(() => r.opaque(limit)).toThrow(NfsError);
      }),
      { numRuns: numRuns(200, 2000) },
    );
  });
});

const fileType = fc.constantFrom<FileType>(
  'file',
  'directory',
  'symlink',
  'block',
  'char',
  'socket',
  'fifo',
);
const u32 = fc.nat({ max: 0xffff_ffff });
const time = fc.record({ seconds: u32, nanoseconds: fc.nat({ max: 999_999_999 }) });
const attributes: fc.Arbitrary<FileAttributes> = fc.record({
  type: fileType,
  mode: fc.nat({ max: 0o7777 }),
  nlink: u32,
  uid: u32,
  gid: u32,
  size: fc.maxSafeNat(),
  used: fc.maxSafeNat(),
  rdev: fc.record({ major: u32, minor: u32 }),
  fileId: fc.bigInt({ min: 1n, max: 2n ** 64n - 1n }),
  atime: time,
  mtime: time,
  ctime: time,
});
const setTime = fc.option(fc.oneof(fc.constant('server' as const), time), { nil: undefined });
const setAttributes: fc.Arbitrary<SetAttributes> = fc.record(
  {
    mode: fc.nat({ max: 0o7777 }),
    uid: u32,
    gid: u32,
    size: fc.maxSafeNat(),
    atime: setTime,
    mtime: setTime,
  },
  { requiredKeys: [] },
);

describe('NFSv3 attribute codecs', () => {
  it('round-trip fattr3 in exactly 84 bytes', () => {
    fc.assert(
      fc.property(attributes, u32, (a, fsid) => {
        const w = new XdrWriter(16);
        writeFattr3(w, a, fsid);
        expect(w.pos).toBe(84);
        const r = new XdrReader(Buffer.from(w.view()));
        expect(readFattr3(r)).toEqual({ ...a, fsid: BigInt(fsid) });
      }),
      { numRuns: numRuns(200, 2000) },
    );
  });

  it('keep only the permission bits of a mode', () => {
    fc.assert(
      fc.property(attributes, fc.nat({ max: 0xffff_ffff }), (a, mode) => {
        const w = new XdrWriter();
        writeFattr3(w, { ...a, mode }, 1);
        expect(readFattr3(new XdrReader(Buffer.from(w.view()))).mode).toBe(mode & 0o7777);
      }),
      { numRuns: numRuns(100, 1000) },
    );
  });

  it('round-trip sattr3', () => {
    fc.assert(
      fc.property(setAttributes, (s) => {
        const w = new XdrWriter(4);
        writeSattr3(w, s);
        const r = new XdrReader(Buffer.from(w.view()));
        const back = readSattr3(r);
        expect(r.remaining).toBe(0);
        const defined = Object.fromEntries(Object.entries(s).filter(([, v]) => v !== undefined));
        expect(back).toEqual(defined);
      }),
      { numRuns: numRuns(200, 2000) },
    );
  });

  it('round-trip wcc_data with or without each side', () => {
    fc.assert(
      fc.property(fc.option(attributes), fc.option(attributes), u32, (before, after, fsid) => {
        const w = new XdrWriter();
        writeWccData(w, before ?? undefined, after ?? undefined, fsid);
        const back = readWccData(new XdrReader(Buffer.from(w.view())));
        expect(back.before).toEqual(
          before ? { size: before.size, mtime: before.mtime, ctime: before.ctime } : undefined,
        );
        expect(back.after).toEqual(after ? { ...after, fsid: BigInt(fsid) } : undefined);
      }),
      { numRuns: numRuns(100, 1000) },
    );
  });
});
