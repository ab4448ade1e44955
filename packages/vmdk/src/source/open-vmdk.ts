import { dirname, isAbsolute, join } from 'node:path';
import { type BlockSource, ErrorCode, FileBlockSource, IvmrError } from '@ivmr/core';
import {
  NO_PARENT_CID,
  SECTOR,
  type VmdkDescriptor,
  type VmdkExtent,
} from '../descriptor/model.js';
import { MAX_DESCRIPTOR_BYTES, parseDescriptor } from '../descriptor/parse.js';
import { formatError } from '../errors.js';
import { SPARSE_MAGIC } from '../sparse/header.js';
import { SparseVmdk, type SparseVmdkOptions } from '../sparse/sparse-vmdk.js';
import { type ChainPart, ExtentChain } from './extent-chain.js';

/** A VMDK opened by {@link openVmdk}: its bytes, and what kind of VMDK it was. */
export interface OpenedVmdk extends BlockSource {
  /** `createType` of its descriptor (`monolithicSparse`/`streamOptimized` for a sparse file). */
  readonly createType: string;
  /** The descriptor: the text file's, or the one embedded in a sparse file. */
  readonly descriptor: VmdkDescriptor | undefined;
  /** Reads as `BlockSource.read` does. */
  read(offset: number, length: number, into?: Uint8Array): Promise<Uint8Array>;
  /** Closes the files it opened. */
  close(): Promise<void>;
}

/** Options of {@link openVmdk}: those of the sparse reader, used for every sparse extent. */
export type OpenVmdkOptions = SparseVmdkOptions;

/**
 * Opens any VMDK a backup can read, as one read-only `BlockSource`: a sparse file
 * (monolithicSparse, streamOptimized) or a text descriptor whose extents are FLAT, VMFS, ZERO
 * or hosted SPARSE files (monolithicFlat, vmfs, twoGbMaxExtentFlat, twoGbMaxExtentSparse, ...).
 * Extent files are found relative to the descriptor's folder.
 *
 * A flat extent file may be up to 511 bytes shorter than its extent (a disk whose size is not a
 * whole number of sectors, as ivmr serves them); those bytes read as zeros.
 *
 * @throws IvmrError `IVMR_NOT_FOUND` for a missing file; `IVMR_FORMAT` for a malformed descriptor
 *   or sparse file, or an extent file shorter than its extent; `IVMR_UNSUPPORTED` for a delta
 *   disk (parentCID set) and for VMFSSPARSE, SESPARSE, VMFSRDM, VMFSRAW or NOACCESS extents.
 */
export async function openVmdk(path: string, options: OpenVmdkOptions = {}): Promise<OpenedVmdk> {
  const text = await readDescriptorFile(path);
  if (text === 'sparse') return SparseVmdk.open(path, options);
  const descriptor = parseDescriptor(text, { name: path });
  if (descriptor.parentCid !== NO_PARENT_CID) {
    throw new IvmrError(
      ErrorCode.UNSUPPORTED,
      `${path}: a delta disk (parentCID=${descriptor.parentCid}) cannot be read without its parent`,
    );
  }
  const parts: ChainPart[] = [];
  try {
    for (const extent of descriptor.extents) parts.push(await openExtent(path, extent, options));
  } catch (err) {
    await Promise.all(parts.map((p) => p.source?.close?.()));
    throw err;
  }
  const chain = new ExtentChain(parts);
  return Object.assign(chain, { createType: descriptor.createType, descriptor });
}

/** The bytes of a text descriptor, or 'sparse' for a file that starts with the KDMV magic. */
async function readDescriptorFile(path: string): Promise<Uint8Array | 'sparse'> {
  const source = await FileBlockSource.open(path);
  try {
    const head = await source.read(0, Math.min(source.size, 4));
    if (
      head.length === 4 &&
      new DataView(head.buffer, head.byteOffset).getUint32(0, true) === SPARSE_MAGIC
    ) {
      return 'sparse';
    }
    if (source.size > MAX_DESCRIPTOR_BYTES) {
      throw formatError(
        path,
        `neither a sparse VMDK (no KDMV magic) nor a descriptor (${source.size} bytes)`,
      );
    }
    return await source.read(0, source.size);
  } finally {
    await source.close();
  }
}

async function openExtent(
  descriptorPath: string,
  e: VmdkExtent,
  options: OpenVmdkOptions,
): Promise<ChainPart> {
  const size = e.sectors * SECTOR;
  if (e.type === 'ZERO') return { size, source: null, start: 0 };
  if (e.access === 'NOACCESS') {
    throw new IvmrError(
      ErrorCode.UNSUPPORTED,
      `${descriptorPath}: a NOACCESS extent cannot be read`,
    );
  }
  const file = isAbsolute(e.fileName!) ? e.fileName! : join(dirname(descriptorPath), e.fileName!);
  if (e.type === 'FLAT' || e.type === 'VMFS') {
    const source = await FileBlockSource.open(file);
    const start = (e.offset ?? 0) * SECTOR;
    if (source.size < start + size - (SECTOR - 1)) {
      await source.close();
      throw formatError(
        file,
        `${source.size} bytes, but the extent needs ${start + size} (truncated flat extent)`,
        {
          extent: e.fileName,
        },
      );
    }
    return { size, source, start };
  }
  if (e.type === 'SPARSE') {
    const source = await SparseVmdk.open(file, { ...options, name: file });
    if (source.size !== size) {
      await source.close();
      throw formatError(
        file,
        `the sparse extent holds ${source.size} bytes, the descriptor says ${size}`,
        {
          extent: e.fileName,
        },
      );
    }
    return { size, source, start: 0 };
  }
  throw new IvmrError(
    ErrorCode.UNSUPPORTED,
    `${descriptorPath}: ${e.type} extents are not supported`,
    {
      details: { extent: e.fileName },
    },
  );
}
