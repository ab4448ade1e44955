/**
 * `@ivmr/recovery`: instant recovery sessions and the NFS datastore that presents them. A
 * {@link RecoverySession} opens a restore point, puts a copy-on-write overlay over each disk and
 * writes the VM's `.vmx` and descriptors; a {@link RecoveryDatastore} is the `NfsFileSystem` that
 * serves every session as a VM folder through `@ivmr/nfs`; a {@link RecoveryService} starts,
 * stops, lists and migrates the sessions of a cache folder while it is served, and
 * {@link serveControl} / {@link callControl} let other processes (`ivmr sessions`, `ivmr stop`,
 * `ivmr migrate`) drive it.
 *
 * @packageDocumentation
 */
export {
  type BootCheckOptions,
  type BootReport,
  bootQemu,
  checkBoot,
  type QemuBootOptions,
  type QemuBootRun,
} from './boot-check.js';
export {
  type BootProfile,
  BootProfiles,
  type BootRead,
  type PrefetchOptions,
  type PrefetchReport,
} from './boot-profile.js';
export {
  type ControlMethod,
  type ControlServer,
  callControl,
  controlSocketPath,
  serveControl,
} from './control.js';
export { RecoveryDatastore } from './datastore.js';
export { loadHandleKey } from './durable.js';
export { HostFiles } from './host-files.js';
export {
  type DiskMigrationProgress,
  Migration,
  type MigrationFormat,
  type MigrationProgress,
  type MigrationState,
} from './migration.js';
export {
  type BootPrefetchMode,
  type RecoveryLog,
  RecoveryService,
  type RecoveryServiceOptions,
  type ServiceMigrateOptions,
  type ServiceStartOptions,
  type SessionInfo,
} from './service.js';
export {
  RecoverySession,
  type SessionDisk,
  type SessionDiskStats,
  type SessionMigrateOptions,
  type SessionMode,
  type SessionState,
  type StartSessionOptions,
} from './session.js';
