import type { RestorePointInfo } from '@ivmr/core';
import { type DescriptorTarget, diskFileNames, writeDescriptor } from './descriptor/synthesize.js';
import { synthesizeVmx } from './vmx/write.js';

/** Options of {@link synthesizePointFiles}. */
export interface PointFilesOptions {
  /** Id of the repository holding the point: part of every disk's identity. */
  readonly repository: string;
  /** `esxi` or `hosted` descriptors ({@link DescriptorTarget}). */
  readonly target: DescriptorTarget;
  /** `virtualHW.version` and `ddb.virtualHWVersion`. Default 14. */
  readonly hardwareVersion?: number;
  /** See {@link SynthesizeVmxOptions.nicsConnected}. Default false. */
  readonly nicsConnected?: boolean;
  /** See {@link SynthesizeVmxOptions.keepMacAddresses}. Default true. */
  readonly keepMacAddresses?: boolean;
  /** `sched.swap.dir`. */
  readonly swapDirectory?: string;
}

/** The files of one disk in a recovered VM's folder. */
export interface PointDiskFiles {
  /** Disk name in the point. */
  readonly disk: string;
  /** Disk size in bytes (the flat file's size is this rounded up to 512). */
  readonly size: number;
  /** `<disk>.vmdk` and its text. */
  readonly descriptorName: string;
  /** The descriptor's text ({@link writeDescriptor}). */
  readonly descriptor: string;
  /** `<disk>-flat.vmdk`: the flat extent, a {@link FlatExtent} over the disk's source. */
  readonly flatName: string;
}

/** The text files of a recovered VM's folder, derived from its restore point alone. */
export interface PointFiles {
  /** `<vm>.vmx` and its text. */
  readonly vmxName: string;
  /** The `.vmx` text ({@link synthesizeVmx}). */
  readonly vmx: string;
  /** One entry per disk of the point, in the point's order (the first boots). */
  readonly disks: readonly PointDiskFiles[];
}

/**
 * The `.vmx` and the disk descriptors of a restore point, as a datastore presents them: one
 * `<disk>.vmdk` (pointing at `<disk>-flat.vmdk`) per disk in the point's order, the first being
 * the boot disk, and `<vm>.vmx` naming them. Deterministic: the same point and options give the
 * same bytes every time.
 */
export function synthesizePointFiles(
  point: RestorePointInfo,
  options: PointFilesOptions,
): PointFiles {
  const disks = point.disks.map((d): PointDiskFiles => {
    const names = diskFileNames(d.name);
    const descriptor = writeDescriptor({
      target: options.target,
      size: d.size,
      flatFileName: names.flat,
      controller: point.vmConfig.controller,
      identity: { repository: options.repository, vm: point.vm, point: point.id, disk: d.name },
      ...(options.hardwareVersion === undefined
        ? {}
        : { hardwareVersion: options.hardwareVersion }),
    });
    return {
      disk: d.name,
      size: d.size,
      descriptorName: names.descriptor,
      descriptor,
      flatName: names.flat,
    };
  });
  const vmx = synthesizeVmx({
    config: point.vmConfig,
    disks: disks.map((d) => d.descriptorName),
    ...(options.hardwareVersion === undefined ? {} : { hardwareVersion: options.hardwareVersion }),
    ...(options.nicsConnected === undefined ? {} : { nicsConnected: options.nicsConnected }),
    ...(options.keepMacAddresses === undefined
      ? {}
      : { keepMacAddresses: options.keepMacAddresses }),
    ...(options.swapDirectory === undefined ? {} : { swapDirectory: options.swapDirectory }),
  });
  return { vmxName: `${point.vm}.vmx`, vmx, disks };
}
