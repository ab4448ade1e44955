import type { VerifyReport } from '@ivmr/core';
import { type BootReport, checkBoot } from '@ivmr/recovery';
import { type Command, Option } from 'commander';
import { addBootProfilesOptions, bootProfilesOf } from '../boot-profiles.js';
import { formatBytes, formatRange } from '../format.js';
import { type CliIo, ExitCode, usageError, writeJson, writeLine } from '../io.js';
import { parseByteSize, wholeNumber } from '../parse.js';
import { startProgress } from '../progress.js';
import { openRepository, REPO_HELP, S3_ENDPOINT_HELP, withRepository } from '../repository.js';

/** Flags of `ivmr verify`. */
export interface VerifyFlags {
  readonly repo: string;
  readonly s3Endpoint?: string;
  readonly vm?: string;
  readonly point?: string;
  readonly json?: boolean;
  readonly boot?: boolean;
  readonly timeout: number;
  readonly accel: 'auto' | 'kvm' | 'tcg';
  readonly bus: 'virtio' | 'ide';
  readonly qemu: string;
  readonly minFree?: number;
  /** A folder, or false after `--no-boot-profiles`. */
  readonly bootProfiles?: string | boolean;
  readonly prefetch: 'wait' | 'background' | 'off';
}

/** Declares `ivmr verify`. */
export function defineVerify(program: Command): Command {
  const command = program
    .command('verify')
    .summary('re-read and check every stored block, or boot a point (--boot)')
    .description(
      'Re-read every blob (of the selected restore points) and check its checksums and hash. ' +
        'Reports damaged or missing blobs and which points and disk byte ranges they affect. ' +
        'Exit code 3 when anything is damaged or missing.',
    )
    .requiredOption('--repo <dir>', REPO_HELP)
    .option('--s3-endpoint <url>', S3_ENDPOINT_HELP)
    .option('--vm <name>', 'only the points of this VM')
    .option('--point <id>', 'only this restore point (needs --vm; or --vm NAME@POINT)')
    .option(
      '--boot',
      'instead: boot the point (newest unless --point) from a sandbox NFS datastore with qemu and wait for its heartbeat',
    )
    .option(
      '--timeout <seconds>',
      'with --boot: how long to wait for the heartbeat',
      wholeNumber(1),
      120,
    )
    .addOption(
      new Option('--accel <accel>', 'with --boot: qemu accelerator')
        .choices(['auto', 'kvm', 'tcg'])
        .default('auto'),
    )
    .addOption(
      new Option('--bus <bus>', 'with --boot: how the disk is attached')
        .choices(['virtio', 'ide'])
        .default('virtio'),
    )
    .option('--qemu <path>', 'with --boot: the qemu binary', 'qemu-system-x86_64')
    .option(
      '--min-free <size>',
      'with --boot: free space the sandbox needs (default max(20G, 15% of the disks))',
      parseByteSize,
    )
    .addOption(
      new Option(
        '--prefetch <mode>',
        "with --boot: load the VM's boot profile into the read cache before power-on (wait), while booting (background), or boot cold (off)",
      )
        .choices(['wait', 'background', 'off'])
        .default('wait'),
    );
  return addBootProfilesOptions(
    command,
    'with --boot: folder of boot profiles; a boot that reaches the heartbeat saves its profile there',
  ).option('--json', 'print the verify report as JSON');
}

/** Runs `ivmr verify`; returns 0 when all is well, 3 when something is damaged or missing. */
export async function runVerify(flags: VerifyFlags, io: CliIo): Promise<number> {
  if (flags.boot) return runBootCheck(flags, io);
  if (flags.point !== undefined && flags.vm === undefined) {
    throw usageError('--point needs --vm');
  }
  const report = await withRepository(flags, {}, async (repo) => {
    let progress: ReturnType<typeof startProgress> | undefined;
    try {
      return await repo.verify({
        vm: flags.vm,
        point: flags.point,
        onProgress: (checked, total) => {
          progress ??= startProgress(io, 'verify', total);
          progress.update(checked, '');
        },
      });
    } finally {
      progress?.stop();
    }
  });
  if (flags.json) writeJson(io.stdout, report);
  else writeLine(io.stdout, describe(report));
  if (report.ok) return ExitCode.OK;
  const broken = new Set(report.affected.map((a) => `${a.vm}@${a.point}`));
  writeLine(
    io.stderr,
    `ivmr: verify found ${report.damagedBlobs.length} damaged blob(s), ${report.missingBlobs.length} missing blob(s) and ${report.damagedObjects.length} damaged object(s), affecting ${broken.size} restore point(s)`,
  );
  return ExitCode.DAMAGED;
}

