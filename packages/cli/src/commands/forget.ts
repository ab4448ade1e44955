import type { Command } from 'commander';
import { formatBytes } from '../format.js';
import { type CliIo, writeJson, writeLine } from '../io.js';
import { wholeNumber } from '../parse.js';
import { LOCK_WAIT_HELP, REPO_HELP, S3_ENDPOINT_HELP, withRepository } from '../repository.js';

/** Flags of `ivmr forget`. */
export interface ForgetFlags {
  readonly repo: string;
  readonly s3Endpoint?: string;
  readonly lockWait?: number;
  readonly vm: string;
  readonly keepLast: number;
  /** False with `--no-prune`. */
  readonly prune: boolean;
  readonly json?: boolean;
}

/** Declares `ivmr forget`. */
export function defineForget(program: Command): Command {
  return program
    .command('forget')
    .summary("remove a VM's old restore points")
    .description(
      'Remove all but the newest N restore points of a VM. Kept points that depended on removed ' +
        'ones are rewritten first, so every kept point stays restorable. Then prune deletes the ' +
        'blocks nothing needs any more (unless --no-prune). Blocks that running sessions and ' +
        'restores read (their leases) stay until a later prune, and while backups run the prune ' +
        'waits for them up to --lock-wait, else it is skipped and said so.',
    )
    .requiredOption('--repo <dir>', REPO_HELP)
    .option('--s3-endpoint <url>', S3_ENDPOINT_HELP)
    .option('--lock-wait <seconds>', LOCK_WAIT_HELP, wholeNumber(0))
    .requiredOption('--vm <name>', 'VM name')
    .requiredOption('--keep-last <n>', 'restore points to keep (>= 1)', wholeNumber(1))
    .option('--no-prune', 'keep the blocks of removed points (a later forget prunes them)')
    .option('--json', 'print the forget report as JSON');
}

/** Runs `ivmr forget`; returns the exit code. */
export async function runForget(flags: ForgetFlags, io: CliIo): Promise<number> {
  const report = await withRepository(flags, {}, (repo) =>
    repo.forget({ vm: flags.vm, keepLast: flags.keepLast, prune: flags.prune }),
  );
  if (flags.json) {
    writeJson(io.stdout, { vm: flags.vm, keepLast: flags.keepLast, ...report });
    return 0;
  }
  const lines = [
    `removed ${report.removed.length} restore point(s) of ${flags.vm}${report.removed.length ? `: ${report.removed.join(', ')}` : ''}`,
  ];
  if (report.rebased.length)
    lines.push(`rewritten against a kept base: ${report.rebased.join(', ')}`);
  const p = report.prune;
  if (p) {
    lines.push(
      `pruned: ${p.packsDeleted} pack(s) deleted, ${p.packsRewritten} rewritten, ${p.blobsRemoved} blob(s) removed, ${formatBytes(p.bytesFreed)} freed`,
    );
  }
  if (report.pruneSkipped)
    lines.push(`prune skipped: ${report.pruneSkipped}; run forget again later`);
  writeLine(io.stdout, lines.join('\n'));
  return 0;
}
