import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { NfsError } from '../src/errors.js';
import { frameRecord, RecordDecoder } from '../src/rpc/record-decoder.js';

/** A short run locally, a longer one in CI. */
const numRuns = (local: number, ci: number) => (process.env.CI ? ci : local);

const LAST = 0x8000_0000;

/** Frames `record` as fragments cut at `cuts` (positions inside the record). */
function fragments(record: Uint8Array, cuts: number[]): Buffer {
  const points = [...new Set(cuts.map((c) => c % (record.length + 1)))].sort((a, b) => a - b);
  const bounds = [0, ...points.filter((p) => p > 0 && p < record.length), record.length];
  const parts: Buffer[] = [];
  for (let i = 0; i + 1 < bounds.length; i++) {
    const body = record.subarray(bounds[i], bounds[i + 1]);
    const mark = Buffer.alloc(4);
    mark.writeUInt32BE((i + 2 === bounds.length ? LAST : 0) + body.length, 0);
    parts.push(mark, Buffer.from(body));
  }
  return Buffer.concat(parts);
}

/** Splits `stream` into chunks at the given positions, as TCP might deliver it. */
function chunks(stream: Buffer, cuts: number[]): Buffer[] {
  const points = [...new Set(cuts.map((c) => c % (stream.length + 1)))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let at = 0;
  for (const p of [...points, stream.length]) {
    if (p > at) out.push(stream.subarray(at, p));
    at = Math.max(at, p);
  }
  return out;
}

const record = fc.record({
  body: fc.uint8Array({ maxLength: 3000 }),
  cuts: fc.array(fc.nat(), { maxLength: 4 }),
});

describe('RecordDecoder', () => {
  it('yields the same records however the stream is fragmented and split', () => {
    fc.assert(
      fc.property(
        fc.array(record, { minLength: 1, maxLength: 12 }),
        fc.array(fc.nat(), { maxLength: 40 }),
        fc.boolean(),
        (records, splits, bytewise) => {
          const stream = Buffer.concat(records.map((r) => fragments(r.body, r.cuts)));
          const got: Buffer[] = [];
          const decoder = new RecordDecoder(1 << 20, (rec) => got.push(Buffer.from(rec)));
          const parts = bytewise ? chunks(stream, [...stream.keys()]) : chunks(stream, splits);
          for (const p of parts) decoder.push(p);
          expect(got).toEqual(records.map((r) => Buffer.from(r.body)));
          expect(decoder.pendingBytes).toBe(0);
        },
      ),
      { numRuns: numRuns(100, 1000) },
    );
  });

  it('hands a record inside one chunk over as a view, without copying', () => {
    const body = Buffer.from('a record in one chunk');
    const chunk = Buffer.concat([frameRecord(body), frameRecord(body)]);
    const got: Buffer[] = [];
    new RecordDecoder(1024, (r) => got.push(r)).push(chunk);
    expect(got).toHaveLength(2);
    expect(got[0]!.buffer).toBe(chunk.buffer);
    expect(got[1]).toEqual(body);
  });

  it('refuses a record over the limit as soon as a fragment header claims it', () => {
    fc.assert(
      fc.property(
        fc.nat({ max: 4096 }),
        fc.array(fc.integer({ min: 1, max: 2 ** 31 - 1 }), { minLength: 1, maxLength: 4 }),
        (max, lengths) => {
          const got: Buffer[] = [];
          const decoder = new RecordDecoder(max, (r) => got.push(r));
          let total = 0;
          let refused = false;
          for (const n of lengths) {
            const mark = Buffer.alloc(4);
            mark.writeUInt32BE(n, 0); // never the last fragment
            total += n;
            if (total > max) {
              expect(() => decoder.push(mark)).toThrow(NfsError);
              refused = true;
              break;
            }
            decoder.push(Buffer.concat([mark, Buffer.alloc(n)]));
          }
          expect(refused || total <= max).toBe(true);
          expect(got).toHaveLength(0);
          expect(decoder.pendingBytes).toBeLessThanOrEqual(max);
        },
      ),
      { numRuns: numRuns(200, 2000) },
    );
  });

  it('refuses a 2 GiB claim with a typed error', () => {
    const decoder = new RecordDecoder(1 << 20, () => {});
    const err = (() => {
      try {
        decoder.push(Buffer.from([0xff, 0xff, 0xff, 0xff]));
      } catch (e) {
        return e;
      }
    })();
    expect((err as NfsError).code).toBe('IVMR_RPC_RECORD_TOO_LARGE');
  });
});
