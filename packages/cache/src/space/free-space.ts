import { ErrorCode, IvmrError } from '@ivmr/core';
import { noSpaceError } from '../errors.js';
import type { StatFs } from '../fs/cache-file-system.js';
import { nodeStatFs } from '../fs/node-file-system.js';
import { formatBytes } from '../util/binary.js';

const GiB = 1024 ** 3;

/** Default share of the volume a read cache leaves free (Commvault's 3DFS cache keeps 5%). */
export const DEFAULT_FLOOR_FRACTION = 0.05;

/**
 * The free space a recovery of a VM with `vmSize` bytes of disks needs by default:
 * max(20 GiB, 15% of the VM's size), as Commvault requires per live recovery.
 */
export function defaultRecoveryMinFree(vmSize: number): number {
  return Math.max(20 * GiB, Math.ceil(0.15 * vmSize));
}

/** Options of {@link requireRecoverySpace}. */
export interface RecoverySpaceOptions {
  /** A folder on the cache volume. */
  dir: string;
  /** Total size of the VM's disks in bytes. */
  vmSize: number;
  /** Free bytes the recovered VM needs; default {@link defaultRecoveryMinFree}. */
  minFreeBytes?: number;
  /**
   * Share of the volume that must stay free on top of the VM's need (the read cache's floor);
   * default 0: only the VM's need is checked.
   */
  floorFraction?: number;
  /** Default `fs.statfs`. */
  statfs?: StatFs;
}

/**
 * Checks, before a recovery starts, that the cache volume has the free space one recovered VM
 * needs, plus the floor when `floorFraction` is given. Resolves to the volume's space; rejects
 * with `IVMR_NOSPC` naming both numbers (free and required) when it has less.
 */
export async function requireRecoverySpace(options: RecoverySpaceOptions) {
  const statfs = options.statfs ?? nodeStatFs;
  const need = options.minFreeBytes ?? defaultRecoveryMinFree(options.vmSize);
  const fraction = options.floorFraction ?? 0;
  if (!(fraction >= 0 && fraction < 1)) {
    throw new IvmrError(
      ErrorCode.INVALID_ARGUMENT,
      `floorFraction must be in [0, 1), got ${fraction}`,
    );
  }
  const space = await statfs(options.dir);
  const floor = Math.ceil(space.totalBytes * fraction);
  const required = need + floor;
  if (space.freeBytes < required) {
    const parts = [
      options.minFreeBytes === undefined
        ? `max(20 GiB, 15% of the VM's ${formatBytes(options.vmSize)})`
        : `the VM's minimum of ${formatBytes(need)}`,
      floor > 0 ? `a floor of ${formatBytes(floor)} (${fraction * 100}% of the volume)` : '',
    ].filter(Boolean);
    const why = parts.length > 0 ? ` (${parts.join(' + ')})` : '';
    throw noSpaceError(
      `cache volume of ${options.dir} has ${formatBytes(space.freeBytes)} free (${space.freeBytes} bytes); recovering this VM needs at least ${formatBytes(required)} (${required} bytes)${why}`,
      {
        path: options.dir,
        freeBytes: space.freeBytes,
        requiredBytes: required,
        floorBytes: floor,
        vmSize: options.vmSize,
      },
    );
  }
  return space;
}
