/**
 * A synthetic raw disk image that looks like a used VM disk to a deduplicating, compressing
 * backup: zero regions (free space), compressible regions (text and record structures, like OS
 * and application files) and incompressible regions (media, archives, encrypted data), in
 * extents of 64 KiB to 16 MiB. Everything is a function of the seed.
 */
import { createCipheriv, createHash } from 'node:crypto';
import { closeSync, fsyncSync, openSync, readSync, writeSync } from 'node:fs';

export const MiB = 1024 * 1024;
/** Image block size: the repository's default block size, so hashes match blob ids. */
export const BLOCK = MiB;
const PAGE = 4096;
const POOL = 16 * MiB;

/** Byte shares of the three kinds of content (the mix). */
export const MIX = { zero: 0.3, text: 0.4, random: 0.3 };
/** Share of non-zero blocks that are an exact copy of an earlier block (duplicate files). */
export const DUP_SHARE = 0.02;

/**
 * mulberry32: a small seeded PRNG for layout decisions (not for bulk bytes).
 * @param {number} seed
 * @returns {() => number} uniform in [0, 1)
 */
export function prng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * An endless deterministic stream of incompressible bytes (AES-256-CTR keystream: fast and
 * seeded, unlike crypto.randomBytes).
 * @param {string} label
 */
function keystream(label) {
  const key = createHash('sha256').update(label).digest();
  const cipher = createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
  let zeros = Buffer.alloc(0);
  /** @param {Buffer} out */
  return (out) => {
    if (zeros.length < out.length) zeros = Buffer.alloc(out.length);
    const bytes = cipher.update(zeros.subarray(0, out.length));
    bytes.copy(out);
  };
}

const WORDS = (
  'the of and to in is for on with as by at from that this be are was or not it an which ' +
  'kernel systemd network interface address device driver module service started stopped ' +
  'connection accepted closed error warning info debug user session login failed success ' +
  'config value path file directory mount filesystem block inode cache memory process thread ' +
  'request response client server timeout retry package version update install library'
).split(' ');
const LEVELS = ['INFO', 'DEBUG', 'WARN', 'ERROR', 'NOTICE'];
const HOSTS = ['web01', 'db02', 'cache03', 'app04'];

/**
 * 16 MiB of compressible content, page by page: log and config text (60%) or arrays of
 * 32-byte records with counters and small fields (40%), as in OS, database and package files.
 * lz4 shrinks it about 3x.
 * @param {() => number} rnd
 */
function makePool(rnd) {
  const pool = Buffer.alloc(POOL);
  let line = 0;
  let clock = 1_700_000_000;
  for (let page = 0; page < POOL; page += PAGE) {
    if (rnd() < 0.6) {
      let text = '';
      while (text.length < PAGE) {
        clock += Math.floor(rnd() * 3);
        const n = 4 + Math.floor(rnd() * 8);
        let words = '';
        for (let i = 0; i < n; i++) words += ` ${WORDS[Math.floor(rnd() * WORDS.length)]}`;
        const host = HOSTS[Math.floor(rnd() * HOSTS.length)];
        const level = LEVELS[Math.floor(rnd() ** 3 * LEVELS.length)];
        text += `${clock} ${host} ${level} [${1000 + Math.floor(rnd() * 9000)}] line=${line++}${words} id=${Math.floor(rnd() * 0xffffff).toString(16)}\n`;
      }
      pool.write(text.slice(0, PAGE), page, 'latin1');
    } else {
      for (let r = page; r < page + PAGE; r += 32) {
        pool.writeUInt32LE(line++, r);
        pool.writeUInt32LE(Math.floor(rnd() * 16), r + 4);
        pool.writeDoubleLE(clock + r, r + 8);
        pool.writeUInt32LE(Math.floor(rnd() * 0xffff), r + 16);
        pool.write(WORDS[Math.floor(rnd() * WORDS.length)], r + 20, 12, 'latin1');
      }
    }
  }
  return pool;
}

/**
 * Fills buffers with content of the mix. Compressible pages start with their disk offset and 8
 * random bytes (like a file system's block header), so no two pages repeat by accident.
 */
class ContentWriter {
  /**
   * @param {number} seed
   * @param {string} label distinguishes the original content from later changes
   */
  constructor(seed, label) {
    this.rnd = prng(seed ^ 0x5eed);
    this.pool = makePool(prng(seed));
    this.random = keystream(`ivmr-bench:${seed}:${label}`);
    this.tag = Buffer.alloc(8);
  }

  /**
   * @param {Buffer} out
   * @param {'zero' | 'text' | 'random'} kind
   * @param {number} diskOffset where `out` lands in the image (4 KiB aligned)
   * @param {number} poolOffset where in the pool text content continues
   */
  fill(out, kind, diskOffset, poolOffset) {
    if (kind === 'zero') {
      out.fill(0);
    } else if (kind === 'random') {
      this.random(out);
    } else {
      for (let pos = 0; pos < out.length; pos += PAGE) {
        const from = (poolOffset + pos) % POOL;
        this.pool.copy(out, pos, from, Math.min(from + PAGE, POOL, from + out.length - pos));
        if (out.length - pos >= 16) {
          out.writeDoubleLE(diskOffset + pos, pos);
          this.random(this.tag);
          this.tag.copy(out, pos + 8);
        }
      }
    }
  }
}

/**
 * @typedef {object} ImageInfo
 * @property {string} path
 * @property {number} size
 * @property {string[]} hashes SHA-256 hex of each 1 MiB block, '' for an all-zero block
 * @property {Record<'zero' | 'text' | 'random', number>} bytes bytes of each kind
 * @property {number} zeroBlocks blocks that are all zero
 * @property {number} dupBlocks blocks that copy an earlier block
 */

