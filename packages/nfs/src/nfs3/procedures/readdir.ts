import { type FileAttributes, NfsStatusError } from '../../filesystem.js';
import { HANDLE_SIZE } from '../../handles.js';
import type { XdrReader } from '../../xdr/reader.js';
import { NFS3_OK } from '../constants.js';
import type { Nfs3Context, Nfs3Procedure, Target } from '../context.js';
import { readNfsFh3, writePostOpAttr, writePostOpFh3 } from '../types.js';
import { failWithPostOpAttr } from './replies.js';

// Paging (RFC 1813 §3.3.16, §3.3.17). The adapter returns the whole listing; the server puts `.`
// and `..` in front and the cookie of an entry is its position + 1 in that list, so a cookie
// says where to go on. The cookie verifier is the directory's mtime: a cookie (other than 0)
// that comes back with another verifier may point into a listing that has changed, and is
// answered NFS3ERR_BAD_COOKIE; the client then starts over.

const POST_OP_ATTR_SIZE = 4 + 84;
/** nfsstat3, dir_attributes (always present in an OK reply), cookieverf. */
const HEADER_SIZE = 4 + POST_OP_ATTR_SIZE + 8;
/** The last `nextentry` pointer (FALSE) and `eof`. */
const TRAILER_SIZE = 4 + 4;
/** entry3 without the name's bytes: value_follows, fileid, name length, cookie. */
const ENTRY_FIXED_SIZE = 4 + 8 + 4 + 8;
/** What entryplus3 adds: post_op_attr with attributes, post_op_fh3 with one of our handles. */
const PLUS_EXTRA_SIZE = POST_OP_ATTR_SIZE + 4 + 4 + HANDLE_SIZE;

interface Page {
  readonly dir: Target;
  readonly dirAttrs: FileAttributes;
  readonly verf: Buffer;
  /** fileid, name and cookie of each entry in this reply. */
  readonly ids: bigint[];
  readonly names: string[];
  readonly cookies: number[];
  readonly eof: boolean;
  /** The position of `..` in `ids`, or -1. */
  readonly dotdot: number;
  /** Whether the parent behind `..` is known (else its fileid is the root's). */
  readonly parentKnown: boolean;
}

/** The 8-byte cookieverf3 of a directory: its mtime. */
function cookieVerifier(attrs: FileAttributes): Buffer {
  const v = Buffer.allocUnsafe(8);
  v.writeUInt32BE(Math.min(Math.max(Math.floor(attrs.mtime.seconds), 0), 0xffff_ffff), 0);
  v.writeUInt32BE(Math.min(Math.max(Math.floor(attrs.mtime.nanoseconds), 0), 999_999_999), 4);
  return v;
}

function xdrSize(name: string): number {
  const n = Buffer.byteLength(name, 'utf8');
  return n + ((4 - (n % 4)) % 4);
}

/**
 * Lists directory `dir` from `cookie` on, taking entries while `take(nameSize)` says the next one
 * (whose name takes `nameSize` bytes with padding) fits. NFS3ERR_TOOSMALL when the reply's fixed
 * part does not fit (`headerFits` false) or entries remain and not even one fits.
 */
async function page(
  nfs: Nfs3Context,
  dir: Target,
  cookie: bigint,
  verf: Buffer,
  headerFits: boolean,
  take: (nameSize: number) => boolean,
): Promise<Page> {
  const dirAttrs = await dir.fs.getattr(dir.id, dir.ctx);
  if (dirAttrs.type !== 'directory') throw NfsStatusError.of('NOTDIR');
  // The verifier is taken before the listing: if the directory changes in between, the next
  // call's verifier is stale and the client starts over, instead of skipping entries.
  const current = cookieVerifier(dirAttrs);
  if (cookie !== 0n && !current.equals(verf)) throw NfsStatusError.of('BAD_COOKIE');
  const listing = await dir.fs.readdir(dir.id, dir.ctx);
  const total = listing.length + 2;
  if (cookie > BigInt(total)) throw NfsStatusError.of('BAD_COOKIE');
  if (!headerFits) throw NfsStatusError.of('TOOSMALL');
  const parent = nfs.parentOf(dir);
  const ids: bigint[] = [];
  const names: string[] = [];
  const cookies: number[] = [];
  let dotdot = -1;
  let pos = Number(cookie);
  for (; pos < total; pos++) {
    const entry = pos >= 2 ? listing[pos - 2]! : undefined;
    const name = entry ? entry.name : pos === 0 ? '.' : '..';
    if (!take(xdrSize(name))) break;
    if (pos === 1) dotdot = ids.length;
    ids.push(entry ? entry.fileId : pos === 0 ? dir.id : (parent ?? dir.fs.rootId));
    names.push(name);
    cookies.push(pos + 1);
  }
  if (ids.length === 0 && pos < total) throw NfsStatusError.of('TOOSMALL');
  return {
    dir,
    dirAttrs,
    verf: current,
    ids,
    names,
    cookies,
    eof: pos === total,
    dotdot,
    parentKnown: parent !== undefined,
  };
}

function readCookieArgs(args: XdrReader): { dirFh: Buffer; cookie: bigint; verf: Buffer } {
  const dirFh = readNfsFh3(args);
  const cookie = args.u64('cookie3');
  const verf = args.fixed(8, 'cookieverf3');
  return { dirFh, cookie, verf };
}

