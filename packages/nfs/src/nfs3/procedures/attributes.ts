import { type FileAttributes, NfsStatusError } from '../../filesystem.js';
import { allowedAccess } from '../access.js';
import { NFS3_OK } from '../constants.js';
import { type Nfs3Procedure, requireWritable, type Target } from '../context.js';
import {
  readNfsFh3,
  readNfstime3,
  readSattr3,
  writeFattr3,
  writePostOpAttr,
  writeWccData,
} from '../types.js';
import { failWithPostOpAttr, failWithWcc } from './replies.js';

/**
 * ```
 * void NFSPROC3_NULL(void) = 0;
 * ```
 */
export const null3: Nfs3Procedure = () => () => undefined;

/**
 * ```
 * struct GETATTR3args { nfs_fh3 object; };
 * struct GETATTR3resok { fattr3 obj_attributes; };
 * union GETATTR3res switch (nfsstat3 status) {
 *   case NFS3_OK: GETATTR3resok resok;
 *   default: void;
 * };
 * ```
 * ESXi's heartbeat: one handle check and one adapter call.
 */
export const getattr3: Nfs3Procedure = async (nfs, call, args) => {
  const object = readNfsFh3(args);
  try {
    const t = nfs.resolve(call, object);
    const attrs = await t.fs.getattr(t.id, t.ctx);
    const fsid = t.exp.id;
    return (w) => {
      w.u32(NFS3_OK);
      writeFattr3(w, attrs, fsid);
      return undefined;
    };
  } catch (err) {
    const status = nfs.statusOf(err, call);
    return (w) => {
      w.u32(status);
      return undefined;
    };
  }
};

/**
 * ```
 * union sattrguard3 switch (bool check) {
 *   case TRUE: nfstime3 obj_ctime;
 *   case FALSE: void;
 * };
 * struct SETATTR3args { nfs_fh3 object; sattr3 new_attributes; sattrguard3 guard; };
 * struct SETATTR3resok { wcc_data obj_wcc; };
 * struct SETATTR3resfail { wcc_data obj_wcc; };
 * ```
 * With a guard, the change happens only if the file's ctime is still `obj_ctime`
 * (else NFS3ERR_NOT_SYNC). A size change on anything but a regular file is NFS3ERR_INVAL.
 */
export const setattr3: Nfs3Procedure = async (nfs, call, args) => {
  const object = readNfsFh3(args);
  const attrs = readSattr3(args);
  const guard = args.bool('sattrguard3.check') ? readNfstime3(args) : undefined;
  let t: Target | undefined;
  let before: FileAttributes | undefined;
  try {
    t = nfs.resolve(call, object);
    before = await t.fs.getattr(t.id, t.ctx);
    if (
      guard !== undefined &&
      (guard.seconds !== before.ctime.seconds || guard.nanoseconds !== before.ctime.nanoseconds)
    ) {
      throw NfsStatusError.of('NOT_SYNC');
    }
    requireWritable(t, t.fs.setattr !== undefined);
    if (attrs.size !== undefined && before.type !== 'file') {
      throw NfsStatusError.of('INVAL', 'only regular files have a size to set');
    }
    await t.fs.setattr!(t.id, attrs, t.ctx);
    const after = await nfs.attrs(t);
    const fsid = t.exp.id;
    return (w) => {
      w.u32(NFS3_OK);
      writeWccData(w, before, after, fsid);
      return undefined;
    };
  } catch (err) {
    return failWithWcc(nfs, call, err, t, before);
  }
};

/**
 * ```
 * const ACCESS3_READ = 0x0001; const ACCESS3_LOOKUP = 0x0002; const ACCESS3_MODIFY = 0x0004;
 * const ACCESS3_EXTEND = 0x0008; const ACCESS3_DELETE = 0x0010; const ACCESS3_EXECUTE = 0x0020;
 * struct ACCESS3args { nfs_fh3 object; uint32 access; };
 * struct ACCESS3resok { post_op_attr obj_attributes; uint32 access; };
 * struct ACCESS3resfail { post_op_attr obj_attributes; };
 * ```
 * Answers a subset of the requested bits (see {@link allowedAccess}).
 */
export const access3: Nfs3Procedure = async (nfs, call, args) => {
  const object = readNfsFh3(args);
  const requested = args.u32('ACCESS3args.access');
  let t: Target | undefined;
  try {
    t = nfs.resolve(call, object);
    const attrs = await t.fs.getattr(t.id, t.ctx);
    const access = allowedAccess(attrs, nfs.accessUser(t), nfs.writability(t.exp), requested);
    const fsid = t.exp.id;
    return (w) => {
      w.u32(NFS3_OK);
      writePostOpAttr(w, attrs, fsid);
      w.u32(access);
      return undefined;
    };
  } catch (err) {
    return failWithPostOpAttr(nfs, call, err, t);
  }
};
