import { checksum, getU64, setU64, viewOf } from '../util/binary.js';
import { decodeRunValue, encodeRunValue, type GrainRun, RUN_BYTES } from './grain-run.js';

/** `IVJC`: the first 4 bytes of every commit record. */
const MAGIC = 0x49564a43;
const FLAG_SIZE = 1;
/** Bytes of the fixed part of a record: magic, length, seq, flags, run count. */
export const COMMIT_HEADER_BYTES = 24;
const SIZE_FIELDS = 16;
const CRC_BYTES = 4;

/** A new disk size and base limit, recorded by a resize. */
export interface SizeChange {
  size: number;
  baseLimit: number;
}

/** One flush's changes: the grains it made durable and maybe a resize (FORMAT.md, "Journal"). */
export interface CommitRecord {
  seq: number;
  runs: GrainRun[];
  size?: SizeChange | undefined;
}

/** Bytes of a record with `runs` runs, with or without size fields. */
export function commitBytes(runs: number, withSize: boolean): number {
  return COMMIT_HEADER_BYTES + (withSize ? SIZE_FIELDS : 0) + runs * RUN_BYTES + CRC_BYTES;
}

/** Encodes a commit record. */
export function encodeCommit(rec: CommitRecord): Uint8Array {
  const len = commitBytes(rec.runs.length, rec.size !== undefined);
  const out = new Uint8Array(len);
  const v = viewOf(out);
  v.setUint32(0, MAGIC);
  v.setUint32(4, len);
  setU64(v, 8, rec.seq);
  v.setUint32(16, rec.size ? FLAG_SIZE : 0);
  v.setUint32(20, rec.runs.length);
  let at = COMMIT_HEADER_BYTES;
  if (rec.size) {
    setU64(v, at, rec.size.size);
    setU64(v, at + 8, rec.size.baseLimit);
    at += SIZE_FIELDS;
  }
  for (const r of rec.runs) {
    setU64(v, at, r.first);
    v.setUint32(at + 8, r.count);
    v.setUint32(at + 12, encodeRunValue(r.value));
    at += RUN_BYTES;
  }
  v.setUint32(at, checksum(out.subarray(0, at)));
  return out;
}

/**
 * The length a record header announces, or `undefined` when `header` (its first
 * {@link COMMIT_HEADER_BYTES} bytes) cannot start a record: wrong magic, or a length that does
 * not match its own run count and flags.
 */
export function commitLength(header: Uint8Array): number | undefined {
  if (header.length < COMMIT_HEADER_BYTES) return undefined;
  const v = viewOf(header);
  if (v.getUint32(0) !== MAGIC) return undefined;
  const flags = v.getUint32(16);
  if ((flags & ~FLAG_SIZE) !== 0) return undefined;
  const len = v.getUint32(4);
  if (len !== commitBytes(v.getUint32(20), (flags & FLAG_SIZE) !== 0)) return undefined;
  return len;
}

/**
 * Decodes a whole record (exactly the bytes {@link commitLength} announced); `undefined` when
 * its checksum or a field is wrong, which is how a torn last append shows.
 */
export function decodeCommit(bytes: Uint8Array): CommitRecord | undefined {
  const len = commitLength(bytes);
  if (len === undefined || len !== bytes.length) return undefined;
  const v = viewOf(bytes);
  if (v.getUint32(len - CRC_BYTES) !== checksum(bytes.subarray(0, len - CRC_BYTES))) {
    return undefined;
  }
  const seq = getU64(v, 8);
  if (!Number.isSafeInteger(seq)) return undefined;
  let at = COMMIT_HEADER_BYTES;
  let size: SizeChange | undefined;
  if ((v.getUint32(16) & FLAG_SIZE) !== 0) {
    size = { size: getU64(v, at), baseLimit: getU64(v, at + 8) };
    if (!Number.isSafeInteger(size.size) || !Number.isSafeInteger(size.baseLimit)) {
      return undefined;
    }
    at += SIZE_FIELDS;
  }
  const n = v.getUint32(20);
  const runs: GrainRun[] = new Array(n);
  for (let i = 0; i < n; i++, at += RUN_BYTES) {
    runs[i] = {
      first: getU64(v, at),
      count: v.getUint32(at + 8),
      value: decodeRunValue(v.getUint32(at + 12)),
    };
  }
  return { seq, runs, size };
}
