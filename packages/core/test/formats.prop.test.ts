import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type BlockMap, decodeBlockMap, encodeBlockMap } from '../src/format/block-map.js';
import {
  CODEC_ID,
  type CodecName,
  compressFrame,
  frameChecksum,
  metaChecksum,
} from '../src/format/codec.js';
import { decodeIndex, encodeIndex, type IndexedPack } from '../src/format/index-file.js';
import {
  type BlobEntry,
  decodePackTrailer,
  encodePackTrailer,
  FRAME_HEADER_SIZE,
  frameCount,
  PACK_TAIL_SIZE,
} from '../src/format/pack.js';
import { ErrorCode, IvmrError } from '../src/index.js';
import { decodeStoredFrame } from '../src/repository/blob-reader.js';
import { numRuns } from './fc.js';
import { expectBytes } from './support/bytes.js';

const MAX_SAFE = Number.MAX_SAFE_INTEGER;

const idArb = fc.uint8Array({ minLength: 32, maxLength: 32 });

/** A valid blob entry; at most 64 frames so runs stay quick (the format allows 1024). */
const entryArb: fc.Arbitrary<BlobEntry> = fc
  .record({
    id: idArb,
    offset: fc.integer({ min: 0, max: 2 ** 52 }),
    frameShift: fc.integer({ min: 12, max: 22 }),
    frames: fc.integer({ min: 1, max: 64 }),
    rawSeed: fc.nat(),
  })
  .chain(({ id, offset, frameShift, frames, rawSeed }) => {
    const frameSize = 2 ** frameShift;
    const maxFrames = Math.min(frames, Math.floor((4 * 1024 * 1024) / frameSize));
    const rawLength = Math.max(1, (maxFrames - 1) * frameSize + 1 + (rawSeed % frameSize));
    const n = frameCount(rawLength, frameShift);
    return fc
      .array(fc.integer({ min: FRAME_HEADER_SIZE + 1, max: 0xffff_ffff }), {
        minLength: n,
        maxLength: n,
      })
      .map((frameLengths) => ({ id, offset, rawLength, frameShift, frameLengths }));
  });

function entriesEnd(entries: readonly BlobEntry[]): number {
  let end = 0;
  for (const e of entries)
    end = Math.max(end, e.offset + e.frameLengths.reduce((a, b) => a + b, 0));
  return end;
}

const indexArb: fc.Arbitrary<IndexedPack[]> = fc.array(
  fc
    .record({
      pack: fc.stringMatching(/^[0-9a-f]{1,64}$/),
      blobs: fc.array(entryArb, { maxLength: 4 }),
      slack: fc.nat(1_000_000),
    })
    .map(({ pack, blobs, slack }) => ({ pack, size: entriesEnd(blobs) + slack, blobs })),
  { maxLength: 4 },
);

const blockMapArb: fc.Arbitrary<BlockMap> = fc
  .record({
    kind: fc.constantFrom<'full' | 'delta'>('full', 'delta'),
    diskSize: fc.oneof(fc.integer({ min: 0, max: 2 ** 36 }), fc.integer({ min: 0, max: MAX_SAFE })),
    blockSize: fc.integer({ min: 16, max: 22 }).map((s) => 2 ** s),
    picks: fc.array(fc.integer({ min: 0, max: MAX_SAFE }), { maxLength: 40 }),
    ids: fc.array(idArb, { minLength: 40, maxLength: 40 }),
  })
  .map(({ kind, diskSize, blockSize, picks, ids }) => {
    const count = Math.ceil(diskSize / blockSize);
    const blocks =
      count === 0 ? [] : [...new Set(picks.map((p) => p % count))].sort((a, b) => a - b);
    const idBytes = new Uint8Array(blocks.length * 32);
    blocks.forEach((_, i) => {
      idBytes.set(ids[i]!, i * 32);
    });
    return { kind, diskSize, blockSize, blocks: Float64Array.from(blocks), ids: idBytes };
  });

function plainEntries(entries: readonly BlobEntry[]) {
  return entries.map((e) => ({
    ...e,
    id: Buffer.from(e.id).toString('hex'),
    frameLengths: [...e.frameLengths],
  }));
}

/** Decodes a whole pack trailer (tail bytes = the trailer) of a pack of `packSize` bytes. */
function decodeTrailer(
  bytes: Uint8Array,
  packSize = bytes.length,
): BlobEntry[] | { needed: number } {
  const r = decodePackTrailer(bytes, packSize, 'pack under test');
  return 'needed' in r ? r : r.entries;
}

