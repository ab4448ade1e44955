/** Access mode of an extent line. qemu opens only `RW` extents and skips the others. */
export type ExtentAccess = 'RW' | 'RDONLY' | 'NOACCESS';

/** Extent types of VMware's descriptor format. */
export const EXTENT_TYPES = [
  'FLAT',
  'SPARSE',
  'ZERO',
  'VMFS',
  'VMFSSPARSE',
  'VMFSRDM',
  'VMFSRAW',
  'SESPARSE',
] as const;

/** One of {@link EXTENT_TYPES}. */
export type ExtentType = (typeof EXTENT_TYPES)[number];

/**
 * The `createType` values a descriptor may declare, with the extent types each allows
 * (`ZERO` is allowed everywhere). qemu opens the text descriptors of monolithicFlat, vmfs,
 * vmfsSparse, seSparse, twoGbMaxExtentSparse and twoGbMaxExtentFlat.
 */
export const CREATE_TYPES: Readonly<Record<string, readonly ExtentType[]>> = {
  monolithicSparse: ['SPARSE'],
  monolithicFlat: ['FLAT'],
  twoGbMaxExtentSparse: ['SPARSE'],
  twoGbMaxExtentFlat: ['FLAT'],
  streamOptimized: ['SPARSE'],
  vmfs: ['VMFS'],
  vmfsSparse: ['VMFSSPARSE'],
  vmfsRaw: ['VMFSRAW'],
  vmfsRawDeviceMap: ['VMFSRDM'],
  vmfsPassthroughRawDeviceMap: ['VMFSRDM'],
  seSparse: ['SESPARSE'],
  fullDevice: ['FLAT'],
  partitionedDevice: ['FLAT'],
  custom: EXTENT_TYPES,
};

/** One extent line: `<access> <sectors> <type> ["<file>" [<offset>]]`. */
export interface VmdkExtent {
  /** `RW`, `RDONLY` or `NOACCESS`. */
  readonly access: ExtentAccess;
  /** Length of the extent in 512-byte sectors (> 0). */
  readonly sectors: number;
  /** How the extent stores its bytes: `FLAT`, `VMFS`, `SPARSE`, `ZERO`, ... */
  readonly type: ExtentType;
  /** File of the extent, relative to the descriptor's folder; absent for `ZERO`. */
  readonly fileName?: string;
  /** Start of the extent in its file, in sectors; only (and always) for `FLAT`. */
  readonly offset?: number;
}

/**
 * A VMDK text descriptor: what {@link parseDescriptor} returns and {@link formatDescriptor}
 * writes. Values are unquoted; `CID` and `parentCID` are 8 lowercase hex digits.
 */
export interface VmdkDescriptor {
  /** `version=`: 1 (plain), 2, or 3 (changed block tracking; read, never written). */
  readonly version: number;
  /** Content id, changed by hypervisors on the first write after open. */
  readonly cid: string;
  /** Content id of the parent disk; `ffffffff` for a disk without a parent. */
  readonly parentCid: string;
  /** The disk's layout: `vmfs`, `monolithicFlat`, `monolithicSparse`, ... ({@link CREATE_TYPES}). */
  readonly createType: string;
  /**
   * Other header entries in file order: `encoding`, `isNativeSnapshot`, `parentFileNameHint`,
   * `changeTrackPath`, ...
   */
  readonly header: Readonly<Record<string, string>>;
  /** The extent lines in order: the disk is their concatenation. */
  readonly extents: readonly VmdkExtent[];
  /** The disk database, keys without the `ddb.` prefix (`adapterType`, `geometry.heads`, ...). */
  readonly ddb: Readonly<Record<string, string>>;
}

/** `parentCID` of a disk that has no parent. */
export const NO_PARENT_CID = 'ffffffff';

/** Bytes per sector: the unit of every size and offset in a descriptor. */
export const SECTOR = 512;

/** Most sectors a descriptor may declare in total: the bytes stay exact in a JS number. */
export const MAX_SECTORS = Math.floor(Number.MAX_SAFE_INTEGER / SECTOR);

/** The size in bytes of the disk a descriptor describes (the sum of its extents). */
export function descriptorSize(descriptor: VmdkDescriptor): number {
  let sectors = 0;
  for (const e of descriptor.extents) sectors += e.sectors;
  return sectors * SECTOR;
}
