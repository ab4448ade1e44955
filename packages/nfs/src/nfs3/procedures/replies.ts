import type { FileAttributes } from '../../filesystem.js';
import type { ReplyEncoder, RpcCall } from '../../rpc/dispatcher.js';
import type { Nfs3Context, Target } from '../context.js';
import { writePostOpAttr, writeWccData } from '../types.js';

// Failure replies shared by several procedures. The status comes from the error (see
// Nfs3Context.statusOf); the attributes are fetched best effort, because RFC 1813 puts them in
// failure replies too and clients use them to keep their caches right.

/** `status` followed by `post_op_attr` of `t` (the resfail of GETATTR-like procedures). */
export async function failWithPostOpAttr(
  nfs: Nfs3Context,
  call: RpcCall,
  err: unknown,
  t: Target | undefined,
): Promise<ReplyEncoder> {
  const status = nfs.statusOf(err, call);
  const attrs = t ? await nfs.attrs(t) : undefined;
  const fsid = t?.exp.id ?? 0;
  return (w) => {
    w.u32(status);
    writePostOpAttr(w, attrs, fsid);
    return undefined;
  };
}

/** `status` followed by `wcc_data` of `t` (the resfail of procedures that change one object). */
export async function failWithWcc(
  nfs: Nfs3Context,
  call: RpcCall,
  err: unknown,
  t: Target | undefined,
  before: FileAttributes | undefined,
): Promise<ReplyEncoder> {
  const status = nfs.statusOf(err, call);
  const after = t ? await nfs.attrs(t) : undefined;
  const fsid = t?.exp.id ?? 0;
  return (w) => {
    w.u32(status);
    writeWccData(w, before, after, fsid);
    return undefined;
  };
}
