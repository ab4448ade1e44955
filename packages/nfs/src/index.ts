/**
 * `@ivmr/nfs`: an embeddable NFSv3 server (ONC RPC over TCP, XDR, portmap/rpcbind, MOUNT v1/v3,
 * the 22 NFSv3 procedures) with one filesystem adapter interface, {@link NfsFileSystem}. It knows
 * nothing of backups or VMs: serve anything with it.
 *
 * @packageDocumentation
 */
export { describeCall } from './call-names.js';
export { NfsError, NfsErrorCode, type NfsErrorCodeValue } from './errors.js';
export type { ExportOptions } from './exports.js';
export {
  type CreateMode,
  type DirectoryEntry,
  type FileAttributes,
  type FileType,
  type FsStat,
  type NfsFileSystem,
  type NfsRequestContext,
  NfsStatus,
  NfsStatusError,
  type NfsStatusName,
  type NfsTime,
  type SetAttributes,
  type StableHow,
  statusOfError,
} from './filesystem.js';
export { MAX_HANDLE_SIZE } from './handles.js';
export type { CallEvent, CallInFlight, RemoteInfo, RpcCall } from './rpc/dispatcher.js';
export {
  NfsServer,
  type NfsServerAddress,
  type NfsServerOptions,
  type PortmapMode,
} from './server.js';
