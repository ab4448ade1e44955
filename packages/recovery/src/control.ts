import { chmod, unlink } from 'node:fs/promises';
import { connect, createServer, type Socket } from 'node:net';
import { join, resolve } from 'node:path';
import { ErrorCode, type ErrorCodeValue, IvmrError, isIvmrError } from '@ivmr/core';
import type { MigrationFormat, MigrationProgress } from './migration.js';
import type { RecoveryService } from './service.js';

/**
 * The requests a control socket answers, with their parameters:
 * - `ping`: the serving process's pid and cache folder;
 * - `sessions`: every session (`SessionInfo[]`);
 * - `stop`: `{ name, discard? }`;
 * - `migrate`: `{ name, to, format?, rateBytesPerSec? }`, answered with progress lines until
 *   the first pass is done (the migration then goes on in the server);
 * - `switch`: `{ name, to?, format? }`: migrates first when needed, then switches over.
 */
export type ControlMethod = 'ping' | 'sessions' | 'stop' | 'migrate' | 'switch';

/** A listening control socket; see {@link serveControl}. */
export interface ControlServer {
  readonly path: string;
  /** Stops listening, ends open connections and removes the socket file. */
  close(): Promise<void>;
}

const MAX_REQUEST = 64 * 1024;
/** sun_path holds 108 bytes on Linux, the terminating NUL included. */
const MAX_SOCKET_PATH = 107;
const PROGRESS_EVERY_MS = 200;

/** The control socket of a cache folder: `<cacheDir>/control.sock`. */
export function controlSocketPath(cacheDir: string): string {
  const path = join(resolve(cacheDir), 'control.sock');
  if (Buffer.byteLength(path) > MAX_SOCKET_PATH) {
    throw new IvmrError(
      ErrorCode.INVALID_ARGUMENT,
      `the control socket path ${path} is longer than ${MAX_SOCKET_PATH} bytes; use a shorter cache folder path`,
    );
  }
  return path;
}

/**
 * Serves `service` (or what the function returns at each request; it may throw while the
 * service is not ready) on the cache folder's control socket (mode 0600: only the owner, usually
 * root, may drive it), so that `ivmr sessions`, `ivmr stop` and `ivmr migrate` reach the running
 * server. One JSON request line per connection; answered by progress lines and one result or
 * error line. `IVMR_LOCKED` when another live process serves the same cache folder; a socket
 * file left by a crashed one is replaced.
 */
export async function serveControl(
  cacheDir: string,
  service: RecoveryService | (() => RecoveryService),
): Promise<ControlServer> {
  const get = typeof service === 'function' ? service : () => service;
  const path = controlSocketPath(cacheDir);
  const other = await callControl(cacheDir, 'ping').catch((err: unknown) => {
    if (isIvmrError(err, ErrorCode.NOT_FOUND)) return undefined;
    throw err;
  });
  if (other !== undefined) {
    const pid = (other as { pid?: number }).pid;
    throw new IvmrError(
      ErrorCode.LOCKED,
      `another ivmr serve (pid ${pid}) serves the cache folder ${cacheDir}`,
      { details: { pid, path } },
    );
  }
  await unlink(path).catch(() => {});
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    handle(get, cacheDir, socket);
  });
  await new Promise<void>((ok, fail) => {
    server.once('error', fail);
    server.listen(path, () => {
      server.off('error', fail);
      ok();
    });
  });
  await chmod(path, 0o600);
  return {
    path,
    async close() {
      const closed = new Promise<void>((ok) => server.close(() => ok()));
      for (const s of sockets) s.destroy();
      await closed;
      await unlink(path).catch(() => {});
    },
  };
}

function handle(service: () => RecoveryService, cacheDir: string, socket: Socket): void {
  let buf = '';
  let started = false;
  socket.setEncoding('utf8');
  socket.on('data', (chunk: string) => {
    if (started) return;
    buf += chunk;
    const nl = buf.indexOf('\n');
    if (nl < 0) {
      if (buf.length > MAX_REQUEST) socket.destroy();
      return;
    }
    started = true;
    const send = (line: object) => {
      if (!socket.destroyed) socket.write(`${JSON.stringify(line)}\n`);
    };
    Promise.resolve()
      .then(() => run(service(), cacheDir, buf.slice(0, nl), (p) => send({ progress: p })))
      .then(
        (result) => {
          send({ result: result ?? null });
          socket.end();
        },
        (err: unknown) => {
          send({ error: errorJson(err) });
          socket.end();
        },
      );
  });
}

