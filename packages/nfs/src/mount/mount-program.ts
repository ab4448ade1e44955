import { isIP } from 'node:net';
import type { ExportEntry } from '../exports.js';
import { type NfsRequestContext, statusOfError } from '../filesystem.js';
import type { ProcedureHandler, ReplyEncoder, RpcCall, RpcProgram } from '../rpc/dispatcher.js';
import { AuthFlavor } from '../rpc/message.js';
import type { ServerState } from '../state.js';
import type { XdrReader } from '../xdr/reader.js';
import type { XdrWriter } from '../xdr/writer.js';

/** `MOUNT_PROGRAM` (RFC 1813 appendix I). */
export const MOUNT_PROGRAM = 100005;

/** MOUNT procedures, the same numbers in v1 and v3. */
export const MountProc = { NULL: 0, MNT: 1, DUMP: 2, UMNT: 3, UMNTALL: 4, EXPORT: 5 } as const;

// const MNTPATHLEN = 1024;  /* Maximum bytes in a path name */
// const MNTNAMLEN  = 255;   /* Maximum bytes in a name */
// const FHSIZE     = 32;    /* Size in bytes of a v1 file handle (RFC 1094) */
export const MNTPATHLEN = 1024;
export const MNTNAMLEN = 255;
export const FHSIZE = 32;

// enum mountstat3 {
//   MNT3_OK = 0, MNT3ERR_PERM = 1, MNT3ERR_NOENT = 2, MNT3ERR_IO = 5, MNT3ERR_ACCES = 13,
//   MNT3ERR_NOTDIR = 20, MNT3ERR_INVAL = 22, MNT3ERR_NAMETOOLONG = 63,
//   MNT3ERR_NOTSUPP = 10004, MNT3ERR_SERVERFAULT = 10006
// };
export const MountStat3 = {
  MNT3_OK: 0,
  MNT3ERR_PERM: 1,
  MNT3ERR_NOENT: 2,
  MNT3ERR_IO: 5,
  MNT3ERR_ACCES: 13,
  MNT3ERR_NOTDIR: 20,
  MNT3ERR_INVAL: 22,
  MNT3ERR_NAMETOOLONG: 63,
  MNT3ERR_NOTSUPP: 10004,
  MNT3ERR_SERVERFAULT: 10006,
} as const;

const MOUNTSTATS = new Set<number>(Object.values(MountStat3));

/** A reply encoder that appends no data after the body. */
const encoder =
  (write: (w: XdrWriter) => void): ReplyEncoder =>
  (w) => {
    write(w);
    return undefined;
  };

/** At most this many clients are remembered for DUMP; the oldest is forgotten first. */
const MAX_MOUNT_CLIENTS = 1024;

/** The result of MNT before it is encoded in the v1 or v3 shape. */
type MntResult = { status: 0; handle: Buffer; flavors: number[] } | { status: number };

// typedef string dirpath<MNTPATHLEN>;
/** Decodes a `dirpath`: longer paths are malformed arguments (GARBAGE_ARGS). */
export function readDirpath(r: XdrReader): string {
  return r.string(MNTPATHLEN, 'dirpath');
}

// struct mountres3_ok {
//   fhandle3   fhandle;          /* typedef opaque fhandle3<FHSIZE3>; */
//   int        auth_flavors<>;
// };
// union mountres3 switch (mountstat3 fhs_status) {
//   case MNT3_OK: mountres3_ok mountinfo;
//   default:      void;
// };
/** Encodes a `mountres3`. */
export function writeMountres3(w: XdrWriter, res: MntResult): void {
  w.u32(res.status);
  if (!('handle' in res)) return;
  w.opaque(res.handle).u32(res.flavors.length);
  for (const f of res.flavors) w.u32(f);
}

