import { ErrorCode, IvmrError, type NicConfig, type VmConfig } from '@ivmr/core';
import {
  BUS_LIMITS,
  controllerBus,
  controllerMinHardwareVersion,
  DEFAULT_HARDWARE_VERSION,
  type DiskBus,
} from '../controllers.js';
import { escapeVmxValue } from './escape.js';

/** Options of {@link synthesizeVmx}. */
export interface SynthesizeVmxOptions {
  /** The VM's configuration as captured at backup (`RestorePointInfo.vmConfig`). */
  readonly config: VmConfig;
  /**
   * The disks' descriptor file names (`disk0.vmdk`, ...), relative to the `.vmx`, in order: the
   * first is the boot disk and takes unit 0 of controller 0.
   */
  readonly disks: readonly string[];
  /** `virtualHW.version`. Default {@link DEFAULT_HARDWARE_VERSION}. */
  readonly hardwareVersion?: number;
  /**
   * Connect the NICs at power-on. Default false: an isolated restore must not come up on the
   * production network next to the VM it was backed up from.
   */
  readonly nicsConnected?: boolean;
  /**
   * Keep the NICs' MAC addresses (default true: guests often bind their network configuration
   * to them). False lets the hypervisor generate new ones.
   */
  readonly keepMacAddresses?: boolean;
  /** `sched.swap.dir`: where ESXi puts the VM's swap file (as large as its memory) instead. */
  readonly swapDirectory?: string;
}

/** Where one disk sits: `scsi0:1`, `sata0:0`, ... */
export interface DiskSlot {
  /** `scsi`, `ide`, `sata` or `nvme`. */
  readonly bus: DiskBus;
  /** Controller number: the N of `scsiN:U`. */
  readonly controller: number;
  /** Unit number on the controller: the U of `scsiN:U`. */
  readonly unit: number;
}

/**
 * The slots of `count` disks on `bus`, in order: unit 0, 1, ... of controller 0 (skipping the
 * SCSI initiator's unit 7), then controller 1, ...
 *
 * @throws IvmrError `IVMR_INVALID_ARGUMENT` when the bus has fewer slots.
 */
export function diskSlots(bus: DiskBus, count: number): DiskSlot[] {
  const limits = BUS_LIMITS[bus];
  const slots: DiskSlot[] = [];
  for (let c = 0; c < limits.controllers && slots.length < count; c++) {
    for (let u = 0; u < limits.units && slots.length < count; u++) {
      if (u !== limits.reservedUnit) slots.push({ bus, controller: c, unit: u });
    }
  }
  if (slots.length < count) {
    throw new IvmrError(
      ErrorCode.INVALID_ARGUMENT,
      `${count} disks do not fit on ${bus}: ${slots.length} slots at most`,
    );
  }
  return slots;
}

/** VMware's range of static MAC addresses; others need `checkMACAddress = "FALSE"`. */
function inStaticRange(mac: string): boolean {
  return mac.startsWith('00:50:56:') && Number.parseInt(mac.slice(9, 11), 16) <= 0x3f;
}

function checkedMac(nic: NicConfig, i: number): string | undefined {
  if (nic.mac === undefined) return undefined;
  const mac = nic.mac.toLowerCase();
  if (!/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/.test(mac)) {
    throw new IvmrError(
      ErrorCode.INVALID_ARGUMENT,
      `NIC ${i}: MAC address "${nic.mac}" is not aa:bb:cc:dd:ee:ff`,
    );
  }
  return mac;
}

/**
 * Writes the `.vmx` of a recovered VM: the minimal set ESXi registers (NFS-ESXI-FACTS.md) and
 * no more. `.encoding = "UTF-8"`, `config.version = "8"`, `virtualHW.version`, `displayName`,
 * `guestOS`, `firmware`, `memSize`, `numvcpus`, the disk controller(s) with one
 * `<bus>N:U.present`/`.fileName` pair per disk, the NICs (`startConnected = "FALSE"` unless
 * `nicsConnected`), `uuid.action = "keep"` (answers "moved" to ESXi's moved-or-copied question,
 * keeping the BIOS uuid and MACs) and `sched.swap.dir` when given.
 *
 * Values are escaped as VMware does (`"` is `|22`, a line break `|0A`, `|` is `|7C`), so no
 * value can end its line early. {@link parseVmx} reads the result back to the same `VmConfig`.
 *
 * @throws IvmrError `IVMR_INVALID_ARGUMENT` for memory that is not a positive multiple of 4 MiB,
 *   a CPU count outside 1..768, an unknown controller, a hardware version below what the
 *   controller needs, too many disks for the bus, or a malformed MAC.
 */
