import { xdrError } from '../errors.js';
import type { FileAttributes, FileType, NfsTime, SetAttributes, StableHow } from '../filesystem.js';
import type { XdrReader } from '../xdr/reader.js';
import type { XdrWriter } from '../xdr/writer.js';
import { Ftype3, NFS3_FHSIZE, StableHow3, TimeHow } from './constants.js';

// The basic data types of RFC 1813 §2.5 and §2.6, with encoders for the server and decoders for
// clients (tests, tools). Each codec carries the RFC's XDR definition.

const TYPE_CODE: Readonly<Record<FileType, number>> = {
  file: Ftype3.NF3REG,
  directory: Ftype3.NF3DIR,
  block: Ftype3.NF3BLK,
  char: Ftype3.NF3CHR,
  symlink: Ftype3.NF3LNK,
  socket: Ftype3.NF3SOCK,
  fifo: Ftype3.NF3FIFO,
};
const TYPE_OF_CODE: readonly (FileType | undefined)[] = [
  undefined,
  'file',
  'directory',
  'block',
  'char',
  'symlink',
  'socket',
  'fifo',
];

/** The file type of an ftype3 code; `IVMR_XDR` for a code outside the enum. */
export function fileTypeOf(code: number): FileType {
  const t = TYPE_OF_CODE[code];
  if (t === undefined) throw xdrError(`ftype3 ${code} is not a file type`);
  return t;
}

const U32_MAX = 0xffff_ffff;

function u32Clamped(v: number): number {
  return v >= U32_MAX ? U32_MAX : v > 0 ? Math.floor(v) : 0;
}

// An adapter's odd size (negative, fractional, NaN) must not break the reply encoder.
function size3(v: number): number {
  return v >= Number.MAX_SAFE_INTEGER ? Number.MAX_SAFE_INTEGER : v > 0 ? Math.floor(v) : 0;
}

/**
 * ```
 * struct nfstime3 { uint32 seconds; uint32 nseconds; };
 * ```
 * Times before 1970 or after 2106 are clamped into what a uint32 can say.
 */
export function writeNfstime3(w: XdrWriter, t: NfsTime): void {
  const ns = t.nanoseconds;
  w.u32(u32Clamped(t.seconds)).u32(ns >= 999_999_999 ? 999_999_999 : ns > 0 ? Math.floor(ns) : 0);
}

export function readNfstime3(r: XdrReader): NfsTime {
  return { seconds: r.u32('nfstime3.seconds'), nanoseconds: r.u32('nfstime3.nseconds') };
}

/** A fattr3 as a client sees it: the adapter's attributes plus the fsid. */
export interface Fattr3 extends FileAttributes {
  readonly fsid: bigint;
}

/**
 * ```
 * struct specdata3 { uint32 specdata1; uint32 specdata2; };
 * struct fattr3 {
 *   ftype3 type; mode3 mode; uint32 nlink; uid3 uid; gid3 gid; size3 size; size3 used;
 *   specdata3 rdev; uint64 fsid; fileid3 fileid; nfstime3 atime; nfstime3 mtime; nfstime3 ctime;
 * };
 * ```
 * 84 bytes. `mode` carries the permission bits only (the type is in `type`); `fsid` is the
 * export's id, so every export is its own filesystem to the client.
 */
export function writeFattr3(w: XdrWriter, a: FileAttributes, fsid: number): void {
  w.u32(TYPE_CODE[a.type]).u32(a.mode & 0o7777);
  w.u32(u32Clamped(a.nlink)).u32(u32Clamped(a.uid)).u32(u32Clamped(a.gid));
  w.u64n(size3(a.size)).u64n(size3(a.used));
  w.u32(u32Clamped(a.rdev?.major ?? 0)).u32(u32Clamped(a.rdev?.minor ?? 0));
  w.u64n(fsid).u64(a.fileId);
  writeNfstime3(w, a.atime);
  writeNfstime3(w, a.mtime);
  writeNfstime3(w, a.ctime);
}

