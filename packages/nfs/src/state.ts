import type { ExportEntry } from './exports.js';
import type { HandleCodec } from './handles.js';
import type { RpcCall } from './rpc/dispatcher.js';

/** Transfer sizes the server advertises in FSINFO and enforces. */
export interface TransferSizes {
  /** Largest READ (rtmax) and WRITE (wtmax) in bytes. */
  readonly rtmax: number;
  readonly wtmax: number;
  /** Preferred READDIR size. */
  readonly dtpref: number;
}

/** Who mounted what (MOUNT DUMP), keyed by client address. */
export type MountTable = Map<string, Set<string>>;

/**
 * What the MOUNT and NFS programs share: the exports, the handle codec, the mount table and the
 * server's settings. Internal to the package.
 */
export interface ServerState {
  readonly exports: readonly ExportEntry[];
  readonly handles: HandleCodec;
  readonly mounts: MountTable;
  readonly sizes: TransferSizes;
  /** Write verifier used when the adapter has none: random per server start. */
  readonly bootVerifier: Buffer;
  /** Reports an unexpected adapter error (answered NFS3ERR_IO / SERVERFAULT). */
  readonly reportError: (error: unknown, call: RpcCall) => void;
}

/** The export with this id, if any. */
export function exportById(state: ServerState, id: number): ExportEntry | undefined {
  return state.exports.find((e) => e.id === id);
}

/** The export with this path (trailing slashes ignored), if any. */
export function exportByPath(state: ServerState, path: string): ExportEntry | undefined {
  const p = path.length > 1 ? path.replace(/\/+$/, '') : path;
  return state.exports.find((e) => e.path === p);
}
