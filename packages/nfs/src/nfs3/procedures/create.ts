import { xdrError } from '../../errors.js';
import { type CreateMode, type FileAttributes, NfsStatusError } from '../../filesystem.js';
import type { ReplyEncoder, RpcCall } from '../../rpc/dispatcher.js';
import { Ftype3, NFS3_OK } from '../constants.js';
import { type Nfs3Context, type Nfs3Procedure, requireWritable, type Target } from '../context.js';
import { newEntryName } from '../names.js';
import {
  type Diropargs3,
  readDiropargs3,
  readSattr3,
  writePostOpAttr,
  writePostOpFh3,
  writeWccData,
} from '../types.js';
import { failWithWcc } from './replies.js';

/**
 * The common part of CREATE, MKDIR, SYMLINK and MKNOD, whose replies share one shape:
 * ```
 * struct CREATE3resok { post_op_fh3 obj; post_op_attr obj_attributes; wcc_data dir_wcc; };
 * struct CREATE3resfail { wcc_data dir_wcc; };
 * ```
 * (MKDIR3res, SYMLINK3res and MKNOD3res are the same.) `check` says whether the export and
 * adapter can make this kind of object; `make` creates it and returns its id.
 */
async function makeEntry(
  nfs: Nfs3Context,
  call: RpcCall,
  where: Diropargs3,
  check: (dir: Target) => void,
  make: (dir: Target, name: string) => Promise<bigint>,
): Promise<ReplyEncoder> {
  let dir: Target | undefined;
  let before: FileAttributes | undefined;
  try {
    dir = nfs.resolve(call, where.dir);
    before = await nfs.attrs(dir);
    check(dir);
    const name = newEntryName(where.name);
    const id = await make(dir, name);
    const fh = nfs.handle(dir, id);
    const [objAttrs, after] = await Promise.all([nfs.attrs(dir, id), nfs.attrs(dir)]);
    if (objAttrs?.type === 'directory') nfs.parents(dir.exp).set(id, dir.id);
    const fsid = dir.exp.id;
    return (w) => {
      w.u32(NFS3_OK);
      writePostOpFh3(w, fh);
      writePostOpAttr(w, objAttrs, fsid);
      writeWccData(w, before, after, fsid);
      return undefined;
    };
  } catch (err) {
    return failWithWcc(nfs, call, err, dir, before);
  }
}

const CREATE_MODES: readonly CreateMode[] = ['unchecked', 'guarded', 'exclusive'];

/**
 * ```
 * enum createmode3 { UNCHECKED = 0, GUARDED = 1, EXCLUSIVE = 2 };
 * union createhow3 switch (createmode3 mode) {
 *   case UNCHECKED:
 *   case GUARDED: sattr3 obj_attributes;
 *   case EXCLUSIVE: createverf3 verf;
 * };
 * struct CREATE3args { diropargs3 where; createhow3 how; };
 * ```
 * EXCLUSIVE hands the 8-byte verifier to the adapter, which keeps it with the file: a
 * retransmitted create with the same verifier succeeds, another verifier is NFS3ERR_EXIST. The
 * client then sets the attributes with SETATTR (RFC 1813 §3.3.8).
 */
export const create3: Nfs3Procedure = (nfs, call, args) => {
  const where = readDiropargs3(args);
  const code = args.u32('createmode3');
  const mode = CREATE_MODES[code];
  if (mode === undefined) throw xdrError(`createmode3 ${code} is not in the enum`);
  const attrs = mode === 'exclusive' ? {} : readSattr3(args);
  const verf = mode === 'exclusive' ? Uint8Array.from(args.fixed(8, 'createverf3')) : undefined;
  return makeEntry(
    nfs,
    call,
    where,
    (dir) => requireWritable(dir, dir.fs.create !== undefined),
    (dir, name) => dir.fs.create!(dir.id, name, mode, attrs, verf, dir.ctx),
  );
};

/**
 * ```
 * struct MKDIR3args { diropargs3 where; sattr3 attributes; };
 * ```
 */
export const mkdir3: Nfs3Procedure = (nfs, call, args) => {
  const where = readDiropargs3(args);
  const attrs = readSattr3(args);
  return makeEntry(
    nfs,
    call,
    where,
    (dir) => requireWritable(dir, dir.fs.mkdir !== undefined),
    (dir, name) => dir.fs.mkdir!(dir.id, name, attrs, dir.ctx),
  );
};

/**
 * ```
 * typedef string nfspath3<>;
 * struct symlinkdata3 { sattr3 symlink_attributes; nfspath3 symlink_data; };
 * struct SYMLINK3args { diropargs3 where; symlinkdata3 symlink; };
 * ```
 */
export const symlink3: Nfs3Procedure = (nfs, call, args) => {
  const where = readDiropargs3(args);
  const attrs = readSattr3(args);
  const target = args.string(MAX_PATH, 'nfspath3');
  return makeEntry(
    nfs,
    call,
    where,
    (dir) => {
      requireWritable(dir, dir.fs.symlink !== undefined);
      if (target.length === 0) throw NfsStatusError.of('INVAL', 'empty symbolic link target');
    },
    (dir, name) => dir.fs.symlink!(dir.id, name, target, attrs, dir.ctx),
  );
};

/** PATH_MAX of symbolic link targets. */
const MAX_PATH = 4096;

/**
 * ```
 * struct devicedata3 { sattr3 dev_attributes; specdata3 spec; };
 * union mknoddata3 switch (ftype3 type) {
 *   case NF3CHR:
 *   case NF3BLK: devicedata3 device;
 *   case NF3SOCK:
 *   case NF3FIFO: sattr3 pipe_attributes;
 *   default: void;
 * };
 * struct MKNOD3args { diropargs3 where; mknoddata3 what; };
 * ```
 * The adapter interface has no special files: NFS3ERR_NOTSUPP for devices, sockets and FIFOs,
 * NFS3ERR_BADTYPE for the other types (RFC 1813 §3.3.11), NFS3ERR_ROFS on a read-only export or
 * adapter.
 */
export const mknod3: Nfs3Procedure = async (nfs, call, args) => {
  const where = readDiropargs3(args);
  const type = args.u32('ftype3');
  const device = type === Ftype3.NF3CHR || type === Ftype3.NF3BLK;
  const pipe = type === Ftype3.NF3SOCK || type === Ftype3.NF3FIFO;
  if (device || pipe) readSattr3(args);
  if (device) {
    args.u32('specdata1');
    args.u32('specdata2');
  }
  let dir: Target | undefined;
  let before: FileAttributes | undefined;
  try {
    dir = nfs.resolve(call, where.dir);
    before = await nfs.attrs(dir);
    // An adapter that can add no entries at all is a read-only filesystem to the client.
    requireWritable(dir, nfs.writability(dir.exp).addEntries);
    newEntryName(where.name);
    throw NfsStatusError.of(device || pipe ? 'NOTSUPP' : 'BADTYPE');
  } catch (err) {
    return failWithWcc(nfs, call, err, dir, before);
  }
};
