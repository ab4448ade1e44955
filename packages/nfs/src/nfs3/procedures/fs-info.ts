import type { FsStat } from '../../filesystem.js';
import { Fsf3, MAX_FILE_SIZE, NFS3_OK } from '../constants.js';
import type { Nfs3Procedure, Target } from '../context.js';
import { NAME_MAX } from '../names.js';
import { readNfsFh3, writeNfstime3, writePostOpAttr } from '../types.js';
import { failWithPostOpAttr } from './replies.js';

const NO_STAT: FsStat = {
  totalBytes: 0,
  freeBytes: 0,
  availableBytes: 0,
  totalFiles: 0,
  freeFiles: 0,
  availableFiles: 0,
};

function size3(v: number): number {
  return v > 0 ? Math.min(Math.floor(v), Number.MAX_SAFE_INTEGER) : 0;
}

/**
 * ```
 * struct FSSTAT3args { nfs_fh3 fsroot; };
 * struct FSSTAT3resok {
 *   post_op_attr obj_attributes; size3 tbytes; size3 fbytes; size3 abytes;
 *   size3 tfiles; size3 ffiles; size3 afiles; uint32 invarsec;
 * };
 * struct FSSTAT3resfail { post_op_attr obj_attributes; };
 * ```
 * From the adapter's `fsstat`, zeros without one. `invarsec` 0: the figures may change any time.
 */
export const fsstat3: Nfs3Procedure = async (nfs, call, args) => {
  const fsroot = readNfsFh3(args);
  let t: Target | undefined;
  try {
    t = nfs.resolve(call, fsroot);
    const attrs = await t.fs.getattr(t.id, t.ctx);
    const stat = t.fs.fsstat ? await t.fs.fsstat(t.ctx) : NO_STAT;
    const fsid = t.exp.id;
    return (w) => {
      w.u32(NFS3_OK);
      writePostOpAttr(w, attrs, fsid);
      w.u64n(size3(stat.totalBytes)).u64n(size3(stat.freeBytes)).u64n(size3(stat.availableBytes));
      w.u64n(size3(stat.totalFiles)).u64n(size3(stat.freeFiles)).u64n(size3(stat.availableFiles));
      w.u32(0);
      return undefined;
    };
  } catch (err) {
    return failWithPostOpAttr(nfs, call, err, t);
  }
};

/** rtmult / wtmult: the block size clients should align to. */
const IO_MULTIPLE = 4096;

/**
 * ```
 * const FSF3_LINK = 0x0001; const FSF3_SYMLINK = 0x0002;
 * const FSF3_HOMOGENEOUS = 0x0008; const FSF3_CANSETTIME = 0x0010;
 * struct FSINFO3args { nfs_fh3 fsroot; };
 * struct FSINFO3resok {
 *   post_op_attr obj_attributes; uint32 rtmax; uint32 rtpref; uint32 rtmult;
 *   uint32 wtmax; uint32 wtpref; uint32 wtmult; uint32 dtpref;
 *   size3 maxfilesize; nfstime3 time_delta; uint32 properties;
 * };
 * struct FSINFO3resfail { post_op_attr obj_attributes; };
 * ```
 * The preferred sizes are the maximums (fewer, larger calls are cheaper here). FSF3_LINK and
 * FSF3_SYMLINK are set when the adapter can make hard links and symbolic links (or read them).
 */
export const fsinfo3: Nfs3Procedure = async (nfs, call, args) => {
  const fsroot = readNfsFh3(args);
  let t: Target | undefined;
  try {
    t = nfs.resolve(call, fsroot);
    const attrs = await t.fs.getattr(t.id, t.ctx);
    const { rtmax, wtmax, dtpref } = nfs.state.sizes;
    const fs = t.fs;
    const properties =
      (fs.link !== undefined ? Fsf3.LINK : 0) |
      (fs.symlink !== undefined || fs.readlink !== undefined ? Fsf3.SYMLINK : 0) |
      Fsf3.HOMOGENEOUS |
      Fsf3.CANSETTIME;
    const fsid = t.exp.id;
    return (w) => {
      w.u32(NFS3_OK);
      writePostOpAttr(w, attrs, fsid);
      w.u32(rtmax).u32(rtmax).u32(IO_MULTIPLE);
      w.u32(wtmax).u32(wtmax).u32(IO_MULTIPLE);
      w.u32(dtpref);
      w.u64n(MAX_FILE_SIZE);
      writeNfstime3(w, { seconds: 0, nanoseconds: 1 });
      w.u32(properties);
      return undefined;
    };
  } catch (err) {
    return failWithPostOpAttr(nfs, call, err, t);
  }
};

/** Largest link count reported by PATHCONF. */
const LINK_MAX = 65_535;

/**
 * ```
 * struct PATHCONF3args { nfs_fh3 object; };
 * struct PATHCONF3resok {
 *   post_op_attr obj_attributes; uint32 linkmax; uint32 name_max; bool no_trunc;
 *   bool chown_restricted; bool case_insensitive; bool case_preserving;
 * };
 * struct PATHCONF3resfail { post_op_attr obj_attributes; };
 * ```
 * Longer names are refused with NFS3ERR_NAMETOOLONG, never truncated (`no_trunc`).
 */
export const pathconf3: Nfs3Procedure = async (nfs, call, args) => {
  const object = readNfsFh3(args);
  let t: Target | undefined;
  try {
    t = nfs.resolve(call, object);
    const attrs = await t.fs.getattr(t.id, t.ctx);
    const fsid = t.exp.id;
    return (w) => {
      w.u32(NFS3_OK);
      writePostOpAttr(w, attrs, fsid);
      w.u32(LINK_MAX).u32(NAME_MAX).bool(true).bool(true).bool(false).bool(true);
      return undefined;
    };
  } catch (err) {
    return failWithPostOpAttr(nfs, call, err, t);
  }
};
