import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ErrorCode, IvmrError, openLocalRepository } from '@ivmr/core';
import { NfsServer, type NfsServerAddress, type PortmapMode } from '@ivmr/nfs';
import { RecoveryDatastore, RecoverySession } from '@ivmr/recovery';
import { type Command, InvalidArgumentError, Option } from 'commander';
import { type CliIo, writeLine } from '../io.js';
import { collect, wholeNumber } from '../parse.js';

/** Flags of `ivmr serve`. */
export interface ServeFlags {
  readonly repo: string;
  readonly cache: string;
  /** `NAME` or `NAME@POINT`, repeatable. */
  readonly vm?: string[];
  readonly listen: string;
  readonly nfsPort: number;
  readonly mountPort?: number;
  readonly portmap: PortmapMode | 'auto';
  readonly portmapPort: number;
  readonly export: string;
  readonly sandbox?: boolean;
  readonly allow?: string[];
  readonly json?: boolean;
}

/** Declares `ivmr serve`. */
export function defineServe(program: Command): Command {
  return program
    .command('serve')
    .summary('serve restore points as an NFS datastore (instant recovery)')
    .description(
      'Start a recovery session for every --vm (and resume the sessions already in the cache ' +
        'folder), and serve them over NFSv3 as VM folders a hypervisor can register and boot. ' +
        'Writes go to the cache folder; the repository is never written. Stops on SIGINT/SIGTERM.',
    )
    .requiredOption('--repo <dir>', 'repository directory')
    .requiredOption('--cache <dir>', 'cache folder: sessions, overlays, the file-handle key')
    .option(
      '--vm <name[@point]>',
      'VM to recover (repeatable); newest point unless @point',
      collect,
    )
    .option('--listen <address>', 'address to listen on', '127.0.0.1')
    .option('--nfs-port <n>', 'NFS port (0: any free port)', wholeNumber(0), 2049)
    .option('--mount-port <n>', 'MOUNT port (default: the NFS port)', wholeNumber(0))
    .addOption(
      new Option(
        '--portmap <mode>',
        'portmapper: embedded on 111, the system rpcbind, off, or auto',
      )
        .choices(['auto', 'embedded', 'system', 'off'])
        .default('auto'),
    )
    .option('--portmap-port <n>', 'port of the embedded portmapper', wholeNumber(0), 111)
    .option('--export <path>', 'export path', '/ivmr')
    .option('--sandbox', 'new sessions drop their writes when they end (verification)')
    .option('--allow <cidr>', 'clients allowed (repeatable; default loopback only)', collect)
    .option('--json', 'print the readiness line as JSON');
}

/**
 * Runs `ivmr serve` until SIGINT or SIGTERM (or `stop` resolves); returns the exit code.
 * Overlays are flushed and closed, and rpcbind registrations removed, before it returns.
 */
