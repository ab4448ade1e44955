import { randomBytes } from 'node:crypto';
import { ErrorCode, IvmrError } from '../errors.js';
import { formatError } from '../format/binary.js';

/** Firmware a VM boots with. It must match the source VM or the guest will not boot. */
export type Firmware = 'bios' | 'efi';

/** A virtual NIC of the backed-up VM. */
export interface NicConfig {
  /** Network (port group) name. */
  readonly network?: string;
  /** Adapter type, e.g. `vmxnet3`, `e1000e`. */
  readonly type?: string;
  /** MAC address as `aa:bb:cc:dd:ee:ff`, when the source had a static one. */
  readonly mac?: string;
}

/** The VM's configuration as captured at backup (enough to synthesize a `.vmx`). */
export interface VmConfig {
  /** Display name. */
  readonly name: string;
  /** Guest OS identifier, e.g. VMware's `debian12-64` or `windows2019srv-64`. */
  readonly guestOs: string;
  readonly firmware: Firmware;
  /** Memory in MiB. */
  readonly memoryMB: number;
  /** Virtual CPUs. */
  readonly cpus: number;
  /** Disk controller, e.g. `pvscsi`, `lsilogic`, `lsisas1068`, `ide`, `sata`, `nvme`. */
  readonly controller: string;
  readonly nics: readonly NicConfig[];
}

/** How a restore point stores its block maps. */
export type PointKind = 'full' | 'incremental' | 'reverse-incremental';

/** Counters of one disk of one backup run. */
export interface DiskBackupStats {
  /** Blocks of the disk. */
  readonly blocks: number;
  /** Blocks that are all zeros (not stored). */
  readonly zeroBlocks: number;
  /** Blocks equal to the parent point's (skipped by hash or by the changed-block list). */
  readonly unchangedBlocks: number;
  /** Changed blocks whose content the repository already had (deduplicated). */
  readonly dedupBlocks: number;
  /** Blocks stored as new blobs. */
  readonly newBlocks: number;
  /** Raw bytes of the new blobs. */
  readonly newBytes: number;
  /** Bytes the new blobs take in packs (compressed, framed). */
  readonly storedBytes: number;
  /** Bytes read from the source. */
  readonly readBytes: number;
}

/** One disk of a restore point. */
export interface PointDisk {
  /** Disk name, unique within the point (e.g. `disk0`, or the source image's base name). */
  readonly name: string;
  /** Size in bytes (any size; the last block may be short). */
  readonly size: number;
  readonly blockSize: number;
  /** Name of this point's block map object for the disk. */
  readonly map: string;
  /** Bytes in the blocks that are not all zeros at this point (what a thin copy allocates). */
  readonly allocatedBytes: number;
  readonly stats: DiskBackupStats;
}

/** A restore point's metadata (the `point` object, FORMAT.md "Restore points"). */
export interface RestorePointInfo {
  readonly version: 1;
  /** 16 hex digits. */
  readonly id: string;
  readonly vm: string;
  /** ISO time the backup started. */
  readonly time: string;
  /** Position in the VM's history: 1 for the first point, strictly growing. */
  readonly sequence: number;
  readonly kind: PointKind;
  /** Point whose block maps this point's delta maps apply to; null for a full point. */
  readonly base: string | null;
  readonly vmConfig: VmConfig;
  readonly disks: readonly PointDisk[];
}

const VM_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const DISK_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9 ._+-]{0,127}$/;
const POINT_ID_RE = /^[0-9a-f]{16}$/;

/** Throws `IVMR_INVALID_ARGUMENT` unless `name` is a valid VM name. */
export function checkVmName(name: string): void {
  if (!VM_NAME_RE.test(name)) {
    throw new IvmrError(
      ErrorCode.INVALID_ARGUMENT,
      `invalid VM name ${JSON.stringify(name)}: use 1-64 of A-Z a-z 0-9 . _ - (not starting with . _ -)`,
    );
  }
}

