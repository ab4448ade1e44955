import { mkdir } from 'node:fs/promises';
import type { Server } from 'node:http';
import { networkInterfaces } from 'node:os';
import { DecodePool, ErrorCode, IvmrError, isIvmrError } from '@ivmr/core';
import {
  type CallEvent,
  describeCall,
  NfsServer,
  type NfsServerAddress,
  type PortmapMode,
  type RpcCall,
} from '@ivmr/nfs';
import {
  type ControlServer,
  loadHandleKey,
  type RecoveryLog,
  RecoveryService,
  RecoverySession,
  serveControl,
} from '@ivmr/recovery';
import { type Command, InvalidArgumentError, Option } from 'commander';
import pino from 'pino';
import { addBootProfilesOptions, bootProfilesOf } from '../boot-profiles.js';
import { type CliIo, writeLine } from '../io.js';
import { createServeMetrics, serveMetrics } from '../metrics.js';
import { collect, parseByteSize, wholeNumber } from '../parse.js';
import { openRepository, REPO_HELP, S3_ENDPOINT_HELP, S3_TIMEOUT_HELP } from '../repository.js';
import { type SlowCallWatch, watchSlowCalls } from '../slow-calls.js';

/** Seconds an NFS call may go unanswered before `ivmr serve` warns of it (`--slow-call`). */
const DEFAULT_SLOW_CALL_SECONDS = 10;

/** Flags of `ivmr serve`. */
export interface ServeFlags {
  readonly repo: string;
  readonly s3Endpoint?: string;
  readonly s3Timeout?: number;
  readonly cache: string;
  /** `[FOLDER=]VM[@POINT]`, repeatable. */
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
  /** Seconds after which an unanswered NFS call is warned of; 0: never. Default 10. */
  readonly slowCall?: number;
  readonly logLevel: string;
  readonly json?: boolean;
  /** A folder, or false after `--no-boot-profiles`. */
  readonly bootProfiles?: string | boolean;
  readonly bootPrefetch: 'background' | 'wait' | 'off';
  /** Worker threads decoding large reads; 0: none. Default: the cores less one, at most 4. */
  readonly decodeThreads?: number;
}

