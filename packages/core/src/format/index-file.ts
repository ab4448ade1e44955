import { isValidObjectName } from '../store/adapter.js';
import { BinaryReader, BinaryWriter, formatError } from './binary.js';
import { metaChecksum } from './codec.js';
import { type BlobEntry, readBlobEntries, writeBlobEntries } from './pack.js';

const INDEX_MAGIC = Buffer.from('IVMRIDX1', 'latin1');

/** The blobs of one pack as an index lists them. */
export interface IndexedPack {
  readonly pack: string;
  /** Size of the pack object in bytes. */
  readonly size: number;
  readonly blobs: readonly BlobEntry[];
}

/** Encodes an index object (FORMAT.md, "Index objects"). */
export function encodeIndex(packs: readonly IndexedPack[]): Buffer {
  const w = new BinaryWriter(64 * 1024);
  w.bytes(INDEX_MAGIC).u32(packs.length);
  for (const p of packs) {
    w.str(p.pack).u64(p.size);
    writeBlobEntries(w, p.blobs);
  }
  const body = Buffer.from(w.view());
  const sum = new BinaryWriter(8).big64(metaChecksum(body)).view();
  return Buffer.concat([body, sum]);
}

/** Decodes an index object, checking its checksum and every length. */
export function decodeIndex(bytes: Uint8Array, what: string): IndexedPack[] {
  if (bytes.length < INDEX_MAGIC.length + 12) throw formatError(what, 'index too short');
  const body = bytes.subarray(0, bytes.length - 8);
  const sum = new BinaryReader(bytes.subarray(bytes.length - 8), what).big64('checksum');
  if (metaChecksum(body) !== sum) throw formatError(what, 'index checksum mismatch');
  const r = new BinaryReader(body, what);
  if (!r.bytes(8, 'magic').equals(INDEX_MAGIC))
    throw formatError(what, 'not an ivmr index (bad magic)');
  const n = r.u32('pack count');
  r.need(n * 14, 'packs');
  const packs: IndexedPack[] = [];
  for (let i = 0; i < n; i++) {
    const pack = r.str('pack name');
    if (!isValidObjectName(pack))
      throw formatError(what, `invalid pack name ${JSON.stringify(pack)}`);
    const size = r.u64('pack size');
    packs.push({ pack, size, blobs: readBlobEntries(r, size) });
  }
  r.end();
  return packs;
}
