import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import type { Server } from 'node:http';
import { join } from 'node:path';
import { ErrorCode, IvmrError, isIvmrError, openLocalRepository } from '@ivmr/core';
import {
  describeCall,
  NfsServer,
  type NfsServerAddress,
  type PortmapMode,
  type RpcCall,
} from '@ivmr/nfs';
import {
  type ControlServer,
  type RecoveryLog,
  RecoveryService,
  RecoverySession,
  serveControl,
} from '@ivmr/recovery';
import { type Command, InvalidArgumentError, Option } from 'commander';
import pino from 'pino';
import { type CliIo, writeLine } from '../io.js';
import { createServeMetrics, serveMetrics } from '../metrics.js';
import { collect, parseByteSize, wholeNumber } from '../parse.js';

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
  readonly minFree?: number;
  readonly cacheFloor?: number;
  readonly readCache?: number;
  readonly metricsPort?: number;
  readonly logLevel: string;
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
        'Writes go to the cache folder; the repository is never written. `ivmr sessions`, ' +
        '`ivmr stop` and `ivmr migrate` reach the running server through <cache>/control.sock. ' +
        'Logs (JSON lines, pino) go to stderr. Stops on SIGINT/SIGTERM.',
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
    .option(
      '--min-free <size>',
      "free space a new session needs on the cache volume (default max(20G, 15% of the VM's disks))",
      parseByteSize,
    )
    .option(
      '--cache-floor <percent>',
      'share of the cache volume kept free, checked at start; the read cache never uses it',
      parsePercent,
      5,
    )
    .option(
      '--read-cache <size>',
      'most bytes of backup blocks a new session caches per disk (0: none)',
      parseByteSize,
      2 * 1024 ** 3,
    )
    .option(
      '--metrics-port <n>',
      'serve Prometheus metrics on http://<listen>:<n>/metrics',
      wholeNumber(0),
    )
    .addOption(
      new Option('--log-level <level>', 'log level')
        .choices(['debug', 'info', 'warn', 'error', 'silent'])
        .default('info'),
    )
    .option('--json', 'print the readiness line as JSON');
}

function parsePercent(text: string): number {
  const n = Number(text.replace(/%$/, ''));
  if (!Number.isFinite(n) || n < 0 || n >= 100) {
    throw new InvalidArgumentError('expected a percentage from 0 to below 100');
  }
  return n;
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
  const log = pino(
    { level: flags.logLevel, base: { pid: process.pid } },
    pino.destination({ fd: 2, sync: true }),
  );
  const repository = await openLocalRepository(flags.repo);
  let service: RecoveryService | undefined;
  let control: ControlServer | undefined;
  let server: NfsServer | undefined;
  let metrics: Server | undefined;
  let before: Set<string> | undefined;
  let ready = false;
  try {
    await mkdir(flags.cache, { recursive: true });
    // The control socket first: it refuses a second server on the same cache folder before
    // any overlay is opened twice.
    control = await serveControl(flags.cache, () => {
      if (!service) throw new IvmrError(ErrorCode.CLOSED, 'the server is starting');
      return service;
    });
    service = await RecoveryService.open({
      repository,
      cacheDir: flags.cache,
      floorFraction: (flags.cacheFloor ?? 5) / 100,
      ...(flags.minFree === undefined ? {} : { minFreeBytes: flags.minFree }),
      ...(flags.readCache === undefined ? {} : { readCacheBytes: flags.readCache }),
      log: log as RecoveryLog,
    });
    before = new Set((await RecoverySession.list(flags.cache)).map((s) => s.name));
    for (const spec of flags.vm ?? []) {
      const [vm, point] = spec.split('@') as [string, string | undefined];
      await service.start({
        vm,
        ...(point ? { point } : {}),
        mode: flags.sandbox ? 'sandbox' : 'persistent',
      });
    }
    if (service.sessions.length === 0) {
      throw new InvalidArgumentError('nothing to serve: name a VM with --vm');
    }
    const m =
      flags.metricsPort === undefined ? undefined : createServeMetrics(service, flags.cache);
    const handleKey = await loadHandleKey(flags.cache);
    const datastore = service.datastore;
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
        onCall: (event) => {
          m?.onCall(event);
          if (event.prog === 100005 && (event.proc === 1 || event.proc === 3)) {
            log.info(
              { client: event.remote.address, port: event.remote.port },
              event.proc === 1 ? 'client mounted' : 'client unmounted',
            );
          }
        },
        onError: (err, call) => logCallError(log, err, call),
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
    let metricsPort: number | undefined;
    if (m) {
      const ms = await serveMetrics(m.registry, flags.listen, flags.metricsPort!);
      metrics = ms.server;
      metricsPort = ms.port;
    }
    log.info(
      { ...started!.address, export: flags.export, sessions: service.sessions.map((s) => s.name) },
      'serving',
    );
    printReady(io, flags, started!.address, service.sessions, note, metricsPort);
    ready = true;
    await (stop ?? untilSignal());
    log.info({}, 'stopping');
    return 0;
  } finally {
    if (metrics) await new Promise((r) => metrics!.close(r));
    await control?.close();
    await server?.stop();
    if (!ready && service && before) {
      // A serve that fails to start leaves no session it made behind.
      for (const s of service.sessions) {
        if (!before.has(s.name)) await service.stop(s.name, { discard: true }).catch(() => {});
      }
    }
    await service?.close().catch((err: unknown) => log.error({ err }, 'closing sessions failed'));
    await repository.close();
  }
}

/** Logs an adapter failure answered NFS3ERR_IO, naming the damaged blob when there is one. */
function logCallError(log: pino.Logger, err: unknown, call: RpcCall | undefined): void {
  const where = call
    ? (() => {
        const { program, procedure } = describeCall(call);
        return { client: call.remote.address, program, procedure };
      })()
    : {};
  if (isIvmrError(err)) {
    log.error({ ...where, code: err.code, details: err.details }, err.message);
  } else {
    log.error({ ...where, err }, err instanceof Error ? err.message : String(err));
  }
}

function printReady(
  io: CliIo,
  flags: ServeFlags,
  address: NfsServerAddress,
  sessions: readonly RecoverySession[],
  note: string,
  metricsPort: number | undefined,
): void {
  const host = address.host === '0.0.0.0' || address.host === '::' ? '<this host>' : address.host;
  const ready = {
    ready: true,
    host: address.host,
    nfsPort: address.nfsPort,
    mountPort: address.mountPort,
    portmapPort: address.portmapPort ?? null,
    metricsPort: metricsPort ?? null,
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
    ...(metricsPort ? [`metrics: http://${address.host}:${metricsPort}/metrics`] : []),
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
    '',
    `Sessions: ivmr sessions --cache ${flags.cache}   Migrate: ivmr migrate --cache ${flags.cache} --vm NAME --to DIR`,
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
