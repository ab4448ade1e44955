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
  /** Required free bytes; default {@link defaultRecoveryMinFree}. */
  minFreeBytes?: number;
  /** Default `fs.statfs`. */
  statfs?: StatFs;
}

/**
 * Checks, before a recovery starts, that the cache volume has the free space one recovered VM
 * needs. Resolves to the volume's space; rejects with `IVMR_NOSPC` naming both numbers (free and
 * required) when it has less.
 */
export async function requireRecoverySpace(options: RecoverySpaceOptions) {
  const statfs = options.statfs ?? nodeStatFs;
  const required = options.minFreeBytes ?? defaultRecoveryMinFree(options.vmSize);
  const space = await statfs(options.dir);
  if (space.freeBytes < required) {
    const why =
      options.minFreeBytes === undefined
        ? ` (max(20 GiB, 15% of the VM's ${formatBytes(options.vmSize)}))`
        : '';
    throw noSpaceError(
      `cache volume of ${options.dir} has ${formatBytes(space.freeBytes)} free (${space.freeBytes} bytes); recovering this VM needs at least ${formatBytes(required)} (${required} bytes)${why}`,
      {
        path: options.dir,
        freeBytes: space.freeBytes,
        requiredBytes: required,
        vmSize: options.vmSize,
      },
    );
  }
  return space;
}
