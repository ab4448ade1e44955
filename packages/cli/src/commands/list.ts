import type { PointKind, RestorePointInfo } from '@ivmr/core';
import type { Command } from 'commander';
import { formatBytes, formatRatio, formatTable } from '../format.js';
import { type CliIo, writeJson, writeLine } from '../io.js';
import { REPO_HELP, S3_ENDPOINT_HELP, withRepository } from '../repository.js';

/** Flags of `ivmr list`. */
export interface ListFlags {
  readonly repo: string;
  readonly s3Endpoint?: string;
  readonly vm?: string;
  readonly json?: boolean;
}

/** One disk of a listed restore point. */
export interface ListedDisk {
  readonly name: string;
  readonly size: number;
  readonly blockSize: number;
  /** Bytes of the disk in blocks that are not all zeros at this point. */
  readonly allocatedBytes: number;
  /** Bytes this disk's backup added to the repository (compressed, after deduplication). */
  readonly storedBytes: number;
}

/** One restore point as `ivmr list --json` prints it. */
export interface ListedPoint {
  readonly vm: string;
  readonly id: string;
  readonly time: string;
  readonly sequence: number;
  readonly kind: PointKind;
  /** The point this one's delta maps apply to (its parent in the chain); null for a full point. */
  readonly base: string | null;
  readonly disks: readonly ListedDisk[];
  /** Sum of the disk sizes. */
  readonly logicalBytes: number;
  /** Sum of the disks' non-zero bytes. */
  readonly allocatedBytes: number;
  /** Sum of the disks' `storedBytes`: what this backup added to the repository. */
  readonly storedBytes: number;
  /**
   * `allocatedBytes / storedBytes`: how many bytes of the point's non-zero data each stored byte
   * stands for, counting compression, deduplication and the blocks shared with earlier points.
   * Null when nothing was stored.
   */
  readonly dedupRatio: number | null;
}

/** Declares `ivmr list`. */
export function defineList(program: Command): Command {
  return program
    .command('list')
    .summary('list VMs and their restore points')
    .description(
      'List restore points, oldest first per VM, with their size, non-zero bytes, the bytes their ' +
        'backup stored, and the dedup ratio (non-zero bytes / stored bytes).',
    )
    .requiredOption('--repo <dir>', REPO_HELP)
    .option('--s3-endpoint <url>', S3_ENDPOINT_HELP)
    .option('--vm <name>', 'only this VM')
    .option('--json', 'print an array of restore point objects');
}

/** Runs `ivmr list`; returns the exit code. */
export async function runList(flags: ListFlags, io: CliIo): Promise<number> {
  const listed = await withRepository(flags, {}, async (repo) => {
    // An unknown VM is an error, not an empty list: it is most likely a typo.
    if (flags.vm !== undefined) await repo.findPoint(flags.vm);
    return (await repo.listPoints(flags.vm)).map(describe);
  });
  if (flags.json) {
    writeJson(io.stdout, listed);
    return 0;
  }
  if (listed.length === 0) {
    writeLine(io.stdout, 'no restore points');
    return 0;
  }
  const rows = [
    ['VM', 'POINT', 'TIME', 'KIND', 'BASE', 'SIZE', 'NON-ZERO', 'STORED', 'DEDUP', 'DISKS'],
  ];
  for (const p of listed) {
    rows.push([
      p.vm,
      p.id,
      p.time.replace(/\.\d+Z$/, 'Z'),
      p.kind,
      p.base ?? '-',
      formatBytes(p.logicalBytes),
      formatBytes(p.allocatedBytes),
      formatBytes(p.storedBytes),
      formatRatio(p.dedupRatio),
      p.disks.map((d) => `${d.name} (${formatBytes(d.size)})`).join(', '),
    ]);
  }
  writeLine(io.stdout, formatTable(rows));
  return 0;
}

/** Adds up the sizes of a point from its metadata (no block map is read, no lock taken). */
function describe(p: RestorePointInfo): ListedPoint {
  const disks = p.disks.map((d) => ({
    name: d.name,
    size: d.size,
    blockSize: d.blockSize,
    allocatedBytes: d.allocatedBytes,
    storedBytes: d.stats.storedBytes,
  }));
  const storedBytes = disks.reduce((a, d) => a + d.storedBytes, 0);
  const allocatedBytes = disks.reduce((a, d) => a + d.allocatedBytes, 0);
  return {
    vm: p.vm,
    id: p.id,
    time: p.time,
    sequence: p.sequence,
    kind: p.kind,
    base: p.base,
    disks,
    logicalBytes: disks.reduce((a, d) => a + d.size, 0),
    allocatedBytes,
    storedBytes,
    dedupRatio: storedBytes === 0 ? null : allocatedBytes / storedBytes,
  };
}
