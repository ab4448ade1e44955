import { checksum, getU64, hasMagic, magicBytes, setU64, viewOf } from '../util/binary.js';
import { decodeRunValue, encodeRunValue, type GrainRun, RUN_BYTES } from './grain-run.js';

const MAGIC = magicBytes('IVMROMAP');
const VERSION = 1;
/** Bytes of the map snapshot header; the runs follow it. */
export const MAP_HEADER_BYTES = 72;

/** The header of a map snapshot (FORMAT.md, "Map snapshot"). */
export interface MapHeader {
  /** Must equal the superblock's overlay id. */
  id: Uint8Array;
  /** The last commit the snapshot includes; journal records up to it are skipped. */
  seq: number;
  size: number;
  baseLimit: number;
  runCount: number;
  /** CRC-32 of the run area. */
  runsCrc: number;
}

/** Encodes a map snapshot header. */
export function encodeMapHeader(h: MapHeader): Uint8Array {
  const out = new Uint8Array(MAP_HEADER_BYTES);
  const v = viewOf(out);
  out.set(MAGIC, 0);
  v.setUint32(8, VERSION);
  out.set(h.id.subarray(0, 16), 16);
  setU64(v, 32, h.seq);
  setU64(v, 40, h.size);
  setU64(v, 48, h.baseLimit);
  setU64(v, 56, h.runCount);
  v.setUint32(64, h.runsCrc);
  v.setUint32(68, checksum(out.subarray(0, 68)));
  return out;
}

/**
 * Decodes a map snapshot header; a string says what is wrong (the snapshot was written whole
 * and renamed into place, so any fault is damage, never a torn write).
 */
export function decodeMapHeader(bytes: Uint8Array): MapHeader | string {
  if (bytes.length < MAP_HEADER_BYTES || !hasMagic(bytes, MAGIC)) return 'bad magic';
  const v = viewOf(bytes);
  if (v.getUint32(68) !== checksum(bytes.subarray(0, 68))) return 'header checksum mismatch';
  if (v.getUint32(8) !== VERSION) return `unknown version ${v.getUint32(8)}`;
  const h: MapHeader = {
    id: bytes.slice(16, 32),
    seq: getU64(v, 32),
    size: getU64(v, 40),
    baseLimit: getU64(v, 48),
    runCount: getU64(v, 56),
    runsCrc: v.getUint32(64),
  };
  if (![h.seq, h.size, h.baseLimit, h.runCount].every(Number.isSafeInteger)) {
    return 'a field is 2^53 or more';
  }
  return h;
}

/** Encodes runs into `out` (which holds `runs.length * 16` bytes). */
export function encodeRuns(runs: readonly GrainRun[], out: Uint8Array): Uint8Array {
  const v = viewOf(out);
  let at = 0;
  for (const r of runs) {
    setU64(v, at, r.first);
    v.setUint32(at + 8, r.count);
    v.setUint32(at + 12, encodeRunValue(r.value));
    at += RUN_BYTES;
  }
  return out;
}

/** Decodes the runs in `bytes` (a multiple of 16 bytes). */
export function decodeRuns(bytes: Uint8Array): GrainRun[] {
  const v = viewOf(bytes);
  const runs: GrainRun[] = [];
  for (let at = 0; at + RUN_BYTES <= bytes.length; at += RUN_BYTES) {
    runs.push({
      first: getU64(v, at),
      count: v.getUint32(at + 8),
      value: decodeRunValue(v.getUint32(at + 12)),
    });
  }
  return runs;
}
