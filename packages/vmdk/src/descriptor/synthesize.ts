import { ErrorCode, IvmrError } from '@ivmr/core';
import { controllerBus, DEFAULT_HARDWARE_VERSION } from '../controllers.js';
import { diskGeometry } from './geometry.js';
import { type DiskIdentity, deriveDiskIds } from './ids.js';
import { MAX_SECTORS, NO_PARENT_CID, SECTOR, type VmdkDescriptor } from './model.js';
import { valueProblem } from './rules.js';
import { formatDescriptor } from './write.js';

/**
 * Who reads the descriptor. `esxi`: `createType="vmfs"` with one `VMFS` extent, the only family
 * ESXi runs from a datastore (NFS ones included). `hosted`: `createType="monolithicFlat"` with a
 * `FLAT` extent at offset 0, for Workstation, Fusion and qemu.
 */
export type DescriptorTarget = 'esxi' | 'hosted';

/** Values of `ddb.adapterType` that VMware products and qemu all know. */
export type AdapterType = 'ide' | 'buslogic' | 'lsilogic' | 'legacyESX';

/** Options of {@link synthesizeDescriptor}. */
export interface SynthesizeDescriptorOptions {
  /** `esxi` (createType vmfs) or `hosted` (monolithicFlat). */
  readonly target: DescriptorTarget;
  /**
   * Disk size in bytes, > 0. A size that is not a multiple of 512 is rounded up to whole sectors:
   * the flat extent then reads zeros past the real end (see {@link FlatExtent}).
   */
  readonly size: number;
  /** The flat extent's file name, in the same folder: {@link diskFileNames}`(disk).flat`. */
  readonly flatFileName: string;
  /** The VM's disk controller (`VmConfig.controller`): picks the adapter type and geometry. */
  readonly controller: string;
  /** Identifies the disk; the descriptor's CID, longContentID and uuid derive from it. */
  readonly identity: DiskIdentity;
  /** `ddb.virtualHWVersion`. Default {@link DEFAULT_HARDWARE_VERSION}, as the `.vmx`. */
  readonly hardwareVersion?: number;
  /** Writes `ddb.thinProvisioned = "1"`. Default true: the flat extent is a sparse file. */
  readonly thinProvisioned?: boolean;
  /** Overrides the adapter type derived from `controller`. */
  readonly adapterType?: AdapterType;
}

/**
 * `ddb.adapterType` for a controller: `ide` for IDE and SATA disks (with IDE geometry),
 * `buslogic` for BusLogic, and `lsilogic` for LSI Logic, LSI SAS, PVSCSI and NVMe, the value
 * VMware's tools write for them and that every consumer accepts.
 */
export function adapterTypeFor(controller: string): AdapterType {
  const bus = controllerBus(controller);
  if (bus === 'ide' || bus === 'sata') return 'ide';
  return controller.toLowerCase() === 'buslogic' ? 'buslogic' : 'lsilogic';
}

/** The names of a disk's two files. */
export interface DiskFileNames {
  /** `<disk>.vmdk`: the text descriptor. */
  readonly descriptor: string;
  /** `<disk>-flat.vmdk`: the flat extent holding the bytes. */
  readonly flat: string;
}

/** The two files of a disk on a datastore: `<disk>.vmdk` and `<disk>-flat.vmdk`. */
export function diskFileNames(disk: string): DiskFileNames {
  if (disk === '' || /[/\\]/.test(disk) || valueProblem(disk)) {
    throw new IvmrError(
      ErrorCode.INVALID_ARGUMENT,
      `disk name ${JSON.stringify(disk)} cannot be a file name`,
    );
  }
  return { descriptor: `${disk}.vmdk`, flat: `${disk}-flat.vmdk` };
}

/**
 * The descriptor of a disk served as a flat extent: `version=1`, `encoding="UTF-8"`, the CID
 * derived from the identity, `parentCID=ffffffff`, the create type of the target, one RW extent
 * of ceil(size / 512) sectors, and the disk database (`adapterType`, geometry, `longContentID`,
 * `thinProvisioned`, `uuid`, `virtualHWVersion`, in VMware's alphabetical order). The same
 * options give the same descriptor, to the byte, every time.
 *
 * @throws IvmrError `IVMR_INVALID_ARGUMENT` for a size <= 0 or beyond 2^53 bytes, an unknown
 *   controller, a file name holding a double quote, slash or line break, or a bad identity.
 */
export function synthesizeDescriptor(options: SynthesizeDescriptorOptions): VmdkDescriptor {
  const { size, flatFileName, target } = options;
  if (!Number.isSafeInteger(size) || size <= 0) {
    throw new IvmrError(
      ErrorCode.INVALID_ARGUMENT,
      `disk size must be a whole number > 0, got ${size}`,
    );
  }
  const sectors = Math.ceil(size / SECTOR);
  if (sectors > MAX_SECTORS) {
    throw new IvmrError(ErrorCode.INVALID_ARGUMENT, `disk size ${size} is beyond 2^53 bytes`);
  }
  if (flatFileName === '' || /[/\\]/.test(flatFileName) || valueProblem(flatFileName)) {
    throw new IvmrError(
      ErrorCode.INVALID_ARGUMENT,
      `flat extent file name ${JSON.stringify(flatFileName)} must be a plain file name without double quotes`,
    );
  }
  if (target !== 'esxi' && target !== 'hosted') {
    throw new IvmrError(
      ErrorCode.INVALID_ARGUMENT,
      `target must be esxi or hosted, got ${String(target)}`,
    );
  }
  const hw = options.hardwareVersion ?? DEFAULT_HARDWARE_VERSION;
  if (!Number.isInteger(hw) || hw < 4 || hw > 99) {
    throw new IvmrError(ErrorCode.INVALID_ARGUMENT, `hardware version must be 4..99, got ${hw}`);
  }
  const adapterType = options.adapterType ?? adapterTypeFor(options.controller);
  const geometry = diskGeometry(sectors * SECTOR, adapterType === 'ide' ? 'ide' : 'scsi');
  const ids = deriveDiskIds(options.identity);
  const ddb: Record<string, string> = {
    adapterType,
    'geometry.cylinders': String(geometry.cylinders),
    'geometry.heads': String(geometry.heads),
    'geometry.sectors': String(geometry.sectors),
    longContentID: ids.longContentId,
  };
  if (options.thinProvisioned ?? true) ddb.thinProvisioned = '1';
  ddb.uuid = ids.uuid;
  ddb.virtualHWVersion = String(hw);
  return {
    version: 1,
    cid: ids.cid,
    parentCid: NO_PARENT_CID,
    createType: target === 'esxi' ? 'vmfs' : 'monolithicFlat',
    header: { encoding: 'UTF-8' },
    extents: [
      target === 'esxi'
        ? { access: 'RW', sectors, type: 'VMFS', fileName: flatFileName }
        : { access: 'RW', sectors, type: 'FLAT', fileName: flatFileName, offset: 0 },
    ],
    ddb,
  };
}

/** {@link synthesizeDescriptor} formatted as text by {@link formatDescriptor}. */
export function writeDescriptor(options: SynthesizeDescriptorOptions): string {
  return formatDescriptor(synthesizeDescriptor(options));
}
