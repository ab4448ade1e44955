import { ErrorCode, isIvmrError } from '@ivmr/core';
import {
  callControl,
  type MigrationProgress,
  type MigrationState,
  RecoveryService,
  RecoverySession,
  type SessionInfo,
} from '@ivmr/recovery';
import { type Command, Option } from 'commander';
import { formatBytes, formatTable } from '../format.js';
import { type CliIo, writeJson, writeLine } from '../io.js';
import { parseByteSize } from '../parse.js';
import { startProgress } from '../progress.js';

/** True for the error `callControl` gives when no server runs for the cache folder. */
function isNoServer(err: unknown): boolean {
  return isIvmrError(err, ErrorCode.NOT_FOUND) && err.details.reason === 'NO_SERVER';
}

/** Flags of `ivmr sessions`. */
export interface SessionsFlags {
  readonly cache: string;
  readonly json?: boolean;
}

/** Declares `ivmr sessions`. */
export function defineSessions(program: Command): Command {
  return program
    .command('sessions')
    .summary('list the recovery sessions of a cache folder')
    .description(
      'List the sessions of a cache folder: VM, point, mode, status (served, kept, migrated), ' +
        'bytes not yet flushed, cache use, clients and migration. Asks the running ivmr serve ' +
        'when there is one; otherwise reads the folder (no live figures).',
    )
    .requiredOption('--cache <dir>', 'cache folder of ivmr serve')
    .option('--json', 'print { server, sessions } as JSON');
}

/** Runs `ivmr sessions`. */
export async function runSessions(flags: SessionsFlags, io: CliIo): Promise<number> {
  let sessions: SessionInfo[];
  let server: { pid: number } | null = null;
  try {
    server = (await callControl(flags.cache, 'ping')) as { pid: number };
    sessions = (await callControl(flags.cache, 'sessions')) as SessionInfo[];
  } catch (err) {
    if (!isNoServer(err)) throw err;
    sessions = [];
    for (const state of await RecoverySession.list(flags.cache)) {
      sessions.push(await RecoveryService.describe(flags.cache, state));
    }
  }
  if (flags.json) {
    writeJson(io.stdout, { server, sessions });
    return 0;
  }
  writeLine(
    io.stdout,
    server
      ? `ivmr serve is running (pid ${server.pid})`
      : 'no ivmr serve is running for this cache folder',
  );
  if (sessions.length === 0) {
    writeLine(io.stdout, 'no sessions');
    return 0;
  }
  const rows = [
    ['NAME', 'VM', 'POINT', 'MODE', 'STATUS', 'DIRTY', 'CACHE', 'CLIENTS', 'PREFETCH', 'MIGRATION'],
  ];
  for (const s of sessions) {
    rows.push([
      s.name,
      s.vm,
      s.point,
      s.mode,
      s.status,
      s.dirtyBytes === null || Number.isNaN(s.dirtyBytes) ? '-' : formatBytes(s.dirtyBytes),
      formatBytes(s.cacheBytes),
      s.clients.length === 0 ? '-' : s.clients.map((c) => c.address).join(','),
      s.prefetch
        ? `${s.prefetch.state} ${formatBytes(s.prefetch.bytesLoaded)}/${formatBytes(s.prefetch.profileBytes)}`
        : '-',
      describeMigration(s.migration),
    ]);
  }
  writeLine(io.stdout, formatTable(rows));
  return 0;
}

function describeMigration(m: MigrationProgress | MigrationState | undefined): string {
  if (!m) return '-';
  if ('phase' in m) {
    const pct = m.totalBytes > 0 ? Math.floor((100 * m.copiedBytes) / m.totalBytes) : 100;
    return `${m.phase} ${pct}% -> ${m.to}`;
  }
  return `${m.switched ? 'done' : 'stopped'} -> ${m.to}`;
}

/** Flags of `ivmr stop`. */
export interface StopFlags {
  readonly cache: string;
  readonly vm: string;
  readonly discard?: boolean;
}

