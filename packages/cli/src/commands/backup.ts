import {
  type BackupDisk,
  type BlockSource,
  type CodecName,
  FileBlockSource,
  type Firmware,
  type VmConfig,
} from '@ivmr/core';
import { openVmdk } from '@ivmr/vmdk';
import { type Command, Option } from 'commander';
import { checkRangesWithin, readChangedBlocks } from '../changed-blocks.js';
import { formatBytes } from '../format.js';
import { type CliIo, usageError, writeJson, writeLine } from '../io.js';
import { collect, parseBlockSize, wholeNumber } from '../parse.js';
import { startProgress } from '../progress.js';
import { LOCK_WAIT_HELP, REPO_HELP, S3_ENDPOINT_HELP, withRepository } from '../repository.js';

/** Flags of `ivmr backup`, as commander parses them. */
export interface BackupFlags {
  readonly repo: string;
  readonly s3Endpoint?: string;
  readonly lockWait?: number;
  readonly vm: string;
  readonly blockSize?: number;
  readonly codec?: CodecName;
  readonly reverse?: boolean;
  readonly changedBlocks?: string[];
  readonly diskName?: string[];
  readonly memory?: number;
  readonly cpus?: number;
  readonly guestOs?: string;
  readonly firmware?: Firmware;
  readonly controller?: string;
  readonly json?: boolean;
}

/** Declares `ivmr backup`. */
export function defineBackup(program: Command): Command {
  return program
    .command('backup')
    .summary('back up disk images into a new restore point')
    .description(
      "Back up raw disk images into a new restore point of a VM. The VM's first backup is full;\n" +
        'later ones store only the blocks that changed. Prints the new point id.',
    )
    .argument('<image...>', 'raw disk images of the VM, one per disk, in order')
    .requiredOption('--repo <dir>', REPO_HELP)
    .option('--s3-endpoint <url>', S3_ENDPOINT_HELP)
    .option('--lock-wait <seconds>', LOCK_WAIT_HELP, wholeNumber(0))
    .requiredOption('--vm <name>', 'VM name')
    .option(
      '--block-size <size>',
      'block size of a new repository or chain, a power of two 64K..4M (default 1M)',
      parseBlockSize,
    )
    .addOption(
      new Option(
        '--codec <codec>',
        'compression of new blocks (default: the repository default, lz4)',
      ).choices(['lz4', 'zstd', 'none']),
    )
    .option('--reverse', 'keep a reverse-incremental chain: the newest point is the full one')
    .option(
      '--changed-blocks <file>',
      'changed byte ranges since the last backup (CBT), or the allocated areas for a first\n' +
        'backup; one file per image in order',
      collect,
    )
    .option(
      '--disk-name <name>',
      'disk name, one per image in order (default: image base name)',
      collect,
    )
    .option('--memory <mb>', 'VM memory in MiB', wholeNumber(4))
    .option('--cpus <n>', 'virtual CPUs', wholeNumber(1))
    .option('--guest-os <id>', 'guest OS identifier, e.g. debian12-64')
    .addOption(new Option('--firmware <type>', 'VM firmware').choices(['bios', 'efi']))
    .option('--controller <type>', 'disk controller, e.g. pvscsi, lsilogic, sata, nvme')
    .option('--json', 'print the new restore point as JSON');
}

/** Runs `ivmr backup`; returns the exit code. */
export async function runBackup(images: string[], flags: BackupFlags, io: CliIo): Promise<number> {
  for (const [flag, list] of [
    ['--changed-blocks', flags.changedBlocks],
    ['--disk-name', flags.diskName],
  ] as const) {
    if (list && list.length !== images.length) {
      throw usageError(
        `${flag} given ${list.length} time(s) for ${images.length} image(s): give one per image`,
      );
    }
  }
  const sources: BlockSource[] = [];
  try {
    for (const path of images) sources.push(await openImage(path));
    const changed = flags.changedBlocks
      ? await Promise.all(flags.changedBlocks.map((file) => readChangedBlocks(file)))
      : undefined;
    changed?.forEach((ranges, i) => {
      checkRangesWithin(ranges, sources[i]!.size, `image ${images[i]}`);
    });
    const disks: BackupDisk[] = sources.map((source, i) => ({
      source,
      path: images[i],
      name: flags.diskName?.[i],
      changedRanges: changed?.[i],
    }));

    const point = await withRepository(
      flags,
      { create: true, codec: flags.codec, blockSize: flags.blockSize },
      async (repo) => {
        // Progress is over all disks: bytes of the disks before this one plus this one's.
        const before = sources.map((_, i) => sources.slice(0, i).reduce((a, s) => a + s.size, 0));
        const total = sources.reduce((a, s) => a + s.size, 0);
        const progress = startProgress(io, 'backup', total);
        try {
          return await repo.backup({
            vm: flags.vm,
            disks,
            reverse: flags.reverse === true,
            codec: flags.codec,
            blockSize: flags.blockSize,
            vmConfig: vmConfigFlags(flags),
            onProgress: (p) => progress.update(before[p.diskIndex]! + p.done, p.disk),
          });
        } finally {
          progress.stop();
        }
      },
    );

    if (flags.json) {
      writeJson(io.stdout, point);
    } else {
      writeLine(io.stdout, point.id);
      if (io.stderr.isTTY) {
        const read = point.disks.reduce((a, d) => a + d.stats.readBytes, 0);
        const stored = point.disks.reduce((a, d) => a + d.stats.storedBytes, 0);
        writeLine(
          io.stderr,
          `${point.kind} backup of ${point.vm}: read ${formatBytes(read)}, stored ${formatBytes(stored)} new`,
        );
      }
    }
    return 0;
  } finally {
    for (const s of sources) await s.close?.();
  }
}

/** The VM configuration fields given on the command line (unset ones come from the last point). */
function vmConfigFlags(flags: BackupFlags): Partial<VmConfig> {
  const given: Partial<Record<keyof VmConfig, unknown>> = {
    memoryMB: flags.memory,
    cpus: flags.cpus,
    guestOs: flags.guestOs,
    firmware: flags.firmware,
    controller: flags.controller,
  };
  return Object.fromEntries(Object.entries(given).filter(([, v]) => v !== undefined));
}

/**
 * Opens a disk image: a VMDK (text descriptor with flat extents, monolithicSparse or
 * streamOptimized, as in OVA exports) when the name ends in `.vmdk`, else a raw image.
 */
async function openImage(path: string): Promise<BlockSource> {
  return path.toLowerCase().endsWith('.vmdk') ? openVmdk(path) : FileBlockSource.open(path);
}
