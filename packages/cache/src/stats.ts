import type { OverlayStats } from './overlay/write-overlay.js';
import type { ReadCacheStats } from './read-cache/read-cache.js';

/** The figures issue #5 asks for, across a session's overlay and read cache. */
export interface CacheStats {
  /** Block reads served by the read cache. */
  readonly hits: number;
  /** Block reads that waited for the backup. */
  readonly misses: number;
  /** Bytes read from the backup (by the read cache, or by the overlay when there is none). */
  readonly bytesFromBase: number;
  /** Bytes of backup reads the read cache served from local disk. */
  readonly bytesFromCache: number;
  /** Bytes the read cache dropped to make room. */
  readonly bytesPruned: number;
  /** Bytes of the overlay changed since its last flush. */
  readonly dirtyBytes: number;
  /** Bytes the overlay holds. */
  readonly overlayBytes: number;
  /** Bytes the read cache holds. */
  readonly cachedBytes: number;
  /** Free bytes of the cache volume at the read cache's last statfs (NaN when unknown). */
  readonly freeBytes: number;
}

/** Combines the stats of an overlay and (optionally) the read cache beneath it. */
export function cacheStats(
  overlay: { stats(): OverlayStats },
  readCache?: {
    stats(): ReadCacheStats;
  },
): CacheStats {
  const o = overlay.stats();
  const r = readCache?.stats();
  return {
    hits: r?.hits ?? 0,
    misses: r?.misses ?? 0,
    bytesFromBase: r ? r.bytesFromSource : o.baseBytesRead,
    bytesFromCache: r?.bytesFromCache ?? 0,
    bytesPruned: r?.bytesPruned ?? 0,
    dirtyBytes: o.dirtyBytes,
    overlayBytes: o.usedBytes,
    cachedBytes: r?.cachedBytes ?? 0,
    freeBytes: r?.freeBytes ?? Number.NaN,
  };
}
