import { createCipheriv, createHash } from 'node:crypto';

/** `length` deterministic pseudo-random bytes for `seed` (an AES-128-CTR keystream). */
export function patternBytes(seed: number | string, length: number): Buffer {
  const key = createHash('sha256').update(`vmdk-test-${seed}`).digest();
  const cipher = createCipheriv('aes-128-ctr', key.subarray(0, 16), key.subarray(16, 32));
  return cipher.update(Buffer.alloc(length));
}

/**
 * A disk image in memory with holes: `size` bytes in 64 KiB-ish regions, each all zeros,
 * compressible text, or random bytes, chosen by the seed.
 */
export function imageWithHoles(seed: number, size: number): Buffer {
  const out = Buffer.alloc(size);
  const rnd = patternBytes(`${seed}-layout`, 4 * Math.ceil(size / 4096) + 64);
  let pos = 0;
  let k = 0;
  while (pos < size) {
    const pick = rnd[k++ % rnd.length]!;
    const len = Math.min(size - pos, 512 * (1 + (rnd[k++ % rnd.length]! % 300)));
    if (pick % 3 === 1) {
      const text = Buffer.from(`log line ${pos} seed ${seed}: the quick brown fox\n`);
      for (let i = 0; i < len; i++) out[pos + i] = text[i % text.length]!;
    } else if (pick % 3 === 2) {
      patternBytes(`${seed}-${pos}`, len).copy(out, pos);
    }
    pos += len;
  }
  return out;
}

/** The first offset where `a` and `b` differ, or -1. */
export function firstDifference(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}
