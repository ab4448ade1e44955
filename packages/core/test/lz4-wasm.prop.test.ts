import fc from 'fast-check';
import { compressSync, uncompressSync } from 'lz4-napi';
import { describe, expect, it } from 'vitest';
import { copyBytes } from '../src/format/codec.js';
import { lz4DecodeInto } from '../src/format/lz4/lz4-wasm.js';
import { numRuns } from './fc.js';
import { expectBytes } from './support/bytes.js';

const RUNS = numRuns(200, 1000);

/**
 * Bytes that LZ4 compresses in every way it can: literal runs, matches at offsets below 8, 8-15
 * and 16 or more (each has its own copy loop in lz4-decode.c), runs longer than 15 and 270
 * bytes (length bytes of 255), and incompressible stretches.
 */
const rawArb: fc.Arbitrary<Uint8Array> = fc
  .array(
    fc.oneof(
      fc.uint8Array({ minLength: 0, maxLength: 300 }),
      fc
        .record({
          pattern: fc.uint8Array({ minLength: 1, maxLength: 24 }),
          times: fc.integer({ min: 1, max: 400 }),
        })
        .map(({ pattern, times }) => {
          const out = new Uint8Array(pattern.length * times);
          for (let i = 0; i < times; i++) out.set(pattern, i * pattern.length);
          return out;
        }),
      fc.integer({ min: 0, max: 5000 }).map((n) => new Uint8Array(n)),
    ),
    { maxLength: 40 },
  )
  .map((parts) => Buffer.concat(parts));

describe('lz4 decoder (WebAssembly)', () => {
  it('decodes what lz4-napi encodes, into exactly the buffer given (property)', () => {
    fc.assert(
      fc.property(rawArb, (raw) => {
        const payload = compressSync(Buffer.from(raw));
        // Guards around the output: nothing may be written outside it.
        const area = new Uint8Array(raw.length + 64).fill(0xa5);
        const out = area.subarray(32, 32 + raw.length);
        lz4DecodeInto(payload, out);
        expectBytes(out, raw);
        expect(area.subarray(0, 32).every((b) => b === 0xa5)).toBe(true);
        expect(area.subarray(32 + raw.length).every((b) => b === 0xa5)).toBe(true);
      }),
      { numRuns: RUNS },
    );
  });

  it('decodes between SharedArrayBuffer memory at any alignment of input and output (property)', () => {
    fc.assert(
      fc.property(
        rawArb,
        fc.integer({ min: 0, max: 15 }),
        fc.integer({ min: 0, max: 15 }),
        fc.boolean(),
        (raw, inAt, outAt, sharedIn) => {
          const payload = compressSync(Buffer.from(raw));
          const input = new Uint8Array(
            sharedIn
              ? new SharedArrayBuffer(payload.length + 16)
              : new ArrayBuffer(payload.length + 16),
          ).subarray(inAt, inAt + payload.length);
          input.set(payload);
          const area = new Uint8Array(new SharedArrayBuffer(raw.length + 48)).fill(0xa5);
          const out = area.subarray(16 + outAt, 16 + outAt + raw.length);
          lz4DecodeInto(input, out);
          expectBytes(out, raw);
          expect(area.subarray(0, 16 + outAt).every((b) => b === 0xa5)).toBe(true);
          expect(area.subarray(16 + outAt + raw.length).every((b) => b === 0xa5)).toBe(true);
        },
      ),
      { numRuns: RUNS },
    );
  });

  it('copyBytes copies between shared and private memory at any alignment (property)', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 0, maxLength: 70_000 }),
        fc.integer({ min: 0, max: 15 }),
        fc.integer({ min: 0, max: 15 }),
        fc.boolean(),
        fc.boolean(),
        (bytes, fromAt, toAt, sharedFrom, sharedTo) => {
          const make = (shared: boolean, n: number) =>
            new Uint8Array(shared ? new SharedArrayBuffer(n) : new ArrayBuffer(n));
          const from = make(sharedFrom, bytes.length + 16).subarray(fromAt, fromAt + bytes.length);
          from.set(bytes);
          const area = make(sharedTo, bytes.length + 32).fill(0xa5);
          const to = area.subarray(toAt, toAt + bytes.length);
          copyBytes(from, to);
          expectBytes(to, bytes);
          expect(area.subarray(0, toAt).every((b) => b === 0xa5)).toBe(true);
          expect(area.subarray(toAt + bytes.length).every((b) => b === 0xa5)).toBe(true);
        },
      ),
      { numRuns: numRuns(50, 200) },
    );
  });

  it('a damaged block throws or decodes to bytes of the right length, and never writes outside the output (property)', () => {
    fc.assert(
      fc.property(
        rawArb.filter((r) => r.length > 0),
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })), {
          minLength: 1,
          maxLength: 4,
        }),
        fc.nat(),
        (raw, flips, cut) => {
          const payload = Buffer.from(compressSync(Buffer.from(raw)));
          // Damage past the size prefix (a damaged prefix is a length mismatch, tested below).
          for (const [at, x] of flips) {
            if (payload.length > 4) payload[4 + (at % (payload.length - 4))]! ^= x;
          }
          const damaged = cut % 3 === 0 ? payload.subarray(0, 4 + (cut % payload.length)) : payload;
          const area = new Uint8Array(raw.length + 64).fill(0xa5);
          const out = area.subarray(32, 32 + raw.length);
          let threw: unknown;
          try {
            lz4DecodeInto(damaged, out);
          } catch (err) {
            threw = err;
          }
          if (threw !== undefined) {
            expect(threw).toBeInstanceOf(Error);
            // A failed decode leaves the output untouched.
            expect(out.every((b) => b === 0xa5)).toBe(true);
          } else {
            // Still a valid block of the declared length: the same bytes lz4-napi decodes.
            expectBytes(out, uncompressSync(damaged));
          }
          expect(area.subarray(0, 32).every((b) => b === 0xa5)).toBe(true);
          expect(area.subarray(32 + raw.length).every((b) => b === 0xa5)).toBe(true);
        },
      ),
      { numRuns: RUNS },
    );
  });

  it('refuses a block whose declared or decoded length is not the output length', () => {
    const raw = Buffer.alloc(1000, 7);
    const payload = compressSync(raw);
    expect(() => lz4DecodeInto(payload, new Uint8Array(999))).toThrow(/1000 bytes, expected 999/);
    expect(() => lz4DecodeInto(payload, new Uint8Array(1001))).toThrow(/expected 1001/);
    // The prefix says 1001, the block holds 1000.
    const lying = Buffer.from(payload);
    lying.writeUInt32LE(1001, 0);
    expect(() => lz4DecodeInto(lying, new Uint8Array(1001))).toThrow(/decoded to 1000 bytes/);
    expect(() => lz4DecodeInto(payload.subarray(0, 3), new Uint8Array(1000))).toThrow(
      /cannot hold an LZ4 block/,
    );
  });

  it('grows its memory for frames larger than any before (4 MiB, the largest frame FORMAT.md allows)', () => {
    const raw = Buffer.alloc(4 * 1024 * 1024);
    for (let i = 0; i < raw.length; i += 4096) raw.writeUInt32LE((i * 2654435761) >>> 0, i);
    const out = new Uint8Array(raw.length);
    lz4DecodeInto(compressSync(raw), out);
    expectBytes(out, raw);
    // And small ones still decode after it.
    const small = Buffer.from('abcabcabcabcabcabcabc-xyz');
    const back = new Uint8Array(small.length);
    lz4DecodeInto(compressSync(small), back);
    expectBytes(back, small);
  });
});