/** Declares `ivmr stop`. */
export function defineStop(program: Command): Command {
  return program
    .command('stop')
    .summary('end a recovery session')
    .description(
      'End a session: its VM folder leaves the datastore. With --discard its writes are dropped ' +
        '(cancel of an instant recovery); without, its overlay is kept and the next ' +
        '`ivmr serve --vm NAME` resumes it. A sandbox session always drops its writes.',
    )
    .requiredOption('--cache <dir>', 'cache folder of ivmr serve')
    .requiredOption('--vm <name>', 'session (folder) name')
    .option('--discard', 'drop the writes and the session folder');
}

/** Runs `ivmr stop`. */
export async function runStop(flags: StopFlags, io: CliIo): Promise<number> {
  let discarded: boolean;
  try {
    const reply = (await callControl(flags.cache, 'stop', {
      name: flags.vm,
      discard: flags.discard === true,
    })) as { discarded: boolean };
    discarded = reply.discarded;
  } catch (err) {
    if (!isNoServer(err)) throw err;
    discarded = await RecoverySession.stopClosed(flags.cache, flags.vm, {
      discard: flags.discard === true,
    });
  }
  writeLine(
    io.stdout,
    discarded
      ? `stopped ${flags.vm}: its writes were discarded`
      : `stopped ${flags.vm}: its writes are kept; ivmr serve --vm ${flags.vm} resumes it`,
  );
  return 0;
}

/** Flags of `ivmr migrate`. */
export interface MigrateFlags {
  readonly cache: string;
  readonly vm: string;
  readonly to?: string;
  readonly format?: 'flat-vmdk' | 'raw';
  readonly rate?: number;
  readonly switch?: boolean;
  readonly json?: boolean;
}

/** Declares `ivmr migrate`. */
export function defineMigrate(program: Command): Command {
  return program
    .command('migrate')
    .summary('copy a running recovered VM to production storage')
    .description(
      'Copy every disk of a served session (backup plus all writes so far) into --to while the ' +
        'VM keeps running; returns once the first pass is done, and the server keeps copying ' +
        'changes. --switch completes it: the last writes are copied, the session becomes ' +
        "read-only and the target is the VM's disk (flat-vmdk: <to> also gets the .vmx and " +
        'descriptors). Needs a running ivmr serve on the cache folder.',
    )
    .requiredOption('--cache <dir>', 'cache folder of ivmr serve')
    .requiredOption('--vm <name>', 'session (folder) name')
    .option('--to <dir>', 'target folder (needed unless the migration runs already)')
    .addOption(
      new Option('--format <format>', 'target files')
        .choices(['flat-vmdk', 'raw'])
        .default('flat-vmdk'),
    )
    .option(
      '--rate <size>',
      'bytes per second per disk (e.g. 200M); default no limit',
      parseByteSize,
    )
    .option('--switch', 'complete the migration (waits for the copy first)')
    .option('--json', 'print the final progress as JSON');
}

/** Runs `ivmr migrate`. */
export async function runMigrate(flags: MigrateFlags, io: CliIo): Promise<number> {
  let bar: ReturnType<typeof startProgress> | undefined;
  let result: MigrationProgress;
  try {
    result = (await callControl(
      flags.cache,
      flags.switch ? 'switch' : 'migrate',
      {
        name: flags.vm,
        ...(flags.to ? { to: flags.to } : {}),
        ...(flags.format ? { format: flags.format } : {}),
        ...(flags.rate ? { rateBytesPerSec: flags.rate } : {}),
      },
      (p) => {
        bar ??= startProgress(io, `migrate ${flags.vm}`, p.totalBytes);
        bar.update(p.copiedBytes, p.phase);
      },
    )) as MigrationProgress;
  } catch (err) {
    if (isNoServer(err)) {
      throw Object.assign(err as Error, {
        message: `${(err as Error).message}: ivmr migrate needs the running ivmr serve of the VM`,
      });
    }
    throw err;
  } finally {
    bar?.stop();
  }
  if (flags.json) {
    writeJson(io.stdout, result);
    return 0;
  }
  writeLine(
    io.stdout,
    result.phase === 'done'
      ? `${flags.vm} migrated to ${result.to}: the session is read-only; the target is the VM's disk`
      : `${flags.vm}: ${formatBytes(result.totalBytes)} copied to ${result.to}; the server keeps copying changes until ivmr migrate --cache ${flags.cache} --vm ${flags.vm} --switch`,
  );
  return 0;
}
