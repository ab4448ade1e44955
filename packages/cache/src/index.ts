/**
 * `@ivmr/cache`: the copy-on-write cache of a recovered VM. A {@link WriteOverlay} takes every
 * write so the backup is never modified; a {@link ReadCache} keeps decoded backup blocks on local
 * disk, circularly, above a free-space floor; {@link startHydration} copies the merged disk to a
 * production file while the VM runs. The on-disk formats are specified in FORMAT.md.
 *
 * @packageDocumentation
 */
export { fromSystemError, noSpaceError, readOnlyError } from './errors.js';
export type {
  CacheFile,
  CacheFileSystem,
  StatFs,
  VolumeSpace,
} from './fs/cache-file-system.js';
export { nodeFileSystem, nodeStatFs } from './fs/node-file-system.js';
export {
  type Hydration,
  type HydrationOptions,
  type HydrationPhase,
  type HydrationProgress,
  type HydrationSource,
  startHydration,
} from './hydration/hydration.js';
export {
  type OverlayMode,
  type OverlayStats,
  type OverlayWatcher,
  WriteOverlay,
  type WriteOverlayOptions,
} from './overlay/write-overlay.js';
export {
  ReadCache,
  type ReadCacheOptions,
  type ReadCacheStats,
} from './read-cache/read-cache.js';
export type { FloorOptions } from './read-cache/space-guard.js';
export {
  DEFAULT_FLOOR_FRACTION,
  defaultRecoveryMinFree,
  type RecoverySpaceOptions,
  requireRecoverySpace,
} from './space/free-space.js';
export { type CacheStats, cacheStats } from './stats.js';
export type { WritableBlockSource } from './writable-block-source.js';