/** Declares `ivmr serve`. */
export function defineServe(program: Command): Command {
  const command = program
    .command('serve')
    .summary('serve restore points as an NFS datastore (instant recovery)')
    .description(
      'Start a recovery session for every --vm (and resume the sessions already in the cache ' +
        'folder), and serve them over NFSv3 as VM folders a hypervisor can register and boot. ' +
        'Writes go to the cache folder; the repository is never written. `ivmr sessions`, ' +
        '`ivmr stop` and `ivmr migrate` reach the running server through <cache>/control.sock. ' +
        'Logs (JSON lines, pino) go to stderr. Stops on SIGINT/SIGTERM.',
    )
    .requiredOption('--repo <dir>', REPO_HELP)
    .option('--s3-endpoint <url>', S3_ENDPOINT_HELP)
    .option('--s3-timeout <seconds>', S3_TIMEOUT_HELP, wholeNumber(1))
    .requiredOption('--cache <dir>', 'cache folder: sessions, overlays, the file-handle key')
    .option(
      '--vm <[folder=]vm[@point]>',
      'VM to recover (repeatable); newest point unless @point; in a folder named after the VM ' +
        'unless folder= names it (to serve one VM from two points at once)',
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
    .option(
      '--decode-threads <n>',
      'worker threads that check and decode large reads (a cold sequential stream) beside the thread serving NFS; 0: none (default: the cores less one, at most 4)',
      wholeNumber(0),
    )
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
    .option(
      '--slow-call <seconds>',
      'warn of an NFS call unanswered this long, and again when it is answered (0: never)',
      wholeNumber(0),
      DEFAULT_SLOW_CALL_SECONDS,
    )
    .addOption(
      new Option('--log-level <level>', 'log level')
        .choices(['debug', 'info', 'warn', 'error', 'silent'])
        .default('info'),
    )
    .addOption(
      new Option(
        '--boot-prefetch <mode>',
        'when a started VM has a boot profile: load its boot blocks into the read cache while serving (background), before the readiness line (wait), or not (off)',
      )
        .choices(['background', 'wait', 'off'])
        .default('background'),
    );
  return addBootProfilesOptions(
    command,
    'folder of boot profiles that `ivmr verify --boot` records',
  ).option('--json', 'print the readiness line as JSON');
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
  const profiles = bootProfilesOf(flags.bootProfiles);
  const decodePool =
    flags.decodeThreads === 0
      ? undefined
      : new DecodePool(flags.decodeThreads === undefined ? {} : { threads: flags.decodeThreads });
  const repository = await openRepository(flags, decodePool ? { decodePool } : {}).catch(
    async (err: unknown) => {
      await decodePool?.close();
      throw err;
    },
  );
  let service: RecoveryService | undefined;
  let control: ControlServer | undefined;
  let server: NfsServer | undefined;
  let metrics: Server | undefined;
  let before: Set<string> | undefined;
  let ready = false;
  let slowCalls: SlowCallWatch | undefined;
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
      ...(profiles ? { bootProfiles: profiles, bootPrefetch: flags.bootPrefetch } : {}),
      log: log as RecoveryLog,
    });
    before = new Set((await RecoverySession.list(flags.cache)).map((s) => s.name));
    for (const spec of flags.vm ?? []) {
      const { name, vm, point } = parseVmSpec(spec);
      await service.start({
        vm,
        ...(point ? { point } : {}),
        ...(name ? { name } : {}),
        mode: flags.sandbox ? 'sandbox' : 'persistent',
      });
    }
    if (service.sessions.length === 0) {
      throw new InvalidArgumentError('nothing to serve: name a VM with --vm');
    }
    const m =
      flags.metricsPort === undefined
        ? undefined
        : createServeMetrics(service, flags.cache, decodePool, () => server?.callsInFlight() ?? []);
    const handleKey = await loadHandleKey(flags.cache, (path, size) =>
      log.warn({ path, size }, 'the file-handle key is damaged: a new one replaces it'),
    );
    const datastore = service.datastore;
    const watch = watchSlowCalls(log, (flags.slowCall ?? DEFAULT_SLOW_CALL_SECONDS) * 1000);
    slowCalls = watch;
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
          watch.onCall(event);
          if (event.prog === MOUNT_PROGRAM) logMount(log, event);
        },
        onError: (err, call) => logCallError(log, err, call),
      });
      return { server: s, address: await s.start() };
    };
    let started: { server: NfsServer; address: NfsServerAddress } | undefined;
    let portmap: PortmapMode = 'off';
    let note = '';
    if (flags.portmap !== 'auto') {
      started = await start(flags.portmap);
      portmap = flags.portmap;
    } else {
      for (const mode of ['embedded', 'system', 'off'] as const) {
        try {
          started = await start(mode);
          portmap = mode;
          if (mode === 'off')
            note = 'no portmapper: qemu and ESXi need one on port 111 (free it or start rpcbind)';
          break;
        } catch (err) {
          if (mode === 'off') throw err;
        }
      }
    }
    server = started!.server;
    watch.watch(server);
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
    // Listen for the signals before saying ready: a supervisor may send one as soon as it reads
    // the readiness line.
    const stopped = stop ?? untilSignal();
    printReady(io, flags, started!.address, portmap, service.sessions, note, metricsPort);
    ready = true;
    // The decode workers start now, after the readiness line (a worker's start-up is tens of
    // milliseconds of CPU), and before a cold stream's first large reads.
    decodePool?.start();
    await stopped;
    log.info({}, 'stopping');
    return 0;
  } finally {
    slowCalls?.stop();
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
    await decodePool?.close();
  }
}

const MOUNT_PROGRAM = 100005;
const MOUNT_STATUS: Record<number, string> = {
  1: 'MNT3ERR_PERM',
  2: 'MNT3ERR_NOENT',
  5: 'MNT3ERR_IO',
  13: 'MNT3ERR_ACCES',
  20: 'MNT3ERR_NOTDIR',
  22: 'MNT3ERR_INVAL',
  63: 'MNT3ERR_NAMETOOLONG',
  10004: 'MNT3ERR_NOTSUPP',
  10006: 'MNT3ERR_SERVERFAULT',
};

/**
 * Logs MNT and UMNT calls. A refused mount is not a mount: a client the export does not allow
 * is a warning (a hypervisor that cannot mount its datastore), other refusals are information.
 */
function logMount(log: pino.Logger, event: CallEvent): void {
  const client = { client: event.remote.address, port: event.remote.port };
  if (event.proc === 3) {
    log.info(client, 'client unmounted');
  } else if (event.proc === 1) {
    if (event.status === 0) {
      log.info(client, 'client mounted');
    } else {
      const status = MOUNT_STATUS[event.status ?? -1] ?? `status ${event.status}`;
      const entry = { ...client, status };
      if (event.status === 13) log.warn(entry, 'mount refused: client not allowed (see --allow)');
      else log.info(entry, 'mount refused');
    }
  }
}