/** Throws `IVMR_INVALID_ARGUMENT` unless `name` is a valid disk name. */
export function checkDiskName(name: string): void {
  if (!DISK_NAME_RE.test(name)) {
    throw new IvmrError(
      ErrorCode.INVALID_ARGUMENT,
      `invalid disk name ${JSON.stringify(name)}: use 1-128 of A-Z a-z 0-9 space . _ + -`,
    );
  }
}

/** A new random point id. */
export function newPointId(): string {
  return randomBytes(8).toString('hex');
}

/** Default VM configuration for a VM whose backup gave none. */
export function defaultVmConfig(vm: string): VmConfig {
  return {
    name: vm,
    guestOs: 'other-64',
    firmware: 'bios',
    memoryMB: 1024,
    cpus: 1,
    controller: 'pvscsi',
    nics: [],
  };
}

/** Validates a VM configuration given by a caller and fills defaults. */
export function completeVmConfig(base: VmConfig, given: Partial<VmConfig> | undefined): VmConfig {
  const c = { ...base, ...(given ?? {}) };
  if (c.firmware !== 'bios' && c.firmware !== 'efi') {
    throw new IvmrError(
      ErrorCode.INVALID_ARGUMENT,
      `firmware must be bios or efi, got ${String(c.firmware)}`,
    );
  }
  if (!Number.isInteger(c.memoryMB) || c.memoryMB < 4 || c.memoryMB % 4 !== 0) {
    throw new IvmrError(
      ErrorCode.INVALID_ARGUMENT,
      `memory must be a multiple of 4 MiB, got ${c.memoryMB}`,
    );
  }
  if (!Number.isInteger(c.cpus) || c.cpus < 1 || c.cpus > 768) {
    throw new IvmrError(ErrorCode.INVALID_ARGUMENT, `cpus must be 1..768, got ${c.cpus}`);
  }
  if (typeof c.guestOs !== 'string' || c.guestOs.length === 0) {
    throw new IvmrError(ErrorCode.INVALID_ARGUMENT, 'guest OS must be a non-empty identifier');
  }
  return c;
}

/** Parses and validates a stored point object. */
export function parsePoint(bytes: Uint8Array, name: string): RestorePointInfo {
  const what = `restore point ${name}`;
  let p: RestorePointInfo;
  try {
    p = JSON.parse(Buffer.from(bytes).toString('utf8')) as RestorePointInfo;
  } catch {
    throw formatError(what, 'not valid JSON');
  }
  const ok =
    typeof p === 'object' &&
    p !== null &&
    p.version === 1 &&
    p.id === name &&
    POINT_ID_RE.test(p.id) &&
    typeof p.vm === 'string' &&
    VM_NAME_RE.test(p.vm) &&
    typeof p.time === 'string' &&
    Number.isInteger(p.sequence) &&
    (p.kind === 'full' || p.kind === 'incremental' || p.kind === 'reverse-incremental') &&
    (p.base === null || (typeof p.base === 'string' && POINT_ID_RE.test(p.base))) &&
    (p.kind === 'full') === (p.base === null) &&
    typeof p.vmConfig === 'object' &&
    p.vmConfig !== null &&
    Array.isArray(p.disks) &&
    p.disks.every(
      (d) =>
        typeof d === 'object' &&
        d !== null &&
        typeof d.name === 'string' &&
        Number.isSafeInteger(d.size) &&
        d.size >= 0 &&
        Number.isInteger(d.blockSize) &&
        Number.isSafeInteger(d.allocatedBytes) &&
        typeof d.map === 'string',
    );
  if (!ok) throw formatError(what, 'missing or invalid fields');
  return p;
}

/** Serializes a point object. */
export function encodePoint(p: RestorePointInfo): Uint8Array {
  return Buffer.from(`${JSON.stringify(p, null, 2)}\n`, 'utf8');
}
