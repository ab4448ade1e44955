/**
 * The disk image the VMDK benchmark converts and reads: deterministic from a seed, in extents of
 * 64 KiB to 4 MiB, each all zeros (free space), compressible text (log lines and records, the
 * way OS and application files deflate), or random bytes (media, archives, encrypted data).
 */
import { createCipheriv, createHash } from 'node:crypto';
import { closeSync, ftruncateSync, openSync, writeSync } from 'node:fs';

const KiB = 1024;
const SHARES = { zero: 0.3, text: 0.4, random: 0.3 };

/** `length` pseudo-random bytes: an AES-128-CTR keystream keyed by `seed`. */
function keystream(seed, length) {
  const key = createHash('sha256').update(`ivmr-vmdk-bench-${seed}`).digest();
  return createCipheriv('aes-128-ctr', key.subarray(0, 16), key.subarray(16)).update(
    Buffer.alloc(length),
  );
}

/** A small deterministic PRNG (xorshift32) for the layout. */
function prng(seed) {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 2 ** 32;
  };
}

/** Log-like text for `length` bytes starting at disk offset `at`: deflates about 4-6 times. */
function text(at, length, random) {
  const words = [
    'kernel',
    'nfsd',
    'error',
    'info',
    'sshd',
    'session',
    'opened',
    'closed',
    'user',
    'root',
    'eth0',
    'link',
    'up',
    'down',
    'GET',
    '/index.html',
    '200',
    '404',
  ];
  const out = Buffer.alloc(length);
  let pos = 0;
  let line = 0;
  while (pos < length) {
    const n = 5 + Math.floor(random() * 8);
    const parts = [`${(at + pos).toString(16).padStart(12, '0')} ${line++}`];
    for (let i = 0; i < n; i++) parts.push(words[Math.floor(random() * words.length)]);
    pos += out.write(`${parts.join(' ')}\n`, pos);
  }
  return out;
}

/**
 * Writes the image to `path` and returns its layout.
 * @param {string} path
 * @param {number} size bytes, a multiple of 64 KiB
 * @param {number} seed
 * @returns {{ size: number, bytes: { zero: number, text: number, random: number } }}
 */
export function writeImage(path, size, seed) {
  const random = prng(seed);
  const bytes = { zero: 0, text: 0, random: 0 };
  const fd = openSync(path, 'w');
  try {
    ftruncateSync(fd, size);
    let pos = 0;
    while (pos < size) {
      const length = Math.min(size - pos, 64 * KiB * (1 + Math.floor(random() * 64)));
      const r = random();
      const kind = r < SHARES.zero ? 'zero' : r < SHARES.zero + SHARES.text ? 'text' : 'random';
      if (kind !== 'zero') {
        const chunk =
          kind === 'text' ? text(pos, length, random) : keystream(`${seed}-${pos}`, length);
        writeSync(fd, chunk, 0, length, pos);
      }
      bytes[kind] += length;
      pos += length;
    }
  } finally {
    closeSync(fd);
  }
  return { size, bytes };
}
