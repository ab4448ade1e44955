import type { ProcedureHandler, RpcProgram } from '../rpc/dispatcher.js';
import type { ServerState } from '../state.js';
import { Nfs3Proc } from './constants.js';
import { Nfs3Context, type Nfs3Procedure } from './context.js';
import { access3, getattr3, null3, setattr3 } from './procedures/attributes.js';
import { create3, mkdir3, mknod3, symlink3 } from './procedures/create.js';
import { fsinfo3, fsstat3, pathconf3 } from './procedures/fs-info.js';
import { lookup3, readlink3 } from './procedures/lookup.js';
import { commit3, read3, write3 } from './procedures/read-write.js';
import { readdir3, readdirplus3 } from './procedures/readdir.js';
import { link3, remove3, rename3, rmdir3 } from './procedures/remove.js';

/** `program NFS_PROGRAM { version NFS_V3 { ... } = 3; } = 100003;` (RFC 1813 §3). */
export const NFS_PROGRAM = 100003;
export const NFS_V3 = 3;

/** The procedures of NFS version 3, indexed by procedure number. */
const PROCEDURES: readonly Nfs3Procedure[] = [
  null3,
  getattr3,
  setattr3,
  lookup3,
  access3,
  readlink3,
  read3,
  write3,
  create3,
  mkdir3,
  symlink3,
  mknod3,
  remove3,
  rmdir3,
  rename3,
  link3,
  readdir3,
  readdirplus3,
  fsstat3,
  fsinfo3,
  pathconf3,
  commit3,
];

/**
 * The NFS program, version 3, over the server's exports. CREATE, MKDIR, SYMLINK, MKNOD, REMOVE,
 * RMDIR, RENAME and LINK are not idempotent: the dispatcher's duplicate request cache replays
 * their replies to a retransmitted xid instead of running them again.
 */
export function createNfs3Program(state: ServerState): RpcProgram {
  const nfs = new Nfs3Context(state);
  const handlers = PROCEDURES.map(
    (procedure): ProcedureHandler =>
      (call, args) =>
        procedure(nfs, call, args),
  );
  return {
    prog: NFS_PROGRAM,
    versions: new Map([[NFS_V3, handlers]]),
    nonIdempotent: (vers, proc) =>
      vers === NFS_V3 && proc >= Nfs3Proc.CREATE && proc <= Nfs3Proc.LINK,
  };
}