/**
 * ```
 * struct READDIR3args { nfs_fh3 dir; cookie3 cookie; cookieverf3 cookieverf; count3 count; };
 * struct entry3 { fileid3 fileid; filename3 name; cookie3 cookie; entry3 *nextentry; };
 * struct dirlist3 { entry3 *entries; bool eof; };
 * struct READDIR3resok { post_op_attr dir_attributes; cookieverf3 cookieverf; dirlist3 reply; };
 * struct READDIR3resfail { post_op_attr dir_attributes; };
 * ```
 * The whole reply body, status included, stays within `count` bytes (capped at rtmax).
 */
export const readdir3: Nfs3Procedure = async (nfs, call, args) => {
  const { dirFh, cookie, verf } = readCookieArgs(args);
  const count = Math.min(args.u32('READDIR3args.count'), nfs.state.sizes.rtmax);
  let dir: Target | undefined;
  try {
    dir = nfs.resolve(call, dirFh);
    let size = HEADER_SIZE + TRAILER_SIZE;
    const p = await page(nfs, dir, cookie, verf, size <= count, (nameSize) => {
      const entry = ENTRY_FIXED_SIZE + nameSize;
      if (size + entry > count) return false;
      size += entry;
      return true;
    });
    const fsid = dir.exp.id;
    return (w) => {
      w.u32(NFS3_OK);
      writePostOpAttr(w, p.dirAttrs, fsid);
      w.fixed(p.verf);
      for (let i = 0; i < p.ids.length; i++) {
        w.bool(true).u64(p.ids[i]!).string(p.names[i]!).u64n(p.cookies[i]!);
      }
      w.bool(false).bool(p.eof);
      return undefined;
    };
  } catch (err) {
    return failWithPostOpAttr(nfs, call, err, dir);
  }
};

/**
 * ```
 * struct READDIRPLUS3args {
 *   nfs_fh3 dir; cookie3 cookie; cookieverf3 cookieverf; count3 dircount; count3 maxcount;
 * };
 * struct entryplus3 {
 *   fileid3 fileid; filename3 name; cookie3 cookie; post_op_attr name_attributes;
 *   post_op_fh3 name_handle; entryplus3 *nextentry;
 * };
 * struct dirlistplus3 { entryplus3 *entries; bool eof; };
 * struct READDIRPLUS3resok {
 *   post_op_attr dir_attributes; cookieverf3 cookieverf; dirlistplus3 reply;
 * };
 * struct READDIRPLUS3resfail { post_op_attr dir_attributes; };
 * ```
 * `maxcount` bounds the whole reply body, status included (capped at rtmax); `dircount` bounds
 * the "directory information": the entries without their attributes and handles, that is what
 * an entry3 of READDIR would take. Attributes of the entries are fetched in parallel; an entry
 * whose attributes cannot be read (removed meanwhile) goes out without attributes and handle,
 * and so does `..` when its directory is not known (see parent-map.ts).
 */
export const readdirplus3: Nfs3Procedure = async (nfs, call, args) => {
  const { dirFh, cookie, verf } = readCookieArgs(args);
  const dircount = args.u32('READDIRPLUS3args.dircount');
  const maxcount = Math.min(args.u32('READDIRPLUS3args.maxcount'), nfs.state.sizes.rtmax);
  let dir: Target | undefined;
  try {
    dir = nfs.resolve(call, dirFh);
    let size = HEADER_SIZE + TRAILER_SIZE;
    let dirInfo = 0;
    const p = await page(nfs, dir, cookie, verf, size <= maxcount, (nameSize) => {
      const info = ENTRY_FIXED_SIZE + nameSize;
      const entry = info + PLUS_EXTRA_SIZE;
      if (size + entry > maxcount || dirInfo + info > dircount) return false;
      size += entry;
      dirInfo += info;
      return true;
    });
    const d = dir;
    const attrs = await Promise.all(
      p.ids.map((id, i) =>
        i === p.dotdot && !p.parentKnown ? undefined : id === d.id ? p.dirAttrs : nfs.attrs(d, id),
      ),
    );
    const handles = p.ids.map((id, i) => (attrs[i] === undefined ? undefined : nfs.handle(d, id)));
    const parents = nfs.parents(d.exp);
    for (let i = 0; i < p.ids.length; i++) {
      if (i !== p.dotdot && p.ids[i] !== d.id && attrs[i]?.type === 'directory') {
        parents.set(p.ids[i]!, d.id);
      }
    }
    const fsid = d.exp.id;
    return (w) => {
      w.u32(NFS3_OK);
      writePostOpAttr(w, p.dirAttrs, fsid);
      w.fixed(p.verf);
      for (let i = 0; i < p.ids.length; i++) {
        w.bool(true).u64(p.ids[i]!).string(p.names[i]!).u64n(p.cookies[i]!);
        writePostOpAttr(w, attrs[i], fsid);
        writePostOpFh3(w, handles[i]);
      }
      w.bool(false).bool(p.eof);
      return undefined;
    };
  } catch (err) {
    return failWithPostOpAttr(nfs, call, err, dir);
  }
};