/** A lost index makes every blob missing: name the first few, count the rest. */
const MAX_LISTED = 20;

function capped(lines: string[], what: string): string[] {
  if (lines.length <= MAX_LISTED) return lines;
  return [
    ...lines.slice(0, MAX_LISTED),
    `... and ${lines.length - MAX_LISTED} more ${what} (--json lists all)`,
  ];
}

/** The report as readable lines: what was checked, then each problem and what it reaches. */
function describe(r: VerifyReport): string {
  const lines = [
    `checked ${r.pointsChecked} restore point(s), ${r.packsChecked} pack(s), ${r.blobsChecked} blob(s), ${formatBytes(r.bytesChecked)}: ${r.ok ? 'no damage' : 'DAMAGED'}`,
  ];
  lines.push(
    ...capped(
      r.damagedBlobs.map((b) => `damaged blob ${b.id} in pack ${b.pack}: ${b.message} [${b.code}]`),
      'damaged blobs',
    ),
    ...capped(
      r.missingBlobs.map((id) => `missing blob ${id}: no index lists it`),
      'missing blobs',
    ),
  );
  for (const o of r.damagedObjects) {
    lines.push(`damaged ${o.kind} ${o.name}: ${o.message} [${o.code}]`);
  }
  for (const a of r.affected) {
    lines.push(
      `affected: ${a.vm}@${a.point} disk ${a.disk} bytes ${a.ranges.map(formatRange).join(', ')} (${a.blobs.length} blob(s))`,
    );
  }
  if (r.missingBlobs.length > 0 || r.damagedObjects.some((o) => o.kind === 'index')) {
    lines.push("hint: 'ivmr repair' rebuilds a lost or damaged index from the packs");
  }
  return lines.join('\n');
}

/** `ivmr verify --boot`: 0 when the point booted, 3 when it did not. */
async function runBootCheck(flags: VerifyFlags, io: CliIo): Promise<number> {
  if (flags.vm === undefined) throw usageError('--boot needs --vm');
  const [vm, at] = flags.vm.split('@') as [string, string | undefined];
  const point = flags.point ?? at;
  const profiles = bootProfilesOf(flags.bootProfiles);
  const repository = await openRepository(flags);
  let report: BootReport;
  try {
    report = await checkBoot({
      repository,
      vm,
      ...(point ? { point } : {}),
      timeoutMs: flags.timeout * 1000,
      accel: flags.accel,
      bus: flags.bus,
      qemu: flags.qemu,
      ...(flags.minFree === undefined ? {} : { minFreeBytes: flags.minFree }),
      ...(profiles ? { profiles, prefetch: flags.prefetch } : {}),
    });
  } finally {
    await repository.close();
  }
  if (flags.json) writeJson(io.stdout, report);
  else {
    const p = report.prefetch;
    const d = report.descriptor;
    const figures = [
      ...(d
        ? [
            `disk: ${d.url} (createType ${d.createType}, ${formatBytes(d.virtualSize)} to qemu's VMDK driver) names ${d.extent}, booted over nfs://`,
          ]
        : []),
      `read ${formatBytes(report.bytesFromBackup)} from the backup, ${formatBytes(report.bytesFromCache)} from the cache; ${formatBytes(report.bytesWritten)} written (discarded)`,
      ...(p
        ? [
            `boot prefetch (${p.state}): ${formatBytes(p.bytesLoaded)} of ${formatBytes(p.profileBytes)} in ${(p.ms / 1000).toFixed(1)} s, profile of ${p.profilePoint}${p.failures ? `; ${p.failures} range(s) failed: ${p.firstError}` : ''}`,
          ]
        : []),
      ...(report.profile
        ? [
            `boot profile saved: ${report.profile.reads} range(s), ${formatBytes(report.profile.bytes)}, ${report.profile.path}`,
          ]
        : []),
    ].join('\n');
    writeLine(
      io.stdout,
      report.booted
        ? `${report.vm}@${report.point} booted (${report.accel}): heartbeat after ${(report.timeToHeartbeatMs! / 1000).toFixed(1)} s: ${report.heartbeat}\n${figures}`
        : `${report.vm}@${report.point} did not boot (${report.accel}): ${report.reason}\n${figures}\n--- serial console ---\n${report.serial.trimEnd()}`,
    );
  }
  if (report.booted) return ExitCode.OK;
  writeLine(io.stderr, `ivmr: ${report.vm}@${report.point} did not boot: ${report.reason}`);
  return ExitCode.DAMAGED;
}