// typedef opaque fhandle[FHSIZE];
// union fhstatus switch (unsigned fhs_status) {   /* 0 or a UNIX error number */
//   case 0:  fhandle fhs_fhandle;
//   default: void;
// };
/** Encodes a MOUNT v1 `fhstatus` (RFC 1094 appendix A). Our handles are exactly FHSIZE bytes. */
export function writeFhstatus(w: XdrWriter, res: MntResult): void {
  if (!('handle' in res)) {
    // The errno values of the v3 statuses we produce are the same numbers; the NFSv3-only
    // ones have no errno, so they become EIO.
    w.u32(res.status > 10000 ? MountStat3.MNT3ERR_IO : res.status);
    return;
  }
  if (res.handle.length !== FHSIZE) {
    w.u32(MountStat3.MNT3ERR_IO);
    return;
  }
  w.u32(0).fixed(res.handle);
}

// typedef struct mountbody *mountlist;
// struct mountbody {
//   name       ml_hostname;      /* typedef string name<MNTNAMLEN>; */
//   dirpath    ml_directory;
//   mountlist  ml_next;
// };
/** Encodes a `mountlist` from (client, path) pairs. */
export function writeMountlist(w: XdrWriter, list: readonly (readonly [string, string])[]): void {
  for (const [host, dir] of list) w.bool(true).string(host).string(dir);
  w.bool(false);
}

// typedef struct groupnode *groups;
// struct groupnode {
//   name     gr_name;
//   groups   gr_next;
// };
// typedef struct exportnode *exports;
// struct exportnode {
//   dirpath  ex_dir;
//   groups   ex_groups;
//   exports  ex_next;
// };
/** Encodes an `exports` list. */
export function writeExports(
  w: XdrWriter,
  list: readonly { dir: string; groups: readonly string[] }[],
): void {
  for (const e of list) {
    w.bool(true).string(e.dir);
    for (const g of e.groups) w.bool(true).string(g);
    w.bool(false);
  }
  w.bool(false);
}

/**
 * MOUNT v3 (RFC 1813 appendix I) and v1 (RFC 1094 appendix A): hands out the root handle of an
 * export, or of a directory inside it, to allowed clients and keeps the table DUMP shows.
 * The table is informational (as in every implementation): NFS calls are checked on their own.
 */
export function createMountProgram(state: ServerState): RpcProgram {
  const mnt = async (call: RpcCall, path: string): Promise<MntResult> => {
    const parts = path.split('/').filter((p) => p !== '' && p !== '.');
    if (!path.startsWith('/') || parts.includes('..')) return { status: MountStat3.MNT3ERR_INVAL };
    const canonical = `/${parts.join('/')}`;
    const exp = exportOf(state.exports, parts);
    if (!exp) return { status: MountStat3.MNT3ERR_NOENT };
    if (!exp.allow(call.remote.address)) return { status: MountStat3.MNT3ERR_ACCES };
    let id = exp.fs.rootId;
    const rest = parts.slice(exp.path === '/' ? 0 : exp.path.split('/').length - 1);
    if (rest.length > 0) {
      const ctx = contextOf(call, exp);
      try {
        for (const name of rest) id = await exp.fs.lookup(id, name, ctx);
        if ((await exp.fs.getattr(id, ctx)).type !== 'directory')
          return { status: MountStat3.MNT3ERR_NOTDIR };
      } catch (err) {
        const status = statusOfError(err);
        if (status === undefined) {
          state.reportError(err, call);
          return { status: MountStat3.MNT3ERR_SERVERFAULT };
        }
        return { status: MOUNTSTATS.has(status) ? status : MountStat3.MNT3ERR_NOENT };
      }
    }
    remember(state, clientOf(call), canonical);
    const flavors: number[] = [];
    if (exp.allowSys) flavors.push(AuthFlavor.AUTH_SYS);
    if (exp.allowNone) flavors.push(AuthFlavor.AUTH_NONE);
    return { status: 0, handle: state.handles.encode(exp.id, id), flavors };
  };

  // void MOUNTPROC3_NULL(void) = 0;
  const nul: ProcedureHandler = () => () => undefined;

  // mountres3 MOUNTPROC3_MNT(dirpath) = 1;     fhstatus MOUNTPROC_MNT(dirpath) = 1;  (v1)
  const mnt3: ProcedureHandler = async (call, args) => {
    const res = await mnt(call, readDirpath(args));
    return encoder((w) => writeMountres3(w, res));
  };
  const mnt1: ProcedureHandler = async (call, args) => {
    const res = await mnt(call, readDirpath(args));
    return encoder((w) => writeFhstatus(w, res));
  };

  // mountlist MOUNTPROC3_DUMP(void) = 2;
  const dump: ProcedureHandler = () => {
    const list: [string, string][] = [];
    for (const [client, paths] of state.mounts) for (const p of paths) list.push([client, p]);
    return encoder((w) => writeMountlist(w, list));
  };

  // void MOUNTPROC3_UMNT(dirpath) = 3;
  const umnt: ProcedureHandler = (call, args) => {
    const path = readDirpath(args);
    const client = clientOf(call);
    const paths = state.mounts.get(client);
    if (paths) {
      paths.delete(
        `/${path
          .split('/')
          .filter((p) => p !== '' && p !== '.')
          .join('/')}`,
      );
      if (paths.size === 0) state.mounts.delete(client);
    }
    return () => undefined;
  };

  // void MOUNTPROC3_UMNTALL(void) = 4;
  const umntall: ProcedureHandler = (call) => {
    state.mounts.delete(clientOf(call));
    return () => undefined;
  };

  // exports MOUNTPROC3_EXPORT(void) = 5;
  const exportList: ProcedureHandler = () => {
    const list = state.exports.map((e) => ({ dir: e.path, groups: groupsOf(e.clients) }));
    return encoder((w) => writeExports(w, list));
  };

  return {
    prog: MOUNT_PROGRAM,
    versions: new Map([
      [1, [nul, mnt1, dump, umnt, umntall, exportList]],
      [3, [nul, mnt3, dump, umnt, umntall, exportList]],
    ]),
    // MNT's result starts with its status (mountstat3, or a v1 fhs_status): call events report it.
    resultStatus: (_vers, proc) => proc === 1,
  };
}

