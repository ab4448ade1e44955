import { dirname } from 'node:path';
import type { CacheFileSystem } from '../fs/cache-file-system.js';

/**
 * The saved state of a hydration (FORMAT.md, "Hydration progress"): how far the first copy got
 * and which chunks behind it changed since they were copied.
 */
export interface HydrationState {
  version: 1;
  /** Disk size the state is for. */
  size: number;
  chunkSize: number;
  /** Chunks before this one were copied (and are in `dirty` if they changed since). */
  cursor: number;
  /** Chunks to copy again, as runs `[first chunk, count]`. */
  dirty: [number, number][];
  /**
   * `running`: saved while copying (a crash may follow; still valid for the source's durable
   * state). `stopped`: saved by `stop()`; valid only if the source committed nothing since, so
   * `commitSeq` is kept to check it.
   */
  state: 'running' | 'stopped';
  /** The source's commit sequence when saved (`null` for a source that is never written). */
  commitSeq: number | null;
}

/** Reads a progress file; `undefined` when missing or not a valid state. */
export async function readProgress(
  fs: CacheFileSystem,
  path: string,
): Promise<HydrationState | undefined> {
  if (!(await fs.exists(path))) return undefined;
  const f = await fs.open(path, 'read');
  try {
    const size = await f.size();
    if (size > 64 << 20) return undefined;
    const bytes = new Uint8Array(size);
    await f.read(bytes, 0);
    const s = JSON.parse(new TextDecoder().decode(bytes)) as Partial<HydrationState>;
    const ok =
      s.version === 1 &&
      Number.isSafeInteger(s.size) &&
      Number.isSafeInteger(s.chunkSize) &&
      Number.isSafeInteger(s.cursor) &&
      Array.isArray(s.dirty) &&
      s.dirty.every(
        (r) => Array.isArray(r) && r.length === 2 && r.every((n) => Number.isSafeInteger(n)),
      ) &&
      (s.state === 'running' || s.state === 'stopped');
    return ok ? (s as HydrationState) : undefined;
  } catch {
    return undefined;
  } finally {
    await f.close();
  }
}

/** Writes a progress file atomically and durably: temporary file, sync, rename, folder sync. */
export async function writeProgress(
  fs: CacheFileSystem,
  path: string,
  state: HydrationState,
): Promise<void> {
  const tmp = `${path}.tmp`;
  const f = await fs.open(tmp, 'create');
  try {
    const bytes = new TextEncoder().encode(`${JSON.stringify(state)}\n`);
    await f.truncate(0);
    await f.write(bytes, 0);
    await f.sync();
  } finally {
    await f.close();
  }
  await fs.rename(tmp, path);
  await fs.syncDir(dirname(path));
}
