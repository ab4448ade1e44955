import { Command, CommanderError } from 'commander';
import packageJson from '../package.json' with { type: 'json' };
import { type BackupFlags, defineBackup, runBackup } from './commands/backup.js';
import { defineForget, type ForgetFlags, runForget } from './commands/forget.js';
import { defineList, type ListFlags, runList } from './commands/list.js';
import { defineRepair, type RepairFlags, runRepair } from './commands/repair.js';
import { defineRestore, type RestoreFlags, runRestore } from './commands/restore.js';
import { defineServe, runServe, type ServeFlags } from './commands/serve.js';
import {
  defineMigrate,
  defineSessions,
  defineStop,
  type MigrateFlags,
  runMigrate,
  runSessions,
  runStop,
  type SessionsFlags,
  type StopFlags,
} from './commands/sessions.js';
import { defineVerify, runVerify, type VerifyFlags } from './commands/verify.js';
import { type CliIo, ExitCode, processIo, reportError } from './io.js';

/**
 * Runs the `ivmr` command line and resolves to its exit code (see {@link ExitCode}); it never
 * calls `process.exit`, so it can be embedded and tested in-process.
 *
 * @param argv - arguments in `process.argv` form: the first two (node and script) are skipped.
 * @param io - where output goes; the process's stdout, stderr and environment by default.
 */
export async function main(argv: readonly string[], io: CliIo = processIo()): Promise<number> {
  let exitCode: number = ExitCode.OK;
  const program = createProgram(io, (code) => {
    exitCode = code;
  });
  try {
    await program.parseAsync([...argv]);
    return exitCode;
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version') return 0;
      // `ivmr help` succeeds; `ivmr` alone is a usage error (commander printed the help to stderr).
      if (err.code === 'commander.help') return err.exitCode === 0 ? ExitCode.OK : ExitCode.USAGE;
    }
    return reportError(err, io);
  }
}

/** The commander program; every action reports its exit code through `exit`. */
function createProgram(io: CliIo, exit: (code: number) => void): Command {
  const program = new Command('ivmr')
    .description(
      'Back up, list, restore, verify and forget VM restore points in a deduplicated repository, ' +
        'and serve them over NFS for instant recovery.',
    )
    .version(packageJson.version)
    // Settings made before .command() are inherited by the subcommands.
    .exitOverride()
    .configureOutput({
      writeOut: (s) => io.stdout.write(s),
      writeErr: (s) => io.stderr.write(s),
      // Errors are printed by reportError, as one line.
      outputError: () => {},
    })
    .showSuggestionAfterError(true);

  defineBackup(program).action(async (images: string[], flags: BackupFlags) => {
    exit(await runBackup(images, flags, io));
  });
  defineList(program).action(async (flags: ListFlags) => exit(await runList(flags, io)));
  defineRestore(program).action(async (flags: RestoreFlags) => exit(await runRestore(flags, io)));
  defineVerify(program).action(async (flags: VerifyFlags) => exit(await runVerify(flags, io)));
  defineForget(program).action(async (flags: ForgetFlags) => exit(await runForget(flags, io)));
  defineRepair(program).action(async (flags: RepairFlags) => exit(await runRepair(flags, io)));
  defineServe(program).action(async (flags: ServeFlags) => exit(await runServe(flags, io)));
  defineSessions(program).action(async (flags: SessionsFlags) =>
    exit(await runSessions(flags, io)),
  );
  defineStop(program).action(async (flags: StopFlags) => exit(await runStop(flags, io)));
  defineMigrate(program).action(async (flags: MigrateFlags) => exit(await runMigrate(flags, io)));
  return program;
}
