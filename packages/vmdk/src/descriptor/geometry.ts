import { ErrorCode, IvmrError } from '@ivmr/core';
import { SECTOR } from './model.js';

/** The legacy CHS geometry a descriptor records in `ddb.geometry.*`. */
export interface DiskGeometry {
  /** `ddb.geometry.cylinders`. */
  readonly cylinders: number;
  /** `ddb.geometry.heads`: 255 (SCSI) or 16 (IDE). */
  readonly heads: number;
  /** `ddb.geometry.sectors`: sectors per track, 63. */
  readonly sectors: number;
}

/** The bus whose BIOS conventions the geometry follows. */
export type GeometryBus = 'scsi' | 'ide';

/** VMware caps IDE cylinders here (the ATA CHS limit); SCSI cylinders are not capped. */
export const IDE_MAX_CYLINDERS = 16383;

/**
 * The geometry VMware records for a disk of `bytes` bytes: SCSI 255 heads and 63 sectors per
 * track, IDE 16 heads and 63 sectors with cylinders capped at 16383; cylinders =
 * floor(bytes / (heads * sectors * 512)), as VMware and qemu compute it. A disk smaller than one
 * cylinder (8,225,280 bytes for SCSI) gets 0 cylinders, as qemu writes; guests use the LBA size.
 */
export function diskGeometry(bytes: number, bus: GeometryBus): DiskGeometry {
  if (!Number.isSafeInteger(bytes) || bytes < 0) {
    throw new IvmrError(
      ErrorCode.INVALID_ARGUMENT,
      `disk size must be a whole number >= 0, got ${bytes}`,
    );
  }
  const heads = bus === 'ide' ? 16 : 255;
  const sectors = 63;
  const cylinders = Math.floor(bytes / (heads * sectors * SECTOR));
  return {
    cylinders: bus === 'ide' ? Math.min(cylinders, IDE_MAX_CYLINDERS) : cylinders,
    heads,
    sectors,
  };
}
