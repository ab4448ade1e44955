/**
 * Timed backups of the image into local repositories. Each backup is checked before its time
 * counts: the new point's block map must name, for every block, the blob whose id is the
 * SHA-256 of the image's block (blob ids are content hashes), and zero blocks must have none.
 */
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { FileBlockSource, openLocalRepository } from '@ivmr/core';
import { timed } from './measure.mjs';

export const VM = 'bench';
export const DISK = 'disk0';

/**
 * @typedef {object} BackupRun
 * @property {string} name
 * @property {string} codec
 * @property {number} seconds time of `Repository.backup` alone (repository already open)
 * @property {number} cpuSeconds process CPU time (user + system) during it
 * @property {number | null} othersCpuSeconds CPU time the rest of the machine used meanwhile
 * @property {string} point
 * @property {import('@ivmr/core').DiskBackupStats} stats
 * @property {number} repoBytes bytes the repository directory holds afterwards
 */

/**
 * Backs up the image into the repository in `dir` (created when missing): full when VM `bench`
 * has no point there yet, else an increment, by hashing or with `changedRanges`.
 * @param {string} name label of the run
 * @param {string} dir
 * @param {import('./image.mjs').ImageInfo} image
 * @param {{ codec?: 'lz4' | 'zstd', changedRanges?: { offset: number, length: number }[] }} [options]
 * @returns {Promise<BackupRun>}
 */
export async function timeBackup(name, dir, image, options = {}) {
  const codec = options.codec ?? 'lz4';
  const repo = await openLocalRepository(dir, { create: true, codec });
  const source = await FileBlockSource.open(image.path);
  try {
    let point;
    const timing = await timed(async () => {
      point = await repo.backup({
        vm: VM,
        disks: [{ name: DISK, source, changedRanges: options.changedRanges }],
      });
    });
    const opened = await repo.openPoint(VM, point.id);
    try {
      checkBlockMap(opened.disk(DISK), image.hashes, `${name} (point ${point.id})`);
    } finally {
      await opened.close();
    }
    return {
      name,
      codec,
      ...timing,
      point: point.id,
      stats: point.disks[0].stats,
      repoBytes: await treeBytes(dir),
    };
  } finally {
    await source.close();
    await repo.close();
  }
}

/**
 * Throws unless every block of `disk` resolves to the blob the image's block hashes to.
 * @param {import('@ivmr/core').RestoreDisk} disk
 * @param {string[]} hashes SHA-256 hex per block, '' for an all-zero block
 * @param {string} what
 */
export function checkBlockMap(disk, hashes, what) {
  if (disk.blockCount !== hashes.length)
    throw new Error(`${what}: ${disk.blockCount} blocks, the image has ${hashes.length}`);
  for (let i = 0; i < hashes.length; i++) {
    const got = disk.blobOf(i) ?? '';
    if (got !== hashes[i]) {
      throw new Error(
        `${what}: block ${i} is ${got || 'zero'}, the image's block is ${hashes[i] || 'zero'}`,
      );
    }
  }
}

/**
 * Total size of the files under `dir`.
 * @param {string} dir
 * @returns {Promise<number>}
 */
export async function treeBytes(dir) {
  let total = 0;
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) total += await treeBytes(path);
    else if (entry.isFile()) total += (await stat(path)).size;
  }
  return total;
}
