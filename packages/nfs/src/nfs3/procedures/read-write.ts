import { xdrError } from '../../errors.js';
import { type FileAttributes, NfsStatusError } from '../../filesystem.js';
import type { ReplyEncoder } from '../../rpc/dispatcher.js';
import { MAX_FILE_SIZE, NFS3_OK } from '../constants.js';
import { type Nfs3Procedure, requireWritable, type Target } from '../context.js';
import {
  readNfsFh3,
  readStableHow,
  stableHowCode,
  writePostOpAttr,
  writeWccData,
} from '../types.js';
import { failWithPostOpAttr, failWithWcc } from './replies.js';

const EMPTY = new Uint8Array(0);

/**
 * ```
 * struct READ3args { nfs_fh3 file; offset3 offset; count3 count; };
 * struct READ3resok { post_op_attr file_attributes; count3 count; bool eof; opaque data<>; };
 * struct READ3resfail { post_op_attr file_attributes; };
 * ```
 * `count` is capped at rtmax. `eof` is set whenever the data reaches the end of the file, also
 * when data is returned: ESXi logs "Short read" otherwise. The data goes out as the reply's tail,
 * uncopied. The read and the getattr for the attributes run at the same time.
 */
export const read3: Nfs3Procedure = async (nfs, call, args) => {
  const file = readNfsFh3(args);
  const offset = args.u64n('READ3args.offset');
  const count = Math.min(args.u32('READ3args.count'), nfs.state.sizes.rtmax);
  let t: Target | undefined;
  try {
    t = nfs.resolve(call, file);
    // The data buffer comes from the pool and goes back once the reply is written. A failed read
    // drops it instead: a part of the adapter's read may still be writing into it.
    const scratch = count === 0 ? undefined : nfs.readBuffers.take(count);
    // nfs.attrs never rejects, so a read that throws at once leaves no promise unhandled.
    const [attrsResult, dataResult] = await Promise.allSettled([
      nfs.attrs(t),
      scratch === undefined
        ? EMPTY
        : t.fs.read(t.id, offset, count, t.ctx, scratch.subarray(0, count)),
    ]);
    const attrs = attrsResult.status === 'fulfilled' ? attrsResult.value : undefined;
    if (attrs !== undefined && attrs.type !== 'file') {
      throw NfsStatusError.of(attrs.type === 'directory' ? 'ISDIR' : 'INVAL');
    }
    if (dataResult.status === 'rejected') throw dataResult.reason;
    const data =
      dataResult.value.length > count ? dataResult.value.subarray(0, count) : dataResult.value;
    const eof = attrs !== undefined ? offset + data.length >= attrs.size : data.length < count;
    const fsid = t.exp.id;
    const encoder: ReplyEncoder = (w) => {
      w.u32(NFS3_OK);
      writePostOpAttr(w, attrs, fsid);
      w.u32(data.length).bool(eof).u32(data.length);
      return data;
    };
    if (scratch !== undefined) encoder.sent = () => nfs.readBuffers.give(scratch);
    return encoder;
  } catch (err) {
    return failWithPostOpAttr(nfs, call, err, t);
  }
};

/**
 * ```
 * enum stable_how { UNSTABLE = 0, DATA_SYNC = 1, FILE_SYNC = 2 };
 * struct WRITE3args {
 *   nfs_fh3 file; offset3 offset; count3 count; stable_how stable; opaque data<>;
 * };
 * struct WRITE3resok { wcc_data file_wcc; count3 count; stable_how committed; writeverf3 verf; };
 * struct WRITE3resfail { wcc_data file_wcc; };
 * ```
 * A write longer than wtmax writes its first wtmax bytes and says so in `count` (RFC 1813
 * §3.3.7: "the server may write only wtmax bytes, resulting in a short write"). `data` must hold
 * at least `count` bytes (else GARBAGE_ARGS, as knfsd does); extra bytes are ignored.
 * `committed` is what the adapter answered.
 */
export const write3: Nfs3Procedure = async (nfs, call, args) => {
  const file = readNfsFh3(args);
  const offset = args.u64n('WRITE3args.offset');
  const count = args.u32('WRITE3args.count');
  const stable = readStableHow(args);
  const data = args.opaque(args.remaining, 'WRITE3args.data');
  if (data.length < count) {
    throw xdrError(`WRITE3args: count ${count} but only ${data.length} bytes of data`);
  }
  const n = Math.min(count, nfs.state.sizes.wtmax);
  let t: Target | undefined;
  let before: FileAttributes | undefined;
  try {
    t = nfs.resolve(call, file);
    requireWritable(t, t.fs.write !== undefined);
    before = await t.fs.getattr(t.id, t.ctx);
    if (before.type !== 'file') {
      throw NfsStatusError.of(before.type === 'directory' ? 'ISDIR' : 'INVAL');
    }
    if (offset + n > MAX_FILE_SIZE) throw NfsStatusError.of('FBIG');
    const committed =
      n === 0 ? stable : await t.fs.write!(t.id, offset, data.subarray(0, n), stable, t.ctx);
    const after = await nfs.attrs(t);
    const verf = nfs.writeVerifier(t.fs);
    const fsid = t.exp.id;
    return (w) => {
      w.u32(NFS3_OK);
      writeWccData(w, before, after, fsid);
      w.u32(n).u32(stableHowCode(committed)).fixed(verf);
      return undefined;
    };
  } catch (err) {
    return failWithWcc(nfs, call, err, t, before);
  }
};

/**
 * ```
 * struct COMMIT3args { nfs_fh3 file; offset3 offset; count3 count; };
 * struct COMMIT3resok { wcc_data file_wcc; writeverf3 verf; };
 * struct COMMIT3resfail { wcc_data file_wcc; };
 * ```
 * Commits the whole file (offset and count are hints RFC 1813 lets a server ignore). Without an
 * adapter `commit` there is nothing to flush, so COMMIT just answers the verifier.
 */
export const commit3: Nfs3Procedure = async (nfs, call, args) => {
  const file = readNfsFh3(args);
  args.u64n('COMMIT3args.offset');
  args.u32('COMMIT3args.count');
  let t: Target | undefined;
  let before: FileAttributes | undefined;
  try {
    t = nfs.resolve(call, file);
    before = await t.fs.getattr(t.id, t.ctx);
    if (before.type !== 'file') {
      throw NfsStatusError.of(before.type === 'directory' ? 'ISDIR' : 'INVAL');
    }
    if (t.fs.commit !== undefined) await t.fs.commit(t.id, t.ctx);
    const after = await nfs.attrs(t);
    const verf = nfs.writeVerifier(t.fs);
    const fsid = t.exp.id;
    return (w) => {
      w.u32(NFS3_OK);
      writeWccData(w, before, after, fsid);
      w.fixed(verf);
      return undefined;
    };
  } catch (err) {
    return failWithWcc(nfs, call, err, t, before);
  }
};