export async function runServe(
  flags: ServeFlags,
  io: CliIo,
  stop?: Promise<void>,
): Promise<number> {
  if (!flags.export.startsWith('/')) throw new InvalidArgumentError('--export must start with /');
  const repository = await openLocalRepository(flags.repo);
  const sessions: RecoverySession[] = [];
  let server: NfsServer | undefined;
  try {
    await mkdir(flags.cache, { recursive: true });
    sessions.push(...(await RecoverySession.resumeAll(repository, flags.cache)));
    for (const spec of flags.vm ?? []) {
      const [vm, point] = spec.split('@') as [string, string | undefined];
      const existing = sessions.find((s) => s.name === vm);
      if (existing) {
        if (point !== undefined && !existing.state.point.startsWith(point)) {
          throw new IvmrError(
            ErrorCode.EXISTS,
            `the cache already has a session ${vm} of point ${existing.state.point}; stop it before serving ${spec}`,
          );
        }
        continue;
      }
      sessions.push(
        await RecoverySession.start({
          repository,
          cacheDir: flags.cache,
          vm,
          ...(point ? { point } : {}),
          mode: flags.sandbox ? 'sandbox' : 'persistent',
        }),
      );
    }
    if (sessions.length === 0) {
      throw new InvalidArgumentError('nothing to serve: name a VM with --vm');
    }
    const datastore = new RecoveryDatastore(flags.cache, sessions);
    const handleKey = await loadHandleKey(flags.cache);
    const start = async (
      portmap: PortmapMode,
    ): Promise<{ server: NfsServer; address: NfsServerAddress }> => {
      const s = new NfsServer({
        exports: [
          { path: flags.export, fs: datastore, ...(flags.allow ? { clients: flags.allow } : {}) },
        ],
        host: flags.listen,
        nfsPort: flags.nfsPort,
        ...(flags.mountPort === undefined ? {} : { mountPort: flags.mountPort }),
        portmap,
        portmapPort: flags.portmapPort,
        handleKey,
        onError: (err) =>
          writeLine(io.stderr, `ivmr serve: ${err instanceof Error ? err.message : String(err)}`),
      });
      return { server: s, address: await s.start() };
    };
    let started: { server: NfsServer; address: NfsServerAddress } | undefined;
    let note = '';
    if (flags.portmap !== 'auto') {
      started = await start(flags.portmap);
    } else {
      for (const mode of ['embedded', 'system', 'off'] as const) {
        try {
          started = await start(mode);
          if (mode === 'off')
            note = 'no portmapper: qemu and ESXi need one on port 111 (free it or start rpcbind)';
          break;
        } catch (err) {
          if (mode === 'off') throw err;
        }
      }
    }
    server = started!.server;
    printReady(io, flags, started!.address, sessions, note);
    await (stop ?? untilSignal());
    return 0;
  } finally {
    await server?.stop();
    for (const s of sessions) await s.close().catch(() => {});
    await repository.close();
  }
}

function printReady(
  io: CliIo,
  flags: ServeFlags,
  address: NfsServerAddress,
  sessions: readonly RecoverySession[],
  note: string,
): void {
  const host = address.host === '0.0.0.0' || address.host === '::' ? '<this host>' : address.host;
  const ready = {
    ready: true,
    host: address.host,
    nfsPort: address.nfsPort,
    mountPort: address.mountPort,
    portmapPort: address.portmapPort ?? null,
    export: flags.export,
    sessions: sessions.map((s) => ({
      name: s.name,
      vm: s.state.vm,
      point: s.state.point,
      mode: s.state.mode,
      vmx: `${s.name}/${s.point.vm}.vmx`,
      disks: s.disks.map((d) => `${s.name}/${d.flatName}`),
    })),
    ...(note ? { note } : {}),
  };
  if (flags.json) {
    writeLine(io.stdout, JSON.stringify(ready));
    return;
  }
  const lines = [
    `ivmr datastore ready: nfs://${address.host}${flags.export} (NFS port ${address.nfsPort}, MOUNT port ${address.mountPort}${address.portmapPort ? `, portmapper ${address.portmapPort}` : ''})`,
    '',
    'On an ESXi host:',
    `  esxcli storage nfs add -H ${host} -s ${flags.export} -v ivmr`,
    ...sessions.map(
      (s) => `  vim-cmd solo/registervm /vmfs/volumes/ivmr/${s.name}/${s.point.vm}.vmx`,
    ),
    '',
    'Quick check from this machine:',
    ...sessions.flatMap((s) =>
      s.disks.map(
        (d) =>
          `  qemu-img info -f raw nfs://${address.host}${flags.export}/${s.name}/${d.flatName}`,
      ),
    ),
  ];
  if (note) lines.push('', `note: ${note}`);
  writeLine(io.stdout, lines.join('\n'));
}

/** The 32-byte secret that signs file handles, created once per cache folder. */
async function loadHandleKey(cache: string): Promise<Buffer> {
  const path = join(cache, 'handle.key');
  try {
    const key = await readFile(path);
    if (key.length === 32) return key;
  } catch (err) {
    if ((err as { code?: string }).code !== 'ENOENT') throw err;
  }
  const key = randomBytes(32);
  await writeFile(path, key, { mode: 0o600, flag: 'wx' });
  return key;
}

function untilSignal(): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      process.off('SIGINT', done);
      process.off('SIGTERM', done);
      resolve();
    };
    process.once('SIGINT', done);
    process.once('SIGTERM', done);
  });
}