/** The decoder must either return or throw `IVMR_FORMAT`: never another error type. */
function expectReturnsOrFormat(decode: () => unknown): void {
  try {
    decode();
  } catch (err) {
    if (!(err instanceof IvmrError) || err.code !== ErrorCode.FORMAT) throw err;
  }
}

function expectFormatError(decode: () => unknown): void {
  let thrown: unknown;
  try {
    decode();
  } catch (err) {
    thrown = err;
  }
  expect(thrown).toBeInstanceOf(IvmrError);
  expect((thrown as IvmrError).code).toBe(ErrorCode.FORMAT);
}

/** A mutation of an encoded object: truncation, flipped bytes, or bytes written over it. */
const mutationArb = fc.oneof(
  fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }),
  fc.record({ kind: fc.constant('dropPrefix' as const), at: fc.nat() }),
  fc.record({
    kind: fc.constant('flip' as const),
    flips: fc.array(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })), {
      minLength: 1,
      maxLength: 4,
    }),
  }),
  fc.record({
    kind: fc.constant('overwrite' as const),
    at: fc.nat(),
    bytes: fc.uint8Array({ minLength: 1, maxLength: 8 }),
  }),
);
type Mutation = typeof mutationArb extends fc.Arbitrary<infer T> ? T : never;

function mutate(bytes: Uint8Array, m: Mutation): Uint8Array {
  const out = Uint8Array.from(bytes);
  if (out.length === 0) return out;
  switch (m.kind) {
    case 'truncate':
      return out.subarray(0, m.at % out.length);
    case 'dropPrefix':
      return out.subarray(1 + (m.at % out.length));
    case 'flip':
      for (const [at, x] of m.flips) out[at % out.length]! ^= x;
      return out;
    case 'overwrite':
      out.set(m.bytes.subarray(0, out.length - (m.at % out.length)), m.at % out.length);
      return out;
  }
}

/** Re-seals an index or block map (trailing xxHash64 of the body) after a mutation. */
function resealTail(bytes: Uint8Array): Uint8Array {
  if (bytes.length < 8) return bytes;
  const out = Buffer.from(bytes);
  out.writeBigUInt64BE(metaChecksum(out.subarray(0, out.length - 8)), out.length - 8);
  return out;
}

/** Re-seals a pack trailer: checksum of the header as its length field says it is. */
function resealTrailer(bytes: Uint8Array): Uint8Array {
  if (bytes.length < PACK_TAIL_SIZE) return bytes;
  const out = Buffer.from(bytes);
  const tail = out.length - PACK_TAIL_SIZE;
  const headerLength = Math.min(out.readUInt32BE(tail + 8), tail);
  out.writeBigUInt64BE(metaChecksum(out.subarray(tail - headerLength, tail)), tail);
  return out;
}

/** Mutates only the body of a sealed object (the checksum is fixed up afterwards). */
const bodyMutationArb = fc.record({
  at: fc.nat(),
  value: fc.oneof(fc.integer({ min: 0, max: 255 }), fc.constant(0xff)),
  width: fc.constantFrom(1, 4),
});

function mutateBody(
  bytes: Uint8Array,
  bodyLength: number,
  m: typeof bodyMutationArb extends fc.Arbitrary<infer T> ? T : never,
) {
  const out = Buffer.from(bytes);
  if (bodyLength === 0) return out;
  const at = m.at % bodyLength;
  for (let i = 0; i < m.width && at + i < bodyLength; i++) out[at + i] = m.value;
  return out;
}

const RUNS = numRuns(300, 3000);

