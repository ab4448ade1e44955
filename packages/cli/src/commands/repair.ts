import type { Command } from 'commander';
import { type CliIo, ExitCode, writeJson, writeLine } from '../io.js';
import { wholeNumber } from '../parse.js';
import { LOCK_WAIT_HELP, REPO_HELP, S3_ENDPOINT_HELP, withRepository } from '../repository.js';

/** Flags of `ivmr repair`. */
export interface RepairFlags {
  readonly repo: string;
  readonly s3Endpoint?: string;
  readonly lockWait?: number;
  readonly json?: boolean;
}

/** Declares `ivmr repair`. */
export function defineRepair(program: Command): Command {
  return program
    .command('repair')
    .summary('rebuild the index from the packs')
    .description(
      'Rebuild the blob index from the trailers of all packs (after an index object was lost or ' +
        'damaged) and replace every index object with the new one. Exit code 3 when a pack is ' +
        'unreadable: its blobs are lost.',
    )
    .requiredOption('--repo <dir>', REPO_HELP)
    .option('--s3-endpoint <url>', S3_ENDPOINT_HELP)
    .option('--lock-wait <seconds>', LOCK_WAIT_HELP, wholeNumber(0))
    .option('--json', 'print the repair report as JSON');
}

/** Runs `ivmr repair`; returns 0, or 3 when some packs were unreadable. */
export async function runRepair(flags: RepairFlags, io: CliIo): Promise<number> {
  const report = await withRepository(flags, {}, (repo) => repo.repair());
  if (flags.json) {
    writeJson(io.stdout, report);
  } else {
    writeLine(
      io.stdout,
      `rebuilt the index from ${report.packs} pack(s) holding ${report.blobs} blob(s); replaced ${report.indexesReplaced} index object(s)`,
    );
    for (const p of report.unreadablePacks) {
      writeLine(io.stdout, `unreadable pack ${p}: its blobs are lost`);
    }
  }
  return report.unreadablePacks.length > 0 ? ExitCode.DAMAGED : ExitCode.OK;
}
