import { randomBytes } from 'node:crypto';
import { open, readFile, rename } from 'node:fs/promises';
import { dirname, join } from 'node:path';

/** Suffix of the temporary files {@link writeDurably} renames into place; never listed. */
export const TEMPORARY_SUFFIX = '.ivmr-tmp';

/**
 * fsync of a file or folder by path: for a file, its data and attributes (after truncate,
 * chmod, chown, utimes); for a folder, the creations, renames and removals in it.
 */
export async function syncPath(path: string): Promise<void> {
  const fh = await open(path, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * Replaces `path` with `data` so that a crash leaves either the old or the new content: written
 * to a temporary file, synced, renamed into place, and the folder synced.
 */
export async function writeDurably(
  path: string,
  data: string | Uint8Array,
  mode = 0o644,
): Promise<void> {
  const tmp = `${path}${TEMPORARY_SUFFIX}`;
  const fh = await open(tmp, 'w', mode);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, path);
  await syncPath(dirname(path));
}

/**
 * The 32-byte secret that signs the file handles of a cache folder (`<cacheDir>/handle.key`),
 * created on first use. Handles a hypervisor holds stay valid across server restarts only while
 * the key does, so it is written durably. A key file of the wrong size (damaged outside ivmr) is
 * replaced and `onReplace` is called: handles signed with it are lost anyway.
 */
export async function loadHandleKey(
  cacheDir: string,
  onReplace?: (path: string, size: number) => void,
): Promise<Buffer> {
  const path = join(cacheDir, 'handle.key');
  try {
    const key = await readFile(path);
    if (key.length === 32) return key;
    onReplace?.(path, key.length);
  } catch (err) {
    if ((err as { code?: string }).code !== 'ENOENT') throw err;
  }
  const key = randomBytes(32);
  await writeDurably(path, key, 0o600);
  return key;
}
