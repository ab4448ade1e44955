import { type FileAttributes, NfsStatusError } from '../../filesystem.js';
import type { ReplyEncoder, RpcCall } from '../../rpc/dispatcher.js';
import type { XdrReader } from '../../xdr/reader.js';
import { NFS3_OK } from '../constants.js';
import { type Nfs3Context, type Nfs3Procedure, requireWritable, type Target } from '../context.js';
import { existingEntryName, newEntryName } from '../names.js';
import { readDiropargs3, readNfsFh3, writePostOpAttr, writeWccData } from '../types.js';
import { failWithWcc } from './replies.js';

/**
 * ```
 * struct REMOVE3args { diropargs3 object; };
 * struct REMOVE3resok { wcc_data dir_wcc; };
 * struct REMOVE3resfail { wcc_data dir_wcc; };
 * ```
 */
export const remove3: Nfs3Procedure = (nfs, call, args) => removeEntry(nfs, call, args, false);

/**
 * ```
 * struct RMDIR3args { diropargs3 object; };
 * struct RMDIR3resok { wcc_data dir_wcc; };
 * struct RMDIR3resfail { wcc_data dir_wcc; };
 * ```
 */
export const rmdir3: Nfs3Procedure = (nfs, call, args) => removeEntry(nfs, call, args, true);

async function removeEntry(
  nfs: Nfs3Context,
  call: RpcCall,
  args: XdrReader,
  directory: boolean,
): Promise<ReplyEncoder> {
  const object = readDiropargs3(args);
  let dir: Target | undefined;
  let before: FileAttributes | undefined;
  try {
    dir = nfs.resolve(call, object.dir);
    before = await nfs.attrs(dir);
    const fs = dir.fs;
    requireWritable(dir, directory ? fs.rmdir !== undefined : fs.remove !== undefined);
    const name = existingEntryName(object.name);
    if (directory) await fs.rmdir!(dir.id, name, dir.ctx);
    else await fs.remove!(dir.id, name, dir.ctx);
    const after = await nfs.attrs(dir);
    const fsid = dir.exp.id;
    return (w) => {
      w.u32(NFS3_OK);
      writeWccData(w, before, after, fsid);
      return undefined;
    };
  } catch (err) {
    return failWithWcc(nfs, call, err, dir, before);
  }
}

/**
 * ```
 * struct RENAME3args { diropargs3 from; diropargs3 to; };
 * struct RENAME3resok { wcc_data fromdir_wcc; wcc_data todir_wcc; };
 * struct RENAME3resfail { wcc_data fromdir_wcc; wcc_data todir_wcc; };
 * ```
 * Both directories must be in one export (else NFS3ERR_XDEV). A directory that moved keeps a
 * right `..` in the parent map.
 */
export const rename3: Nfs3Procedure = async (nfs, call, args) => {
  const from = readDiropargs3(args);
  const to = readDiropargs3(args);
  let fromDir: Target | undefined;
  let toDir: Target | undefined;
  let fromBefore: FileAttributes | undefined;
  let toBefore: FileAttributes | undefined;
  try {
    fromDir = nfs.resolve(call, from.dir);
    toDir = nfs.resolve(call, to.dir);
    const sameDir = fromDir.exp === toDir.exp && fromDir.id === toDir.id;
    [fromBefore, toBefore] = await Promise.all([
      nfs.attrs(fromDir),
      sameDir ? undefined : nfs.attrs(toDir),
    ]);
    if (sameDir) toBefore = fromBefore;
    if (fromDir.exp !== toDir.exp) throw NfsStatusError.of('XDEV');
    requireWritable(fromDir, fromDir.fs.rename !== undefined);
    const fromName = existingEntryName(from.name);
    const toName = existingEntryName(to.name);
    await fromDir.fs.rename!(fromDir.id, fromName, toDir.id, toName, fromDir.ctx);
    const [fromAfter, toAfter, moved] = await Promise.all([
      nfs.attrs(fromDir),
      sameDir ? undefined : nfs.attrs(toDir),
      sameDir ? undefined : nfs.lookupQuietly(toDir, toName),
    ]);
    const parents = nfs.parents(toDir.exp);
    if (moved !== undefined && parents.get(moved) !== undefined) parents.set(moved, toDir.id);
    const fsid = fromDir.exp.id;
    return (w) => {
      w.u32(NFS3_OK);
      writeWccData(w, fromBefore, fromAfter, fsid);
      writeWccData(w, toBefore, sameDir ? fromAfter : toAfter, fsid);
      return undefined;
    };
  } catch (err) {
    const status = nfs.statusOf(err, call);
    const [fromAfter, toAfter] = await Promise.all([
      fromDir ? nfs.attrs(fromDir) : undefined,
      toDir ? nfs.attrs(toDir) : undefined,
    ]);
    const fromFsid = fromDir?.exp.id ?? 0;
    const toFsid = toDir?.exp.id ?? 0;
    return (w) => {
      w.u32(status);
      writeWccData(w, fromBefore, fromAfter, fromFsid);
      writeWccData(w, toBefore, toAfter, toFsid);
      return undefined;
    };
  }
};

/**
 * ```
 * struct LINK3args { nfs_fh3 file; diropargs3 link; };
 * struct LINK3resok { post_op_attr file_attributes; wcc_data linkdir_wcc; };
 * struct LINK3resfail { post_op_attr file_attributes; wcc_data linkdir_wcc; };
 * ```
 * File and directory must be in one export (else NFS3ERR_XDEV).
 */
export const link3: Nfs3Procedure = async (nfs, call, args) => {
  const file = readNfsFh3(args);
  const link = readDiropargs3(args);
  let t: Target | undefined;
  let dir: Target | undefined;
  let before: FileAttributes | undefined;
  try {
    t = nfs.resolve(call, file);
    dir = nfs.resolve(call, link.dir);
    before = await nfs.attrs(dir);
    if (t.exp !== dir.exp) throw NfsStatusError.of('XDEV');
    requireWritable(dir, dir.fs.link !== undefined);
    const name = newEntryName(link.name);
    await dir.fs.link!(t.id, dir.id, name, dir.ctx);
    const [fileAttrs, after] = await Promise.all([nfs.attrs(t), nfs.attrs(dir)]);
    const fsid = dir.exp.id;
    return (w) => {
      w.u32(NFS3_OK);
      writePostOpAttr(w, fileAttrs, fsid);
      writeWccData(w, before, after, fsid);
      return undefined;
    };
  } catch (err) {
    const status = nfs.statusOf(err, call);
    const [fileAttrs, after] = await Promise.all([
      t ? nfs.attrs(t) : undefined,
      dir ? nfs.attrs(dir) : undefined,
    ]);
    const fileFsid = t?.exp.id ?? 0;
    const dirFsid = dir?.exp.id ?? 0;
    return (w) => {
      w.u32(status);
      writePostOpAttr(w, fileAttrs, fileFsid);
      writeWccData(w, before, after, dirFsid);
      return undefined;
    };
  }
};