export function readFattr3(r: XdrReader): Fattr3 {
  const type = fileTypeOf(r.u32('fattr3.type'));
  const mode = r.u32('fattr3.mode');
  const nlink = r.u32('fattr3.nlink');
  const uid = r.u32('fattr3.uid');
  const gid = r.u32('fattr3.gid');
  const size = r.u64n('fattr3.size');
  const used = r.u64n('fattr3.used');
  const rdev = { major: r.u32('specdata1'), minor: r.u32('specdata2') };
  const fsid = r.u64('fattr3.fsid');
  const fileId = r.u64('fattr3.fileid');
  const atime = readNfstime3(r);
  const mtime = readNfstime3(r);
  const ctime = readNfstime3(r);
  return { type, mode, nlink, uid, gid, size, used, rdev, fsid, fileId, atime, mtime, ctime };
}

/**
 * ```
 * union post_op_attr switch (bool attributes_follow) {
 *   case TRUE: fattr3 attributes;
 *   case FALSE: void;
 * };
 * ```
 */
export function writePostOpAttr(w: XdrWriter, a: FileAttributes | undefined, fsid: number): void {
  if (a === undefined) {
    w.bool(false);
    return;
  }
  w.bool(true);
  writeFattr3(w, a, fsid);
}

export function readPostOpAttr(r: XdrReader): Fattr3 | undefined {
  return r.bool('post_op_attr.attributes_follow') ? readFattr3(r) : undefined;
}

/** The attributes a wcc_attr carries. */
export interface WccAttr {
  readonly size: number;
  readonly mtime: NfsTime;
  readonly ctime: NfsTime;
}

/**
 * ```
 * struct wcc_attr { size3 size; nfstime3 mtime; nfstime3 ctime; };
 * union pre_op_attr switch (bool attributes_follow) {
 *   case TRUE: wcc_attr attributes;
 *   case FALSE: void;
 * };
 * ```
 */
export function writePreOpAttr(w: XdrWriter, a: WccAttr | undefined): void {
  if (a === undefined) {
    w.bool(false);
    return;
  }
  w.bool(true).u64n(size3(a.size));
  writeNfstime3(w, a.mtime);
  writeNfstime3(w, a.ctime);
}

export function readPreOpAttr(r: XdrReader): WccAttr | undefined {
  if (!r.bool('pre_op_attr.attributes_follow')) return undefined;
  const size = r.u64n('wcc_attr.size');
  const mtime = readNfstime3(r);
  const ctime = readNfstime3(r);
  return { size, mtime, ctime };
}

/**
 * ```
 * struct wcc_data { pre_op_attr before; post_op_attr after; };
 * ```
 */
export function writeWccData(
  w: XdrWriter,
  before: WccAttr | undefined,
  after: FileAttributes | undefined,
  fsid: number,
): void {
  writePreOpAttr(w, before);
  writePostOpAttr(w, after, fsid);
}

export interface WccData {
  readonly before: WccAttr | undefined;
  readonly after: Fattr3 | undefined;
}

export function readWccData(r: XdrReader): WccData {
  const before = readPreOpAttr(r);
  const after = readPostOpAttr(r);
  return { before, after };
}

/**
 * ```
 * struct nfs_fh3 { opaque data<NFS3_FHSIZE>; };
 * ```
 * Decoded as a view of the call's bytes.
 */
export function readNfsFh3(r: XdrReader): Buffer {
  return r.opaque(NFS3_FHSIZE, 'nfs_fh3');
}

export function writeNfsFh3(w: XdrWriter, fh: Uint8Array): void {
  w.opaque(fh);
}

/**
 * ```
 * union post_op_fh3 switch (bool handle_follows) {
 *   case TRUE: nfs_fh3 handle;
 *   case FALSE: void;
 * };
 * ```
 */
export function writePostOpFh3(w: XdrWriter, fh: Uint8Array | undefined): void {
  if (fh === undefined) w.bool(false);
  else w.bool(true).opaque(fh);
}

export function readPostOpFh3(r: XdrReader): Buffer | undefined {
  return r.bool('post_op_fh3.handle_follows') ? readNfsFh3(r) : undefined;
}

/**
 * ```
 * typedef string filename3<>;
 * struct diropargs3 { nfs_fh3 dir; filename3 name; };
 * ```
 * The name stays raw bytes here: the procedure checks it (see names.ts) and answers a bad one
 * with a status, which needs the directory's attributes, so it is not a decoding error.
 */
export interface Diropargs3 {
  readonly dir: Buffer;
  readonly name: Buffer;
}

/** Longest filename3 decoded; longer ones are garbage (NAME_MAX is 255, see names.ts). */
const MAX_NAME_ON_WIRE = 4096;