export function synthesizeVmx(options: SynthesizeVmxOptions): string {
  const { config, disks } = options;
  const hw = options.hardwareVersion ?? DEFAULT_HARDWARE_VERSION;
  const bus = controllerBus(config.controller);
  if (!Number.isInteger(hw) || hw < 4 || hw > 99) {
    throw new IvmrError(ErrorCode.INVALID_ARGUMENT, `hardware version must be 4..99, got ${hw}`);
  }
  const minHw = controllerMinHardwareVersion(config.controller);
  if (hw < minHw) {
    throw new IvmrError(
      ErrorCode.INVALID_ARGUMENT,
      `controller ${config.controller} needs virtual hardware version ${minHw} or later, got ${hw}`,
    );
  }
  if (!Number.isInteger(config.memoryMB) || config.memoryMB < 4 || config.memoryMB % 4 !== 0) {
    throw new IvmrError(
      ErrorCode.INVALID_ARGUMENT,
      `memory must be a multiple of 4 MiB, got ${config.memoryMB}`,
    );
  }
  if (!Number.isInteger(config.cpus) || config.cpus < 1 || config.cpus > 768) {
    throw new IvmrError(ErrorCode.INVALID_ARGUMENT, `cpus must be 1..768, got ${config.cpus}`);
  }
  if (config.firmware !== 'bios' && config.firmware !== 'efi') {
    throw new IvmrError(
      ErrorCode.INVALID_ARGUMENT,
      `firmware must be bios or efi, got ${String(config.firmware)}`,
    );
  }
  const lines: string[] = [];
  const set = (key: string, value: string | number) => {
    lines.push(`${key} = "${escapeVmxValue(String(value))}"`);
  };
  set('.encoding', 'UTF-8');
  set('config.version', '8');
  set('virtualHW.version', hw);
  set('displayName', config.name);
  set('guestOS', config.guestOs);
  set('firmware', config.firmware);
  set('memSize', config.memoryMB);
  set('numvcpus', config.cpus);

  const slots = diskSlots(bus, disks.length);
  const controllers = new Set([0, ...slots.map((s) => s.controller)]);
  if (bus !== 'ide') {
    for (const c of controllers) {
      set(`${bus}${c}.present`, 'TRUE');
      if (bus === 'scsi') set(`${bus}${c}.virtualDev`, config.controller.toLowerCase());
    }
  }
  slots.forEach((slot, i) => {
    const key = `${slot.bus}${slot.controller}:${slot.unit}`;
    set(`${key}.present`, 'TRUE');
    set(`${key}.fileName`, disks[i]!);
  });

  config.nics.forEach((nic, i) => {
    const key = `ethernet${i}`;
    const mac = checkedMac(nic, i);
    set(`${key}.present`, 'TRUE');
    if (nic.type !== undefined) set(`${key}.virtualDev`, nic.type);
    if (nic.network !== undefined) set(`${key}.networkName`, nic.network);
    set(`${key}.startConnected`, options.nicsConnected ? 'TRUE' : 'FALSE');
    if (mac !== undefined && (options.keepMacAddresses ?? true)) {
      set(`${key}.addressType`, 'static');
      set(`${key}.address`, mac);
      // ESXi refuses a static MAC outside its own range unless told not to check it.
      if (!inStaticRange(mac)) set(`${key}.checkMACAddress`, 'FALSE');
    } else {
      set(`${key}.addressType`, 'generated');
    }
  });

  set('uuid.action', 'keep');
  if (options.swapDirectory !== undefined) set('sched.swap.dir', options.swapDirectory);
  return `${lines.join('\n')}\n`;
}
