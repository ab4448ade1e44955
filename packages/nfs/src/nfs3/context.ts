import type { ExportEntry } from '../exports.js';
import {
  type FileAttributes,
  type NfsFileSystem,
  type NfsRequestContext,
  NfsStatus,
  NfsStatusError,
  statusOfError,
} from '../filesystem.js';
import {
  type ReplyEncoder,
  RpcAcceptError,
  RpcAuthError,
  type RpcCall,
} from '../rpc/dispatcher.js';
import { AuthFlavor, AuthStat } from '../rpc/message.js';
import type { ServerState } from '../state.js';
import type { XdrReader } from '../xdr/reader.js';
import type { AccessUser, Writability } from './access.js';
import { BufferPool } from './buffer-pool.js';
import { ParentMap } from './parent-map.js';

/** A file a call is about: its export, the export's adapter, the file id and the caller. */
export interface Target {
  readonly exp: ExportEntry;
  readonly fs: NfsFileSystem;
  readonly id: bigint;
  readonly ctx: NfsRequestContext;
}

/**
 * An NFSv3 procedure: decodes its arguments from `args` before its first `await` (the dispatcher
 * turns a decoding error into GARBAGE_ARGS), then answers every failure of the adapter with an
 * nfsstat3 and the attributes RFC 1813 puts in that reply; it never rejects for them.
 */
export type Nfs3Procedure = (
  nfs: Nfs3Context,
  call: RpcCall,
  args: XdrReader,
) => ReplyEncoder | Promise<ReplyEncoder>;

/**
 * What the NFSv3 procedures share: turning file handles into {@link Target}s (with the export's
 * access rules and squashing), errors into statuses, and the per-export parent maps.
 */
export class Nfs3Context {
  readonly state: ServerState;
  /** Data buffers of READ replies, reused once each reply is written. */
  readonly readBuffers = new BufferPool();
  readonly #exports: ReadonlyMap<number, ExportEntry>;
  readonly #parents = new Map<number, ParentMap>();
  readonly #writability = new Map<number, Writability>();

  constructor(state: ServerState) {
    this.state = state;
    this.#exports = new Map(state.exports.map((e) => [e.id, e]));
    for (const e of state.exports) this.#writability.set(e.id, writabilityOf(e));
  }

  /**
   * The target a file handle names, for this call. A handle that is not shaped like ours:
   * NFS3ERR_BADHANDLE; signed with another key, tampered with, or of an export that is gone:
   * NFS3ERR_STALE; of an export this client may not use: NFS3ERR_ACCES. A credential flavor the
   * export does not accept denies the call with AUTH_TOOWEAK.
   */
  resolve(call: RpcCall, fh: Uint8Array): Target {
    const decoded = this.state.handles.decode(fh);
    if (decoded === 'bad') throw NfsStatusError.of('BADHANDLE');
    if (decoded === 'stale') throw NfsStatusError.of('STALE');
    const exp = this.#exports.get(decoded.exportId);
    if (exp === undefined) throw NfsStatusError.of('STALE', 'the export of this handle is gone');
    if (!exp.allow(call.remote.address)) {
      throw NfsStatusError.of('ACCES', `client ${call.remote.address} may not use ${exp.path}`);
    }
    if (call.authFlavor === AuthFlavor.AUTH_SYS ? !exp.allowSys : !exp.allowNone) {
      throw new RpcAuthError(AuthStat.AUTH_TOOWEAK);
    }
    return { exp, fs: exp.fs, id: decoded.fileId, ctx: requestContext(exp, call) };
  }

  /** The file handle of file `id` in `t`'s export. */
  handle(t: Target, id: bigint = t.id): Buffer {
    return this.state.handles.encode(t.exp.id, id);
  }

  /** The parent map of an export. */
  parents(exp: ExportEntry): ParentMap {
    let m = this.#parents.get(exp.id);
    if (m === undefined) {
      m = new ParentMap();
      this.#parents.set(exp.id, m);
    }
    return m;
  }