/** Parses `[FOLDER=]VM[@POINT]`. */
export function parseVmSpec(spec: string): { name?: string; vm: string; point?: string } {
  const eq = spec.indexOf('=');
  const name = eq >= 0 ? spec.slice(0, eq) : undefined;
  const rest = spec.slice(eq + 1);
  const at = rest.indexOf('@');
  const vm = at >= 0 ? rest.slice(0, at) : rest;
  const point = at >= 0 ? rest.slice(at + 1) : undefined;
  if (name === '' || vm === '' || point === '') {
    throw new InvalidArgumentError(`--vm ${spec}: expected [folder=]vm[@point]`);
  }
  return {
    vm,
    ...(name === undefined ? {} : { name }),
    ...(point === undefined ? {} : { point }),
  };
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
  portmap: PortmapMode,
  sessions: readonly RecoverySession[],
  note: string,
  metricsPort: number | undefined,
): void {
  const ready = {
    ready: true,
    host: address.host,
    nfsPort: address.nfsPort,
    mountPort: address.mountPort,
    portmap,
    portmapPort: address.portmapPort ?? (portmap === 'system' ? 111 : null),
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
  const esxi = esxiView(flags, address, ready.portmapPort);
  // qemu's nfs:// driver finds MOUNT and NFS through a portmapper on port 111 only; libnfs's
  // nfs-ls takes the ports in the URL.
  const viaPortmap = ready.portmapPort === 111;
  const lines = [
    `ivmr datastore ready: nfs://${address.host}${flags.export} (NFS port ${address.nfsPort}, MOUNT port ${address.mountPort}, portmapper ${ready.portmapPort === null ? 'off' : `${portmap} on ${ready.portmapPort}`})`,
    ...(metricsPort ? [`metrics: http://${address.host}:${metricsPort}/metrics`] : []),
    '',
    'On an ESXi host:',
    `  esxcli storage nfs add -H ${esxi.host} -s ${flags.export} -v ivmr`,
    ...sessions.map(
      (s) => `  vim-cmd solo/registervm /vmfs/volumes/ivmr/${s.name}/${s.point.vm}.vmx`,
    ),
    ...esxi.notes.map((n) => `  (${n})`),
    '',
    'Quick check from this machine:',
    ...sessions.flatMap((s) =>
      viaPortmap
        ? s.disks.map(
            (d) =>
              `  qemu-img info -f raw nfs://${address.host}${flags.export}/${s.name}/${d.flatName}`,
          )
        : [
            `  nfs-ls 'nfs://${address.host}${flags.export}/${s.name}?nfsport=${address.nfsPort}&mountport=${address.mountPort}&version=3'`,
          ],
    ),
    '',
    `Sessions: ivmr sessions --cache ${flags.cache}   Migrate: ivmr migrate --cache ${flags.cache} --vm NAME --to DIR`,
  ];
  if (note) lines.push('', `note: ${note}`);
  writeLine(io.stdout, lines.join('\n'));
}

/**
 * The address an ESXi host should mount, and what stands in its way. ESXi has no port options:
 * it asks the portmapper on 111 for MOUNT and expects NFS on 2049, and it must be allowed.
 */
function esxiView(
  flags: ServeFlags,
  address: NfsServerAddress,
  portmapPort: number | null,
): { host: string; notes: string[] } {
  const notes: string[] = [];
  let host = address.host;
  if (host === '0.0.0.0' || host === '::') {
    host = externalAddress() ?? '<address of this host>';
  } else if (isLoopback(host)) {
    notes.push(
      `the server listens on ${host} only: for ESXi, serve with --listen <an address the host reaches> --allow <the host's address>`,
    );
  }
  if (!isLoopback(address.host) && !flags.allow) {
    notes.push('only loopback clients are allowed: add --allow <the ESXi address or subnet>');
  }
  if (address.nfsPort !== 2049) notes.push(`ESXi expects NFS on port 2049, not ${address.nfsPort}`);
  if (portmapPort !== 111) notes.push('ESXi finds MOUNT through a portmapper on port 111');
  return { host, notes };
}

/** The first non-internal IPv4 address of this machine. */
function externalAddress(): string | undefined {
  const all = Object.values(networkInterfaces()).flatMap((list) => list ?? []);
  return all.find((a) => !a.internal && a.family === 'IPv4')?.address;
}

function isLoopback(host: string): boolean {
  return host === '::1' || host.startsWith('127.') || host === 'localhost';
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