/**
 * Writes an image of `size` bytes (a multiple of 1 MiB) to `path`.
 * @param {string} path
 * @param {number} size
 * @param {number} seed
 * @returns {ImageInfo}
 */
export function writeImage(path, size, seed) {
  const content = new ContentWriter(seed, 'image');
  const rnd = prng(seed ^ 0x1a7);
  const quota = { zero: size * MIX.zero, text: size * MIX.text, random: size * MIX.random };
  const bytes = { zero: 0, text: 0, random: 0 };
  const maxExtent = Math.max(PAGE * 16, Math.min(16 * MiB, size / 8));
  /** The current extent: kind, bytes left, pool position. */
  let extent = { kind: /** @type {'zero' | 'text' | 'random'} */ ('zero'), left: 0, pool: 0 };
  const nextExtent = () => {
    const left = Object.values(quota).reduce((a, b) => a + Math.max(0, b), 0);
    let pick = rnd() * left;
    let kind = /** @type {'zero' | 'text' | 'random'} */ ('random');
    for (const k of /** @type {const} */ (['zero', 'text', 'random'])) {
      pick -= Math.max(0, quota[k]);
      if (pick < 0) {
        kind = k;
        break;
      }
    }
    const len = Math.exp(Math.log(64 * 1024) + rnd() * Math.log(maxExtent / (64 * 1024)));
    const aligned = Math.max(PAGE, Math.floor(len / PAGE) * PAGE);
    quota[kind] -= aligned;
    extent = { kind, left: aligned, pool: Math.floor(rnd() * (POOL / PAGE)) * PAGE };
  };

  const block = Buffer.alloc(BLOCK);
  /** Earlier blocks kept as sources of duplicates. */
  const saved = [];
  const hashes = [];
  let zeroBlocks = 0;
  let dupBlocks = 0;
  const fd = openSync(path, 'w');
  try {
    for (let start = 0; start < size; start += BLOCK) {
      for (let pos = 0; pos < BLOCK; ) {
        if (extent.left === 0) nextExtent();
        const n = Math.min(extent.left, BLOCK - pos);
        content.fill(block.subarray(pos, pos + n), extent.kind, start + pos, extent.pool);
        bytes[extent.kind] += n;
        extent.left -= n;
        extent.pool += n;
        pos += n;
      }
      let zero = isZero(block);
      if (!zero && saved.length > 0 && rnd() < DUP_SHARE) {
        saved[Math.floor(rnd() * saved.length)].copy(block);
        dupBlocks++;
      } else if (!zero && rnd() < 0.05) {
        if (saved.length === 8) saved.shift();
        saved.push(Buffer.from(block));
      }
      zero = isZero(block);
      if (zero) zeroBlocks++;
      hashes.push(zero ? '' : sha256Hex(block));
      writeSync(fd, block, 0, BLOCK, start);
    }
    // Written back now, so the kernel's writeback does not compete with the measurements.
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  return { path, size, hashes, bytes, zeroBlocks, dupBlocks };
}

/**
 * Changes `share` of the image's blocks, chosen at random: in each, one span of 64..512 KiB gets
 * new text or random content (a zero block thereby becomes allocated). Updates `image.hashes`.
 * @param {ImageInfo} image
 * @param {number} share
 * @param {number} seed
 * @returns {{ blocks: number[], ranges: { offset: number, length: number }[] }} the changed
 *   blocks and the changed byte ranges (what a changed-block-tracking driver would report)
 */
export function changeBlocks(image, share, seed) {
  const content = new ContentWriter(seed, 'changes');
  const rnd = prng(seed ^ 0xc4a9);
  const count = image.hashes.length;
  const n = Math.max(1, Math.round(count * share));
  const chosen = new Set();
  while (chosen.size < n) chosen.add(Math.floor(rnd() * count));
  const blocks = [...chosen].sort((a, b) => a - b);
  const ranges = [];
  const block = Buffer.alloc(BLOCK);
  const fd = openSync(image.path, 'r+');
  try {
    for (const b of blocks) {
      const length = (16 + Math.floor(rnd() * 113)) * PAGE;
      const offset = b * BLOCK + Math.floor(rnd() * ((BLOCK - length) / PAGE + 1)) * PAGE;
      const span = block.subarray(0, length);
      const kind = rnd() < 0.5 ? 'text' : 'random';
      content.fill(span, kind, offset, Math.floor(rnd() * (POOL / PAGE)) * PAGE);
      writeSync(fd, span, 0, length, offset);
      ranges.push({ offset, length });
      readFully(fd, block, b * BLOCK);
      image.hashes[b] = isZero(block) ? '' : sha256Hex(block);
    }
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  image.zeroBlocks = image.hashes.filter((h) => h === '').length;
  return { blocks, ranges };
}

/**
 * Reads `out.length` bytes at `position` of an open file.
 * @param {number} fd
 * @param {Buffer} out
 * @param {number} position
 */
export function readFully(fd, out, position) {
  let done = 0;
  while (done < out.length) {
    const n = readSync(fd, out, done, out.length - done, position + done);
    if (n === 0) throw new Error(`short read at ${position + done}`);
    done += n;
  }
}

/** @param {Uint8Array} bytes */
export function sha256Hex(bytes) {
  return createHash('sha256').update(bytes).digest('hex');
}

let zeros = Buffer.alloc(0);

/** @param {Buffer} bytes */
function isZero(bytes) {
  if (zeros.length < bytes.length) zeros = Buffer.alloc(bytes.length);
  return bytes.equals(zeros.subarray(0, bytes.length));
}
