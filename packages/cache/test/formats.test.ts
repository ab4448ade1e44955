import { crc32 } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { commitLength, decodeCommit, encodeCommit } from '../src/overlay/commit-record.js';
import { BASE, ZERO } from '../src/overlay/grain-table.js';
import { decodeMapHeader, encodeMapHeader } from '../src/overlay/map-snapshot.js';
import { decodeSuperblock, encodeSuperblock } from '../src/overlay/superblock.js';
import {
  decodeEntry,
  decodeHeader,
  encodeEntry,
  encodeHeader,
} from '../src/read-cache/cache-file-format.js';

/** Every copy of `bytes` with one bit flipped. */
function* flips(bytes: Uint8Array): Generator<Uint8Array> {
  for (let i = 0; i < bytes.length; i++) {
    for (const bit of [0x01, 0x80]) {
      const copy = bytes.slice();
      copy[i]! ^= bit;
      yield copy;
    }
  }
}

describe('commit records', () => {
  const rec = {
    seq: 2 ** 40 + 7,
    runs: [
      { first: 0, count: 3, value: 5 },
      { first: 9, count: 1, value: BASE },
      { first: 2 ** 45, count: 100, value: ZERO },
    ],
    size: { size: 2 ** 50, baseLimit: 12345 },
  };

  it('round-trip, with and without a size change', () => {
    expect(decodeCommit(encodeCommit(rec))).toEqual(rec);
    const noSize = { seq: 1, runs: rec.runs, size: undefined };
    expect(decodeCommit(encodeCommit(noSize))).toEqual(noSize);
  });

  it('a torn or damaged record never decodes', () => {
    const bytes = encodeCommit(rec);
    for (const bad of flips(bytes)) {
      const len = commitLength(bad.subarray(0, 24));
      if (len === undefined || len !== bad.length) continue;
      expect(decodeCommit(bad)).toBeUndefined();
    }
    for (let cut = 0; cut < bytes.length; cut += 7) {
      expect(decodeCommit(bytes.subarray(0, cut))).toBeUndefined();
    }
    expect(commitLength(new Uint8Array(24))).toBeUndefined();
  });
});

describe('superblock, map header, read cache header and entries', () => {
  it('round-trip and reject any flipped bit', () => {
    const sb = {
      generation: 3,
      dirty: true,
      grainSize: 4096,
      baseSize: 2 ** 44,
      epoch: 9,
      verifier: new Uint8Array(8).fill(7),
      id: new Uint8Array(16).fill(9),
    };
    const sbBytes = encodeSuperblock(sb);
    expect(decodeSuperblock(sbBytes)).toEqual(sb);
    for (const bad of flips(sbBytes.subarray(0, 76))) {
      const slot = sbBytes.slice();
      slot.set(bad);
      expect(decodeSuperblock(slot)).toBeUndefined();
    }

    const mh = {
      id: new Uint8Array(16).fill(1),
      seq: 77,
      size: 1 << 30,
      baseLimit: 1 << 29,
      runCount: 5,
      runsCrc: 0xdeadbeef,
    };
    const mhBytes = encodeMapHeader(mh);
    expect(decodeMapHeader(mhBytes)).toEqual(mh);
    for (const bad of flips(mhBytes)) expect(typeof decodeMapHeader(bad)).toBe('string');

    const h = { blockSize: 65536, slotCount: 100, sourceSize: 2 ** 35, sourceId: 'vm/é/disk0' };
    const hBytes = encodeHeader(h);
    expect(decodeHeader(hBytes)).toEqual(h);
    const used = 32 + new TextEncoder().encode(h.sourceId).length + 4;
    for (const bad of flips(hBytes.subarray(0, used))) {
      const full = hBytes.slice();
      full.set(bad);
      expect(decodeHeader(full)).toBeUndefined();
    }

    // A version 1 file (blocks checked with CRC-32) is refused, its header intact otherwise.
    const v1 = hBytes.slice();
    const v1View = new DataView(v1.buffer);
    expect(v1View.getUint32(8)).toBe(2);
    v1View.setUint32(8, 1);
    v1View.setUint32(used - 4, crc32(v1.subarray(0, used - 4)) >>> 0);
    expect(decodeHeader(v1)).toBeUndefined();

    const e = { block: 2 ** 33, length: 65536, crc: 0x12345678, seq: 99 };
    const eBytes = encodeEntry(e);
    expect(decodeEntry(eBytes)).toEqual(e);
    expect(decodeEntry(encodeEntry(undefined))).toBeUndefined();
    for (const bad of flips(eBytes)) expect(decodeEntry(bad)).toBeUndefined();
  });
});
