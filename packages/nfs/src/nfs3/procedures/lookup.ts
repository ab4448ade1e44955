import { NfsStatusError } from '../../filesystem.js';
import { NFS3_OK } from '../constants.js';
import type { Nfs3Procedure, Target } from '../context.js';
import { checkName } from '../names.js';
import { readDiropargs3, readNfsFh3, writeNfsFh3, writePostOpAttr } from '../types.js';
import { failWithPostOpAttr } from './replies.js';

/**
 * ```
 * struct LOOKUP3args { diropargs3 what; };
 * struct LOOKUP3resok {
 *   nfs_fh3 object; post_op_attr obj_attributes; post_op_attr dir_attributes;
 * };
 * struct LOOKUP3resfail { post_op_attr dir_attributes; };
 * ```
 * `.` is the directory itself; `..` its parent as the parent map knows it, else the export's
 * root (the root's parent is the root; see parent-map.ts). A directory found here is remembered
 * as a child of `dir`.
 */
export const lookup3: Nfs3Procedure = async (nfs, call, args) => {
  const what = readDiropargs3(args);
  let dir: Target | undefined;
  try {
    dir = nfs.resolve(call, what.dir);
    const name = checkName(what.name);
    let id: bigint;
    if (name.kind === 'name') {
      id = await dir.fs.lookup(dir.id, name.name, dir.ctx);
    } else {
      const dirAttrs = await dir.fs.getattr(dir.id, dir.ctx);
      if (dirAttrs.type !== 'directory') throw NfsStatusError.of('NOTDIR');
      id = name.kind === '.' ? dir.id : (nfs.parentOf(dir) ?? dir.fs.rootId);
    }
    const fh = nfs.handle(dir, id);
    const [objAttrs, dirAttrs] = await Promise.all([nfs.attrs(dir, id), nfs.attrs(dir)]);
    if (name.kind === 'name' && objAttrs?.type === 'directory') {
      nfs.parents(dir.exp).set(id, dir.id);
    }
    const fsid = dir.exp.id;
    return (w) => {
      w.u32(NFS3_OK);
      writeNfsFh3(w, fh);
      writePostOpAttr(w, objAttrs, fsid);
      writePostOpAttr(w, dirAttrs, fsid);
      return undefined;
    };
  } catch (err) {
    return failWithPostOpAttr(nfs, call, err, dir);
  }
};

/**
 * ```
 * struct READLINK3args { nfs_fh3 symlink; };
 * struct READLINK3resok { post_op_attr symlink_attributes; nfspath3 data; };
 * struct READLINK3resfail { post_op_attr symlink_attributes; };
 * ```
 * NFS3ERR_INVAL for anything but a symbolic link; NFS3ERR_NOTSUPP when the adapter has no
 * `readlink`.
 */
export const readlink3: Nfs3Procedure = async (nfs, call, args) => {
  const symlink = readNfsFh3(args);
  let t: Target | undefined;
  try {
    t = nfs.resolve(call, symlink);
    if (t.fs.readlink === undefined) throw NfsStatusError.of('NOTSUPP');
    const attrs = await t.fs.getattr(t.id, t.ctx);
    if (attrs.type !== 'symlink') throw NfsStatusError.of('INVAL', 'not a symbolic link');
    const data = await t.fs.readlink(t.id, t.ctx);
    const fsid = t.exp.id;
    return (w) => {
      w.u32(NFS3_OK);
      writePostOpAttr(w, attrs, fsid);
      w.string(data);
      return undefined;
    };
  } catch (err) {
    return failWithPostOpAttr(nfs, call, err, t);
  }
};