describe('pack trailer, index and block map codecs (property)', () => {
  it('round-trip valid values', () => {
    fc.assert(
      fc.property(fc.array(entryArb, { maxLength: 6 }), fc.nat(1000), (entries, slack) => {
        const trailer = encodePackTrailer(entries);
        const packSize = entriesEnd(entries) + slack + trailer.length;
        const decoded = decodeTrailer(trailer, packSize);
        expect(Array.isArray(decoded)).toBe(true);
        expect(plainEntries(decoded as BlobEntry[])).toEqual(plainEntries(entries));
        // Reading the tail first: a reader that fetched only the last 20 bytes is told how many.
        const tail = trailer.subarray(trailer.length - PACK_TAIL_SIZE);
        expect(decodePackTrailer(tail, packSize, 'p')).toEqual(
          trailer.length === PACK_TAIL_SIZE ? { entries: [] } : { needed: trailer.length },
        );
      }),
      { numRuns: RUNS },
    );
    fc.assert(
      fc.property(indexArb, (packs) => {
        const decoded = decodeIndex(encodeIndex(packs), 'index under test');
        expect(decoded.map((p) => ({ ...p, blobs: plainEntries(p.blobs) }))).toEqual(
          packs.map((p) => ({ ...p, blobs: plainEntries(p.blobs) })),
        );
      }),
      { numRuns: RUNS },
    );
    fc.assert(
      fc.property(blockMapArb, (map) => {
        expect(decodeBlockMap(encodeBlockMap(map), 'map under test')).toEqual(map);
      }),
      { numRuns: RUNS },
    );
  });

  it('truncated, flipped or overwritten objects decode or fail with IVMR_FORMAT', () => {
    fc.assert(
      fc.property(
        fc.array(entryArb, { maxLength: 4 }),
        indexArb,
        blockMapArb,
        mutationArb,
        (entries, packs, map, m) => {
          const trailer = encodePackTrailer(entries);
          const bad = mutate(trailer, m);
          expectReturnsOrFormat(() => decodeTrailer(bad));
          expectReturnsOrFormat(() => decodeTrailer(bad, bad.length + 1_000_000));
          expectReturnsOrFormat(() => decodeIndex(mutate(encodeIndex(packs), m), 'i'));
          expectReturnsOrFormat(() => decodeBlockMap(mutate(encodeBlockMap(map), m), 'm'));
        },
      ),
      { numRuns: RUNS },
    );
  });

  it('a changed byte or a truncation is always detected (checksums)', () => {
    fc.assert(
      fc.property(
        indexArb,
        blockMapArb,
        fc.nat(),
        fc.integer({ min: 1, max: 255 }),
        (packs, map, at, x) => {
          for (const [bytes, decode] of [
            [encodeIndex(packs), (b: Uint8Array) => decodeIndex(b, 'i')],
            [encodeBlockMap(map), (b: Uint8Array) => decodeBlockMap(b, 'm')],
          ] as const) {
            const flipped = Uint8Array.from(bytes);
            flipped[at % bytes.length]! ^= x;
            expectFormatError(() => decode(flipped));
            expectFormatError(() => decode(bytes.subarray(0, at % bytes.length)));
          }
        },
      ),
      { numRuns: RUNS },
    );
  });

  it('bodies with valid checksums but bad fields decode or fail with IVMR_FORMAT', () => {
    fc.assert(
      fc.property(
        fc.array(entryArb, { maxLength: 4 }),
        indexArb,
        blockMapArb,
        bodyMutationArb,
        (entries, packs, map, m) => {
          const trailer = encodePackTrailer(entries);
          const t = resealTrailer(mutateBody(trailer, trailer.length - 8, m));
          expectReturnsOrFormat(() => decodeTrailer(t));
          const index = encodeIndex(packs);
          expectReturnsOrFormat(() =>
            decodeIndex(resealTail(mutateBody(index, index.length - 8, m)), 'i'),
          );
          const mapBytes = encodeBlockMap(map);
          expectReturnsOrFormat(() =>
            decodeBlockMap(resealTail(mutateBody(mapBytes, mapBytes.length - 8, m)), 'm'),
          );
        },
      ),
      { numRuns: RUNS },
    );
  });

  it('random garbage decodes or fails with IVMR_FORMAT, sealed or not', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 600 }), fc.boolean(), (garbage, withMagic) => {
        const variants = [garbage, resealTail(garbage)];
        if (withMagic && garbage.length >= 28) {
          // Garbage behind the right magic gets past the first check.
          for (const magic of ['IVMRIDX1', 'IVMRMAP1']) {
            const g = Buffer.from(garbage);
            g.write(magic, 0, 'latin1');
            variants.push(resealTail(g));
          }
          const t = Buffer.from(garbage);
          t.write('IVMRPAK1', t.length - 8, 'latin1');
          t.writeUInt32BE(t.length - PACK_TAIL_SIZE, t.length - 12);
          variants.push(resealTrailer(t));
        }
        for (const v of variants) {
          expectReturnsOrFormat(() => decodeTrailer(v));
          expectReturnsOrFormat(() => decodeIndex(v, 'i'));
          expectReturnsOrFormat(() => decodeBlockMap(v, 'm'));
        }
      }),
      { numRuns: RUNS },
    );
  });

  it('counts claiming 2^32-1 entries fail fast with IVMR_FORMAT', () => {
    const entry = fc.sample(entryArb, { numRuns: 1, seed: 1 })[0]!;
    const huge = 0xffff_ffff;
    const cases: [string, () => unknown][] = [];

    // Index: the pack count, then a pack's blob count.
    const index = Buffer.from(
      encodeIndex([{ pack: 'aa', size: entriesEnd([entry]), blobs: [entry] }]),
    );
    const packCount = Buffer.from(index);
    packCount.writeUInt32BE(huge, 8);
    cases.push(['index pack count', () => decodeIndex(resealTail(packCount), 'i')]);
    const blobCount = Buffer.from(index);
    blobCount.writeUInt32BE(huge, 8 + 4 + 2 + 2 + 8);
    cases.push(['index blob count', () => decodeIndex(resealTail(blobCount), 'i')]);
    const frames = Buffer.from(index);
    frames.writeUInt32BE(huge, 8 + 4 + 2 + 2 + 8 + 4 + 32 + 8 + 4 + 1);
    cases.push(['index frame count', () => decodeIndex(resealTail(frames), 'i')]);

    // Pack trailer: the header's blob count, and a header length beyond the pack.
    const trailer = Buffer.from(encodePackTrailer([entry]));
    const count = Buffer.from(trailer);
    count.writeUInt32BE(huge, 0);
    cases.push(['pack blob count', () => decodeTrailer(resealTrailer(count), 2 ** 53 - 1)]);
    const headerLength = Buffer.from(trailer);
    headerLength.writeUInt32BE(huge, headerLength.length - 12);
    cases.push(['pack header length', () => decodeTrailer(headerLength)]);

    // Block map: the entry count.
    const map = Buffer.from(
      encodeBlockMap({
        kind: 'full',
        diskSize: 2 ** 40,
        blockSize: 65536,
        blocks: new Float64Array([3]),
        ids: new Uint8Array(32),
      }),
    );
    map.writeUInt32BE(huge, 8 + 1 + 8 + 4);
    cases.push(['map entry count', () => decodeBlockMap(resealTail(map), 'm')]);

    for (const [what, decode] of cases) {
      const started = performance.now();
      expect(decode, what).toThrow(expect.objectContaining({ code: ErrorCode.FORMAT }));
      expect(performance.now() - started, what).toBeLessThan(100);
    }
  });
});

