import { open, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { expect } from 'vitest';
import { ivmr } from './helpers.js';

// Reading a repository's files as FORMAT.md lays them out, to damage a chosen block in tests.

/** The restore point `ivmr backup --json` prints (the fields used here). */
export interface PointJson {
  readonly id: string;
  readonly disks: { name: string; size: number; blockSize: number; map: string }[];
}

/** Where the index says a blob is stored. */
export interface BlobLocation {
  readonly pack: string;
  readonly offset: number;
  readonly rawLength: number;
  readonly frameSize: number;
  /** Stored length of each frame, its 9-byte header included. */
  readonly frames: number[];
}

/** Backs `image` up as the first disk of a new point of `vm`; returns the point. */
export async function backup(
  dir: string,
  repo: string,
  vm: string,
  image: Buffer,
): Promise<PointJson> {
  const path = join(dir, `${vm}.raw`);
  await writeFile(path, image);
  const b = await ivmr(['backup', path, '--repo', repo, '--vm', vm, '--json']);
  expect(b.code, b.stderr).toBe(0);
  return JSON.parse(b.stdout) as PointJson;
}

/** Block number to blob id (hex) of a block map object (FORMAT.md, "Block maps"). */
export async function readBlockMap(repo: string, map: string): Promise<Map<number, string>> {
  const b = await readFile(join(repo, 'maps', map));
  expect(b.subarray(0, 8).toString('latin1')).toBe('IVMRMAP1');
  const count = b.readUInt32BE(8 + 1 + 8 + 4);
  const blocks = new Map<number, string>();
  for (let i = 0, p = 25; i < count; i++, p += 40) {
    blocks.set(Number(b.readBigUInt64BE(p)), b.subarray(p + 8, p + 40).toString('hex'));
  }
  return blocks;
}

/** Every blob the repository's index objects list (FORMAT.md, "Index objects"). */
export async function readIndex(repo: string): Promise<Map<string, BlobLocation>> {
  const blobs = new Map<string, BlobLocation>();
  for (const name of await readdir(join(repo, 'index'))) {
    const b = await readFile(join(repo, 'index', name));
    expect(b.subarray(0, 8).toString('latin1')).toBe('IVMRIDX1');
    let p = 8;
    const packs = b.readUInt32BE(p);
    p += 4;
    for (let i = 0; i < packs; i++) {
      const nameLength = b.readUInt16BE(p);
      const pack = b.subarray(p + 2, p + 2 + nameLength).toString('utf8');
      p += 2 + nameLength + 8;
      const count = b.readUInt32BE(p);
      p += 4;
      for (let e = 0; e < count; e++) {
        const id = b.subarray(p, p + 32).toString('hex');
        const offset = Number(b.readBigUInt64BE(p + 32));
        const rawLength = b.readUInt32BE(p + 40);
        const frameSize = 2 ** b[p + 44]!;
        const frameCount = b.readUInt32BE(p + 45);
        p += 49;
        const frames: number[] = [];
        for (let f = 0; f < frameCount; f++, p += 4) frames.push(b.readUInt32BE(p));
        blobs.set(id, { pack, offset, rawLength, frameSize, frames });
      }
    }
  }
  return blobs;
}

/**
 * Flips one byte in the middle of frame `frame` of the blob that holds block `block` of the
 * point's first disk; returns the blob id and the disk bytes that frame holds.
 */
export async function corruptBlock(
  repo: string,
  point: PointJson,
  block: number,
  frame = 0,
): Promise<{ blob: string; pack: string; start: number; end: number }> {
  const disk = point.disks[0]!;
  const blob = (await readBlockMap(repo, disk.map)).get(block);
  expect(blob, `block ${block} has a blob`).toBeDefined();
  const loc = (await readIndex(repo)).get(blob!);
  expect(loc, `the index lists blob ${blob}`).toBeDefined();
  const frameStart = loc!.offset + loc!.frames.slice(0, frame).reduce((a, n) => a + n, 0);
  const at = frameStart + 9 + Math.floor((loc!.frames[frame]! - 9) / 2);
  const fh = await open(join(repo, 'packs', loc!.pack.slice(0, 2), loc!.pack), 'r+');
  try {
    const one = Buffer.alloc(1);
    await fh.read(one, 0, 1, at);
    one[0] = one[0]! ^ 0xff;
    await fh.write(one, 0, 1, at);
  } finally {
    await fh.close();
  }
  const start = block * disk.blockSize + frame * loc!.frameSize;
  return { blob: blob!, pack: loc!.pack, start, end: start + loc!.frameSize };
}