/** The export a path lies in: the longest export path that is a whole-component prefix of it. */
function exportOf(
  exports: readonly ExportEntry[],
  parts: readonly string[],
): ExportEntry | undefined {
  let best: ExportEntry | undefined;
  let bestDepth = -1;
  for (const e of exports) {
    const ep = e.path === '/' ? [] : e.path.split('/').slice(1);
    if (ep.length > parts.length || ep.length <= bestDepth) continue;
    if (ep.every((p, i) => p === parts[i])) {
      best = e;
      bestDepth = ep.length;
    }
  }
  return best;
}

/** The client's address as DUMP shows it (IPv4 clients of a dual-stack listener unmapped). */
function clientOf(call: RpcCall): string {
  const a = call.remote.address;
  return a.startsWith('::ffff:') && isIP(a.slice(7)) === 4 ? a.slice(7) : a;
}

function remember(state: ServerState, client: string, path: string): void {
  const paths = state.mounts.get(client) ?? new Set<string>();
  state.mounts.delete(client);
  state.mounts.set(client, paths.add(path));
  if (state.mounts.size > MAX_MOUNT_CLIENTS)
    state.mounts.delete(state.mounts.keys().next().value as string);
}

/** EXPORT's groups: the configured clients, with "everyone" shown as `*` like other servers. */
function groupsOf(clients: readonly string[]): string[] {
  return [...new Set(clients.map((c) => (c === '0.0.0.0/0' || c === '::/0' ? '*' : c)))];
}

/**
 * The adapter context of the lookups of a MNT below an export's root, squashed as NFS calls are
 * (`allSquash`: everyone is the anonymous user; `rootSquash`: uid 0 and gid 0 are).
 */
function contextOf(call: RpcCall, exp: ExportEntry): NfsRequestContext {
  const sys = call.authSys;
  let user: NfsRequestContext['user'] = null;
  if (sys) {
    const squash = (id: number, anon: number) =>
      exp.allSquash || (exp.rootSquash && id === 0) ? anon : id;
    user = {
      uid: squash(sys.uid, exp.anonUid),
      gid: squash(sys.gid, exp.anonGid),
      gids: exp.allSquash ? [] : sys.gids.map((g) => squash(g, exp.anonGid)),
    };
  }
  return { user, clientAddress: call.remote.address, exportPath: exp.path };
}