interface Params {
  name?: string;
  discard?: boolean;
  to?: string;
  format?: MigrationFormat;
  rateBytesPerSec?: number;
}

async function run(
  service: RecoveryService,
  cacheDir: string,
  line: string,
  progress: (p: MigrationProgress) => void,
): Promise<unknown> {
  let req: { method?: ControlMethod; params?: Params };
  try {
    req = JSON.parse(line) as typeof req;
  } catch {
    throw new IvmrError(ErrorCode.INVALID_ARGUMENT, 'the control request is not JSON');
  }
  const p = req.params ?? {};
  const name = () => {
    if (typeof p.name !== 'string')
      throw new IvmrError(ErrorCode.INVALID_ARGUMENT, `${req.method} needs a session name`);
    return p.name;
  };
  switch (req.method) {
    case 'ping':
      return { pid: process.pid, cacheDir };
    case 'sessions':
      return service.list();
    case 'stop':
      return { stopped: p.name, ...(await service.stop(name(), { discard: p.discard === true })) };
    case 'migrate':
    case 'switch': {
      const session = service.session(name());
      let migration = session.migration;
      if (!migration || p.to !== undefined) {
        const to = p.to ?? session.state.migration?.to;
        if (to === undefined) {
          throw new IvmrError(
            ErrorCode.INVALID_ARGUMENT,
            `session ${p.name} is not migrating: name the target folder`,
          );
        }
        migration = await service.migrate(name(), {
          to: resolve(to),
          ...(p.format ? { format: p.format } : {}),
          ...(p.rateBytesPerSec ? { rateBytesPerSec: p.rateBytesPerSec } : {}),
        });
      }
      const m = migration;
      const timer = setInterval(() => progress(m.progress()), PROGRESS_EVERY_MS);
      try {
        progress(m.progress());
        await m.synced;
        if (req.method === 'switch') await service.switchOver(name());
      } finally {
        clearInterval(timer);
      }
      return m.progress();
    }
    default:
      throw new IvmrError(
        ErrorCode.INVALID_ARGUMENT,
        `unknown control request ${JSON.stringify(req.method)}`,
      );
  }
}

function errorJson(err: unknown): { code: string; message: string; details?: unknown } {
  if (isIvmrError(err)) return { code: err.code, message: err.message, details: err.details };
  return { code: ErrorCode.IO, message: err instanceof Error ? err.message : String(err) };
}

/**
 * Sends one request to the server of a cache folder and resolves with its result; progress
 * lines go to `onProgress`. Errors of the server come back as `IvmrError`s with their codes;
 * `IVMR_NOT_FOUND` with `details.reason: 'NO_SERVER'` when no server runs for the folder.
 */
export function callControl(
  cacheDir: string,
  method: ControlMethod,
  params: Params = {},
  onProgress?: (progress: MigrationProgress) => void,
): Promise<unknown> {
  const path = controlSocketPath(cacheDir);
  return new Promise((ok, fail) => {
    const socket = connect(path);
    let buf = '';
    let settled = false;
    const settle = (fn: () => void) => {
      if (settled) return;
      settled = true;
      socket.destroy();
      fn();
    };
    socket.setEncoding('utf8');
    socket.on('connect', () => socket.write(`${JSON.stringify({ method, params })}\n`));
    socket.on('data', (chunk: string) => {
      buf += chunk;
      for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        const msg = JSON.parse(line) as {
          progress?: MigrationProgress;
          result?: unknown;
          error?: { code: string; message: string; details?: Record<string, unknown> };
        };
        if (msg.progress) onProgress?.(msg.progress);
        else if (msg.error) {
          const e = msg.error;
          const code = (Object.values(ErrorCode) as string[]).includes(e.code)
            ? (e.code as ErrorCodeValue)
            : ErrorCode.IO;
          settle(() => fail(new IvmrError(code, e.message, { details: e.details ?? {} })));
        } else if ('result' in msg) settle(() => ok(msg.result));
      }
    });
    socket.on('error', (err: NodeJS.ErrnoException) => {
      settle(() =>
        fail(
          err.code === 'ENOENT' || err.code === 'ECONNREFUSED'
            ? new IvmrError(ErrorCode.NOT_FOUND, `no ivmr serve is running for ${cacheDir}`, {
                details: { reason: 'NO_SERVER', path },
                cause: err,
              })
            : new IvmrError(ErrorCode.IO, `control socket ${path}: ${err.message}`, { cause: err }),
        ),
      );
    });
    socket.on('close', () =>
      settle(() =>
        fail(new IvmrError(ErrorCode.IO, `the server closed ${path} without an answer`)),
      ),
    );
  });
}