  /**
   * The parent of directory `t.id`: itself for the export's root, else the learned parent, or
   * undefined when it is not known (see parent-map.ts).
   */
  parentOf(t: Target): bigint | undefined {
    if (t.id === t.fs.rootId) return t.id;
    return this.parents(t.exp).get(t.id);
  }

  /**
   * The nfsstat3 for an error caught in a procedure: the adapter's status, or NFS3ERR_IO after
   * reporting an unexpected error. RPC-level errors (AUTH_TOOWEAK) are rethrown for the
   * dispatcher.
   */
  statusOf(err: unknown, call: RpcCall): number {
    if (err instanceof RpcAuthError || err instanceof RpcAcceptError) throw err;
    const status = statusOfError(err);
    if (status !== undefined && status !== NfsStatus.OK) return status;
    this.state.reportError(err, call);
    return NfsStatus.IO;
  }

  /** Attributes for a reply's post_op_attr / wcc_data: best effort, undefined on any error. */
  async attrs(t: Target, id: bigint = t.id): Promise<FileAttributes | undefined> {
    try {
      return await t.fs.getattr(id, t.ctx);
    } catch {
      return undefined;
    }
  }

  /** The id of `name` in directory `dir`, or undefined on any error. */
  async lookupQuietly(dir: Target, name: string): Promise<bigint | undefined> {
    try {
      return await dir.fs.lookup(dir.id, name, dir.ctx);
    } catch {
      return undefined;
    }
  }

  /** The writeverf3 of WRITE and COMMIT replies: the adapter's, else the server's boot verifier. */
  writeVerifier(fs: NfsFileSystem): Uint8Array {
    const v = fs.writeVerifier?.() ?? this.state.bootVerifier;
    if (v.length === 8) return v;
    const fixed = new Uint8Array(8);
    fixed.set(v.subarray(0, 8));
    return fixed;
  }

  /** What the export and its adapter allow to change (for ACCESS). */
  writability(exp: ExportEntry): Writability {
    return this.#writability.get(exp.id)!;
  }

  /** The caller as ACCESS judges it; AUTH_NONE calls are the export's anonymous user. */
  accessUser(t: Target): AccessUser {
    return t.ctx.user ?? { uid: t.exp.anonUid, gid: t.exp.anonGid, gids: [] };
  }
}

/**
 * NFS3ERR_ROFS unless `t`'s export is writable and its adapter implements the change
 * (`hasMethod`).
 */
export function requireWritable(t: Target, hasMethod: boolean): void {
  if (t.exp.readOnly) throw NfsStatusError.of('ROFS', `${t.exp.path} is exported read-only`);
  if (!hasMethod) throw NfsStatusError.of('ROFS', `${t.exp.path} cannot do this change`);
}

/**
 * The adapter's view of the caller: AUTH_SYS ids after the export's squashing (`allSquash`: all
 * users become the anonymous user; `rootSquash`: uid 0 and gid 0 do), or null for AUTH_NONE.
 */
function requestContext(exp: ExportEntry, call: RpcCall): NfsRequestContext {
  const sys = call.authSys;
  let user: NfsRequestContext['user'] = null;
  if (sys !== undefined) {
    if (exp.allSquash) user = { uid: exp.anonUid, gid: exp.anonGid, gids: [] };
    else if (exp.rootSquash) {
      user = {
        uid: sys.uid === 0 ? exp.anonUid : sys.uid,
        gid: sys.gid === 0 ? exp.anonGid : sys.gid,
        gids: sys.gids.map((g) => (g === 0 ? exp.anonGid : g)),
      };
    } else user = { uid: sys.uid, gid: sys.gid, gids: sys.gids };
  }
  return { user, clientAddress: call.remote.address, exportPath: exp.path };
}

function writabilityOf(exp: ExportEntry): Writability {
  if (exp.readOnly) return { files: false, addEntries: false, removeEntries: false };
  const fs = exp.fs;
  return {
    files: fs.write !== undefined,
    addEntries:
      fs.create !== undefined ||
      fs.mkdir !== undefined ||
      fs.symlink !== undefined ||
      fs.link !== undefined ||
      fs.rename !== undefined,
    removeEntries: fs.remove !== undefined || fs.rmdir !== undefined || fs.rename !== undefined,
  };
}
