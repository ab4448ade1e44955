import type { BlockSource } from '@ivmr/core';
import { formatError } from '../errors.js';
import { SECTOR, type SparseHeader } from './header.js';

/** The grain directory in use: entry i is the sector of grain table i, 0 when not allocated. */
export interface GrainDirectory {
  readonly entries: Uint32Array;
  /** True when the primary directory was damaged and the redundant copy is in use. */
  readonly redundant: boolean;
}

async function readDirectory(
  file: BlockSource,
  header: SparseHeader,
  at: number,
): Promise<Uint32Array> {
  const bytes = await file.read(at * SECTOR, header.gdEntries * 4);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const entries = new Uint32Array(header.gdEntries);
  for (let i = 0; i < entries.length; i++) entries[i] = view.getUint32(i * 4, true);
  return entries;
}

/** The index of the first entry pointing outside the file or at the header, or -1. */
function firstBadEntry(entries: Uint32Array, header: SparseHeader, fileSize: number): number {
  const tableBytes = header.numGTEsPerGT * 4;
  for (let i = 0; i < entries.length; i++) {
    const sector = entries[i]!;
    if (sector !== 0 && (sector < 1 || sector * SECTOR + tableBytes > fileSize)) return i;
  }
  return -1;
}

/**
 * Reads the grain directory and checks that every grain table it names lies inside the file.
 * Hosted sparse extents keep a redundant copy (directory and tables, `rgdOffset`); when the
 * primary directory names a table outside the file, the redundant one is used if it is whole.
 *
 * @throws IvmrError `IVMR_FORMAT` naming the directory entry when neither copy is whole.
 */
export async function readGrainDirectory(
  file: BlockSource,
  header: SparseHeader,
  what: string,
): Promise<GrainDirectory> {
  const primary = await readDirectory(file, header, header.gdOffset);
  const bad = firstBadEntry(primary, header, file.size);
  if (bad < 0) return { entries: primary, redundant: false };
  if (header.rgdOffset !== 0 && header.rgdOffset * SECTOR + header.gdEntries * 4 <= file.size) {
    const copy = await readDirectory(file, header, header.rgdOffset);
    if (firstBadEntry(copy, header, file.size) < 0) return { entries: copy, redundant: true };
  }
  throw formatError(
    what,
    `grain directory entry ${bad} points at sector ${primary[bad]}, outside the ${file.size}-byte file${header.rgdOffset ? ', and the redundant directory is damaged too' : ''}`,
    { field: 'grain directory', entry: bad, offset: header.gdOffset * SECTOR + bad * 4 },
  );
}
