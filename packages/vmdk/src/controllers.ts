import { ErrorCode, IvmrError } from '@ivmr/core';

/** A disk bus of a VMware VM; each has its own `.vmx` key prefix (`scsi0:1`, `sata0:3`, ...). */
export type DiskBus = 'scsi' | 'ide' | 'sata' | 'nvme';

/** SCSI controller models, the values of `scsiN.virtualDev`. */
export const SCSI_CONTROLLERS = ['lsilogic', 'lsisas1068', 'pvscsi', 'buslogic'] as const;

/** Limits of a bus: controllers per VM, unit numbers per controller, and when it appeared. */
export interface BusLimits {
  /** Controllers of the bus a VM can have. */
  readonly controllers: number;
  /** Unit numbers per controller (0..units-1). */
  readonly units: number;
  /** A unit number no disk can take (the SCSI initiator's own id, 7). */
  readonly reservedUnit?: number;
  /** Lowest virtual hardware version that has the bus. */
  readonly minHardwareVersion: number;
}

/** Per bus limits, conservative enough for every ESXi from 6.5 (hardware version 13). */
export const BUS_LIMITS: Readonly<Record<DiskBus, BusLimits>> = {
  scsi: { controllers: 4, units: 16, reservedUnit: 7, minHardwareVersion: 4 },
  ide: { controllers: 2, units: 2, minHardwareVersion: 4 },
  sata: { controllers: 4, units: 30, minHardwareVersion: 10 },
  nvme: { controllers: 4, units: 15, minHardwareVersion: 13 },
};

/** Lowest hardware version of the SCSI models that need more than the bus. */
const SCSI_MIN_HARDWARE: Readonly<Record<string, number>> = { pvscsi: 7, lsisas1068: 7 };

/**
 * Virtual hardware version written when the caller gives none: 14, the version of ESXi 6.7,
 * so the VM registers on every ESXi since 6.7 and opens in current Workstation.
 */
export const DEFAULT_HARDWARE_VERSION = 14;

/**
 * The bus of a controller name as `VmConfig.controller` holds it: a SCSI model
 * (`lsilogic`, `lsisas1068`, `pvscsi`, `buslogic`) or `ide`, `sata`, `nvme`.
 *
 * @throws IvmrError `IVMR_INVALID_ARGUMENT` for any other name.
 */
export function controllerBus(controller: string): DiskBus {
  const c = controller.toLowerCase();
  if ((SCSI_CONTROLLERS as readonly string[]).includes(c)) return 'scsi';
  if (c === 'ide' || c === 'sata' || c === 'nvme') return c;
  throw new IvmrError(
    ErrorCode.INVALID_ARGUMENT,
    `unknown disk controller "${controller}": use ${SCSI_CONTROLLERS.join(', ')}, ide, sata or nvme`,
    { details: { controller } },
  );
}

/** The lowest virtual hardware version that has `controller`. */
export function controllerMinHardwareVersion(controller: string): number {
  const bus = controllerBus(controller);
  return Math.max(
    BUS_LIMITS[bus].minHardwareVersion,
    SCSI_MIN_HARDWARE[controller.toLowerCase()] ?? 0,
  );
}
