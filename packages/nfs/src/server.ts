import { createHash, randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { NfsError, NfsErrorCode } from './errors.js';
import { buildExports, type ExportOptions } from './exports.js';
import { HandleCodec } from './handles.js';
import { createMountProgram, MOUNT_PROGRAM } from './mount/mount-program.js';
import { Nfs3Proc } from './nfs3/constants.js';
import { createNfs3Program, NFS_PROGRAM } from './nfs3/nfs3-program.js';
import { createPortmapProgram, PMAP_PROGRAM, PortmapRegistry } from './portmap/portmap-program.js';
import { type RpcbindRegistration, registerWithRpcbind } from './portmap/rpcbind-client.js';
import { type CallEvent, type CallInFlight, Dispatcher, type RpcCall } from './rpc/dispatcher.js';
import type { MountTable, ServerState } from './state.js';
import { RpcTcpServer } from './transport/tcp-server.js';

/** How the server is found by clients that ask a portmapper (qemu, ESXi, Linux). */
export type PortmapMode = 'embedded' | 'system' | 'off';

/** Options of an {@link NfsServer}. */
export interface NfsServerOptions {
  readonly exports: readonly ExportOptions[];
  /** Address to listen on (default `127.0.0.1`; `::` or `0.0.0.0` for all). */
  readonly host?: string;
  /** NFS port (default 2049; 0 picks a free port). */
  readonly nfsPort?: number;
  /**
   * MOUNT port (default: the NFS port, one listener serves both; 0 picks a free port for a
   * separate listener).
   */
  readonly mountPort?: number;
  /**
   * `embedded`: serve PMAP v2 and RPCBIND v3/v4 ourselves on `portmapPort`; `system`: register
   * NFS and MOUNT with the machine's rpcbind on 127.0.0.1:111 (and unregister on stop);
   * `off` (default): clients must be told the ports.
   */
  readonly portmap?: PortmapMode;
  /** Port of the embedded portmapper (default 111; 0 picks a free port). */
  readonly portmapPort?: number;
  /**
   * Secret that signs file handles (at least 16 bytes). Keep it stable across restarts and
   * secret: a client that knows it can forge handles. Default: derived from the export paths,
   * stable across restarts but not secret.
   */
  readonly handleKey?: Uint8Array;
  /** Largest READ / WRITE in bytes (default 1 MiB each; 4 KiB..16 MiB). */
  readonly rtmax?: number;
  readonly wtmax?: number;
  /** Calls in flight per connection (default 64). */
  readonly maxInFlight?: number;
  /**
   * Observer of every RPC call: program, procedure, RPC and NFS status, latency, bytes in and
   * out. Costs nothing when unset.
   */
  readonly onCall?: (event: CallEvent) => void;
  /** Unexpected errors: adapter failures answered NFS3ERR_IO, closed connections. */
  readonly onError?: (error: unknown, call?: RpcCall) => void;
}

/** Where a started server listens. */
export interface NfsServerAddress {
  readonly host: string;
  readonly nfsPort: number;
  readonly mountPort: number;
  /** Port of the embedded portmapper, or undefined. */
  readonly portmapPort: number | undefined;
}

/**
 * An embeddable NFSv3 server: NFS (program 100003, version 3) and MOUNT (100005, versions 1
 * and 3) over TCP, optionally a portmapper, serving one or more exports each backed by an
 * {@link NfsFileSystem}.
 *
 * ```ts
 * const server = new NfsServer({ exports: [{ path: '/data', fs: myFs }], nfsPort: 0 });
 * const { nfsPort } = await server.start();
 * // ...
 * await server.stop();
 * ```
 */
export class NfsServer {
  readonly #options: NfsServerOptions;
  readonly #state: ServerState;
  readonly #dispatcher: Dispatcher;
  #portmapDispatcher: Dispatcher | undefined;
  readonly #listeners: RpcTcpServer[] = [];
  #registration: RpcbindRegistration | undefined;
  #address: NfsServerAddress | undefined;

  constructor(options: NfsServerOptions) {
    this.#options = options;
    const exports = buildExports(options.exports);
    const rtmax = checkSize('rtmax', options.rtmax ?? 1024 * 1024);
    const wtmax = checkSize('wtmax', options.wtmax ?? 1024 * 1024);
    const key =
      options.handleKey ??
      createHash('sha256')
        .update(`ivmr-nfs-handles\0${exports.map((e) => e.path).join('\0')}`)
        .digest();
    const mounts: MountTable = new Map();
    const reportError = (error: unknown, call: RpcCall) => options.onError?.(error, call);
    this.#state = {
      exports,
      handles: new HandleCodec(key),
      mounts,
      sizes: { rtmax, wtmax, dtpref: 64 * 1024 },
      bootVerifier: randomBytes(8),
      reportError,
    };
    this.#dispatcher = new Dispatcher({ onCall: options.onCall, onError: reportError });
    // Every NFSv3 result but NULL's starts with its nfsstat3 (RFC 1813): call events report it.
    this.#dispatcher.register({
      ...createNfs3Program(this.#state),
      resultStatus: (_vers, proc) => proc !== Nfs3Proc.NULL,
    });
    this.#dispatcher.register(createMountProgram(this.#state));
  }

  /** Starts the listeners (and the portmapper or the rpcbind registration). */
  async start(): Promise<NfsServerAddress> {
    if (this.#address)
      throw new NfsError(NfsErrorCode.INVALID_ARGUMENT, 'NFS server already started');
    const o = this.#options;
    const host = o.host ?? '127.0.0.1';
    const maxRecordSize = Math.max(this.#state.sizes.wtmax, this.#state.sizes.rtmax) + 64 * 1024;
    const listen = async (port: number): Promise<AddressInfo> => {
      const l = new RpcTcpServer(this.#dispatcher, {
        maxRecordSize,
        maxInFlight: o.maxInFlight,
        onConnectionError: (err) => o.onError?.(err),
      });
      this.#listeners.push(l);
      return l.listen(port, host);
    };
    try {
      const nfsPort = (await listen(o.nfsPort ?? 2049)).port;
      const mountPort =
        o.mountPort === undefined || o.mountPort === nfsPort
          ? nfsPort
          : (await listen(o.mountPort)).port;
      const mode = o.portmap ?? 'off';
      let portmapPort: number | undefined;
      const mappings = [
        { prog: NFS_PROGRAM, vers: 3, port: nfsPort },
        { prog: MOUNT_PROGRAM, vers: 1, port: mountPort },
        { prog: MOUNT_PROGRAM, vers: 3, port: mountPort },
      ];
      if (mode === 'embedded') {
        const registry = new PortmapRegistry();
        const pmap = new Dispatcher({ onCall: o.onCall });
        this.#portmapDispatcher = pmap;
        pmap.register(createPortmapProgram(registry));
        const l = new RpcTcpServer(pmap, { onConnectionError: (err) => o.onError?.(err) });
        this.#listeners.push(l);
        portmapPort = (
          await l.listen(o.portmapPort ?? 111, host).catch((err: NfsError) => {
            throw new NfsError(
              NfsErrorCode.IO,
              `${err.message} (is rpcbind running? then use portmap: 'system'; or pick another portmapPort)`,
              { cause: err },
            );
          })
        ).port;
        // rpcbind lists itself as versions 2, 3 and 4; `rpcinfo` relies on it.
        for (const vers of [2, 3, 4])
          registry.set({ prog: PMAP_PROGRAM, vers, port: portmapPort }, host);
        for (const m of mappings) registry.set(m, host);
      } else if (mode === 'system') {
        this.#registration = await registerWithRpcbind(mappings);
      }
      this.#address = { host, nfsPort, mountPort, portmapPort };
      return this.#address;
    } catch (err) {
      await this.stop();
      throw err;
    }
  }

  /**
   * Calls that arrived and are not answered yet, oldest first: NFS and MOUNT calls, and
   * portmapper calls when it is embedded. A call is answered when its reply is encoded for
   * sending. For watchdogs and diagnostics: a call waiting on a stuck adapter shows here with
   * its age (ESXi gives up on a datastore whose calls go unanswered for long).
   */
  callsInFlight(): CallInFlight[] {
    const now = performance.now();
    const calls = this.#dispatcher.callsInFlight(now);
    if (this.#portmapDispatcher) calls.push(...this.#portmapDispatcher.callsInFlight(now));
    return calls.sort((a, b) => b.ageMs - a.ageMs);
  }

  /** Where the server listens, once started. */
  get address(): NfsServerAddress | undefined {
    return this.#address;
  }

  /**
   * Stops: unregisters from rpcbind, stops accepting, lets calls in flight finish (up to
   * `graceMs`), closes every connection.
   */
  async stop(graceMs = 5000): Promise<void> {
    const registration = this.#registration;
    this.#registration = undefined;
    await registration?.unregister().catch((err: unknown) => this.#options.onError?.(err));
    const listeners = this.#listeners.splice(0);
    await Promise.all(listeners.map((l) => l.close(graceMs)));
    this.#address = undefined;
  }
}

function checkSize(name: string, v: number): number {
  if (!Number.isInteger(v) || v < 4096 || v > 16 * 1024 * 1024) {
    throw new NfsError(NfsErrorCode.INVALID_ARGUMENT, `${name} must be 4 KiB..16 MiB, got ${v}`);
  }
  return v;
}
