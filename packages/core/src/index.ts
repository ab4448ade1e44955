/**
 * `@ivmr/core`: block sources, the deduplicated compressed backup repository, backup chains
 * and the store adapter contract. The on-disk format is specified in FORMAT.md.
 *
 * @packageDocumentation
 */
export {
  type BlockSource,
  checkReadRange,
  FileBlockSource,
  MemoryBlockSource,
  settleAll,
} from './block-source.js';
export { ErrorCode, type ErrorCodeValue, IvmrError, isIvmrError } from './errors.js';
export type { CodecName } from './format/codec.js';
export type { BackupDisk, BackupOptions, BackupProgress } from './repository/backup.js';
export type { FrameCacheOptions } from './repository/blob-reader.js';
export type { RepositoryConfig, RepositoryInitOptions } from './repository/config.js';
export type { DamagedObject } from './repository/context.js';
export {
  DecodePool,
  type DecodePoolOptions,
  type DecodePoolStats,
} from './repository/decode-pool.js';
export { type ByteRange, RestoreDisk } from './repository/disk-source.js';
export type { ForgetOptions, ForgetReport, PruneReport } from './repository/forget.js';
export type {
  DiskBackupStats,
  Firmware,
  NicConfig,
  PointDisk,
  PointKind,
  RestorePointInfo,
  VmConfig,
} from './repository/points.js';
export {
  type LocalRepositoryOptions,
  openLocalRepository,
  type RepairReport,
  Repository,
  type RepositoryOpenOptions,
  RestorePoint,
} from './repository/repository.js';
export type {
  AffectedDisk,
  DamagedBlob,
  VerifyOptions,
  VerifyReport,
} from './repository/verify.js';
export {
  type ByteRangeRequest,
  isValidObjectName,
  OBJECT_KINDS,
  type ObjectInfo,
  type ObjectKind,
  type StoreAdapter,
} from './store/adapter.js';
export { LocalStore, type LocalStoreOptions } from './store/local-store.js';
export { MemoryStore } from './store/memory-store.js';