export function readFilename3(r: XdrReader): Buffer {
  return r.opaque(MAX_NAME_ON_WIRE, 'filename3');
}

export function readDiropargs3(r: XdrReader): Diropargs3 {
  const dir = readNfsFh3(r);
  const name = readFilename3(r);
  return { dir, name };
}

export function writeDiropargs3(w: XdrWriter, dir: Uint8Array, name: string | Uint8Array): void {
  w.opaque(dir);
  if (typeof name === 'string') w.string(name);
  else w.opaque(name);
}

/**
 * ```
 * union set_mode3 switch (bool set_it) { case TRUE: mode3 mode; default: void; };
 * union set_uid3 switch (bool set_it) { case TRUE: uid3 uid; default: void; };
 * union set_gid3 switch (bool set_it) { case TRUE: gid3 gid; default: void; };
 * union set_size3 switch (bool set_it) { case TRUE: size3 size; default: void; };
 * union set_atime switch (time_how set_it) {
 *   case SET_TO_CLIENT_TIME: nfstime3 atime; default: void;
 * };
 * union set_mtime switch (time_how set_it) {
 *   case SET_TO_CLIENT_TIME: nfstime3 mtime; default: void;
 * };
 * struct sattr3 {
 *   set_mode3 mode; set_uid3 uid; set_gid3 gid; set_size3 size; set_atime atime; set_mtime mtime;
 * };
 * ```
 * Only the permission bits of `mode` are kept.
 */
export function readSattr3(r: XdrReader): SetAttributes {
  const s: {
    mode?: number;
    uid?: number;
    gid?: number;
    size?: number;
    atime?: SetAttributes['atime'];
    mtime?: SetAttributes['mtime'];
  } = {};
  if (r.bool('set_mode3')) s.mode = r.u32('mode3') & 0o7777;
  if (r.bool('set_uid3')) s.uid = r.u32('uid3');
  if (r.bool('set_gid3')) s.gid = r.u32('gid3');
  if (r.bool('set_size3')) s.size = r.u64n('size3');
  const atime = readSetTime(r, 'set_atime');
  if (atime !== undefined) s.atime = atime;
  const mtime = readSetTime(r, 'set_mtime');
  if (mtime !== undefined) s.mtime = mtime;
  return s;
}

function readSetTime(r: XdrReader, what: string): NfsTime | 'server' | undefined {
  const how = r.u32(what);
  if (how === TimeHow.DONT_CHANGE) return undefined;
  if (how === TimeHow.SET_TO_SERVER_TIME) return 'server';
  if (how === TimeHow.SET_TO_CLIENT_TIME) return readNfstime3(r);
  throw xdrError(`${what}: time_how ${how} is not in the enum`);
}

export function writeSattr3(w: XdrWriter, s: SetAttributes): void {
  if (s.mode === undefined) w.bool(false);
  else w.bool(true).u32(s.mode);
  if (s.uid === undefined) w.bool(false);
  else w.bool(true).u32(s.uid);
  if (s.gid === undefined) w.bool(false);
  else w.bool(true).u32(s.gid);
  if (s.size === undefined) w.bool(false);
  else w.bool(true).u64n(s.size);
  writeSetTime(w, s.atime);
  writeSetTime(w, s.mtime);
}

function writeSetTime(w: XdrWriter, t: NfsTime | 'server' | undefined): void {
  if (t === undefined) w.u32(TimeHow.DONT_CHANGE);
  else if (t === 'server') w.u32(TimeHow.SET_TO_SERVER_TIME);
  else {
    w.u32(TimeHow.SET_TO_CLIENT_TIME);
    writeNfstime3(w, t);
  }
}

const STABLE_OF_CODE: readonly StableHow[] = ['unstable', 'data_sync', 'file_sync'];

/** `enum stable_how { UNSTABLE = 0, DATA_SYNC = 1, FILE_SYNC = 2 };` */
export function readStableHow(r: XdrReader): StableHow {
  const code = r.u32('stable_how');
  const s = STABLE_OF_CODE[code];
  if (s === undefined) throw xdrError(`stable_how ${code} is not in the enum`);
  return s;
}

export function stableHowCode(s: StableHow): number {
  return s === 'file_sync'
    ? StableHow3.FILE_SYNC
    : s === 'data_sync'
      ? StableHow3.DATA_SYNC
      : StableHow3.UNSTABLE;
}