describe('stored frames (property)', () => {
  const frameArb = fc.record({
    codec: fc.constantFrom<CodecName>('none', 'lz4', 'zstd'),
    raw: fc.oneof(
      fc.uint8Array({ minLength: 1, maxLength: 5000 }),
      fc
        .tuple(fc.uint8Array({ minLength: 1, maxLength: 8 }), fc.integer({ min: 1, max: 20_000 }))
        .map(([pattern, n]) =>
          Uint8Array.from({ length: n }, (_, i) => pattern[i % pattern.length]!),
        ),
    ),
  });

  function storedFrame(codec: CodecName, raw: Uint8Array): Buffer {
    const payload = compressFrame(codec, raw);
    const header = Buffer.alloc(FRAME_HEADER_SIZE);
    header[0] = CODEC_ID[codec];
    header.writeBigUInt64BE(frameChecksum(CODEC_ID[codec], payload), 1);
    return Buffer.concat([header, payload]);
  }

  function expectCorrupt(decode: () => unknown): void {
    let thrown: unknown;
    try {
      decode();
    } catch (err) {
      thrown = err;
    }
    expect(thrown).toBeInstanceOf(IvmrError);
    expect(thrown).toMatchObject({
      code: ErrorCode.CHUNK_CORRUPT,
      details: { blob: 'b1', pack: 'p1', frame: 3 },
    });
  }

  it('decode what was stored, and reject a changed codec byte, checksum or payload as IVMR_CHUNK_CORRUPT', () => {
    fc.assert(
      fc.property(frameArb, fc.nat(), fc.integer({ min: 1, max: 255 }), ({ codec, raw }, at, x) => {
        const stored = storedFrame(codec, raw);
        expectBytes(decodeStoredFrame(stored, raw.length, 'b1', 'p1', 3), raw);
        const flipped = Buffer.from(stored);
        flipped[at % stored.length]! ^= x;
        expectCorrupt(() => decodeStoredFrame(flipped, raw.length, 'b1', 'p1', 3));
        // The same for each part of the frame on purpose: codec byte, checksum, payload.
        for (const pos of [
          0,
          1 + (at % 8),
          FRAME_HEADER_SIZE + (at % (stored.length - FRAME_HEADER_SIZE)),
        ]) {
          if (pos >= stored.length) continue;
          const one = Buffer.from(stored);
          one[pos]! ^= x;
          expectCorrupt(() => decodeStoredFrame(one, raw.length, 'b1', 'p1', 3));
        }
        // A frame cut short, or decoded for another length.
        expectCorrupt(() =>
          decodeStoredFrame(stored.subarray(0, at % stored.length), raw.length, 'b1', 'p1', 3),
        );
        expectCorrupt(() => decodeStoredFrame(stored, raw.length + 1 + (at % 100), 'b1', 'p1', 3));
      }),
      { numRuns: RUNS },
    );
  });
});
