import { randomInt } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import { NfsError, NfsErrorCode } from '../errors.js';
import { AcceptStat, AuthFlavor, CALL, MSG_ACCEPTED, REPLY } from '../rpc/message.js';
import { frameRecord, RecordDecoder } from '../rpc/record-decoder.js';
import { XdrReader } from '../xdr/reader.js';
import { XdrWriter } from '../xdr/writer.js';
import { IPPROTO_TCP, PMAP_PORT, PMAP_PROGRAM, PmapProc, writeMapping } from './portmap-program.js';
import { isLoopback } from './universal-address.js';

/** A registration made by {@link registerWithRpcbind}. */
export interface RpcbindRegistration {
  /** Removes the mappings again (PMAP v2 UNSET of each program and version). */
  unregister(): Promise<void>;
}

/** Where the machine's rpcbind listens. */
export interface RpcbindClientOptions {
  /** Default 127.0.0.1. rpcbind accepts SET and UNSET from loopback only. */
  readonly host?: string;
  /** Default 111. */
  readonly port?: number;
  /** Per call, default 5000 ms. */
  readonly timeoutMs?: number;
}

/**
 * Registers TCP mappings with the machine's running rpcbind (PMAP v2 SET over TCP), after
 * removing any stale mapping of the same program and version (a server that died without
 * unregistering leaves one, and SET never replaces). Throws `IVMR_IO` when no rpcbind answers,
 * or when it refuses: then the mappings made so far are removed again.
 *
 * Some rpcbind builds take a loopback TCP caller as local only when it comes from a privileged
 * source port, so as root this client binds one.
 */
export async function registerWithRpcbind(
  mappings: readonly { prog: number; vers: number; port: number }[],
  options: RpcbindClientOptions = {},
): Promise<RpcbindRegistration> {
  const target = {
    host: options.host ?? '127.0.0.1',
    port: options.port ?? PMAP_PORT,
    timeoutMs: options.timeoutMs ?? 5000,
  };
  const where = `${target.host}:${target.port}`;
  const done: { prog: number; vers: number }[] = [];
  const unregister = async (list: readonly { prog: number; vers: number }[]) => {
    if (list.length === 0) return;
    const client = await PmapClient.connect(target);
    try {
      for (const m of list) await client.call(PmapProc.UNSET, { ...m, prot: IPPROTO_TCP, port: 0 });
    } finally {
      await client.close();
    }
  };
  const client = await PmapClient.connect(target);
  try {
    for (const m of mappings) {
      await client.call(PmapProc.UNSET, { prog: m.prog, vers: m.vers, prot: IPPROTO_TCP, port: 0 });
      const ok = await client.call(PmapProc.SET, {
        prog: m.prog,
        vers: m.vers,
        prot: IPPROTO_TCP,
        port: m.port,
      });
      if (ok !== 1) {
        throw new NfsError(
          NfsErrorCode.IO,
          `rpcbind at ${where} refused to register program ${m.prog} version ${m.vers} on TCP port ${m.port}` +
            ' (a registration of another owner that it would not remove, or it refuses registrations over TCP: see rpcbind -i)',
          { details: { ...m } },
        );
      }
      done.push({ prog: m.prog, vers: m.vers });
    }
  } catch (err) {
    await client.close();
    await unregister(done).catch(() => {});
    throw err;
  }
  await client.close();
  let removed = false;
  return {
    async unregister() {
      if (removed) return;
      removed = true;
      await unregister(done);
    },
  };
}

/** A PMAP v2 client for one TCP connection, sequential calls. */
class PmapClient {
  readonly #socket: Socket;
  readonly #where: string;
  readonly #timeoutMs: number;
  #xid = randomInt(1, 0x7fff_ffff);
  #pending:
    | { xid: number; resolve: (r: XdrReader) => void; reject: (e: Error) => void }
    | undefined;

  private constructor(socket: Socket, where: string, timeoutMs: number) {
    this.#socket = socket;
    this.#where = where;
    this.#timeoutMs = timeoutMs;
    const decoder = new RecordDecoder(64 * 1024, (record) => {
      const r = new XdrReader(record);
      const p = this.#pending;
      if (!p || r.u32('xid') !== p.xid) return;
      this.#pending = undefined;
      p.resolve(r);
    });
    socket.on('data', (chunk) => {
      try {
        decoder.push(chunk);
      } catch (err) {
        this.#fail(this.#error(`sent a malformed reply: ${(err as Error).message}`));
      }
    });
    socket.on('error', (err) => this.#fail(this.#error(`connection failed: ${err.message}`, err)));
    socket.on('close', () => this.#fail(this.#error('closed the connection')));
  }

  /** Connects, from a privileged source port when we are root and the target is local. */
  static async connect(target: {
    host: string;
    port: number;
    timeoutMs: number;
  }): Promise<PmapClient> {
    const where = `${target.host}:${target.port}`;
    const privileged = process.getuid?.() === 0 && isLoopback(target.host);
    for (let attempt = 0; ; attempt++) {
      const localPort = privileged ? randomInt(600, 1024) : undefined;
      try {
        const socket = await open(target, localPort);
        return new PmapClient(socket, where, target.timeoutMs);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (
          localPort !== undefined &&
          (code === 'EADDRINUSE' || code === 'EADDRNOTAVAIL') &&
          attempt < 20
        )
          continue;
        throw new NfsError(
          NfsErrorCode.IO,
          `no rpcbind answers at ${where} (${code ?? (err as Error).message}): start rpcbind, or use the embedded portmapper`,
          { cause: err },
        );
      }
    }
  }

  /** Calls a PMAP v2 procedure with a `mapping` argument; resolves with the u32 result. */
  call(
    proc: number,
    mapping: { prog: number; vers: number; prot: number; port: number },
  ): Promise<number> {
    const xid = this.#xid++ >>> 0;
    const w = new XdrWriter(128);
    w.u32(xid).u32(CALL).u32(2).u32(PMAP_PROGRAM).u32(2).u32(proc);
    // AUTH_SYS as root: rpcbind ignores it over TCP, but older portmappers look at it.
    const cred = new XdrWriter(64);
    cred
      .u32(Math.floor(Date.now() / 1000) % 0x1_0000_0000)
      .string('localhost')
      .u32(0)
      .u32(0)
      .u32(0);
    w.u32(AuthFlavor.AUTH_SYS).opaque(cred.view()).u32(AuthFlavor.AUTH_NONE).u32(0);
    writeMapping(w, mapping);
    return new Promise<XdrReader>((resolve, reject) => {
      const timer = setTimeout(
        () => this.#fail(this.#error(`did not answer within ${this.#timeoutMs} ms`)),
        this.#timeoutMs,
      );
      this.#pending = {
        xid,
        resolve: (r) => {
          clearTimeout(timer);
          resolve(r);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      this.#socket.write(frameRecord(w.view()));
    }).then((r) => this.#result(r));
  }

  /** Closes the connection; resolves once its socket is closed. */
  close(): Promise<void> {
    this.#pending = undefined;
    if (this.#socket.closed) return Promise.resolve();
    const closed = new Promise<void>((resolve) => this.#socket.once('close', () => resolve()));
    this.#socket.destroy();
    return closed;
  }

  /** The u32 result of an accepted, successful reply; `IVMR_IO` for anything else. */
  #result(r: XdrReader): number {
    try {
      if (r.u32('msg_type') !== REPLY) throw this.#error('sent a call instead of a reply');
      if (r.u32('reply_stat') !== MSG_ACCEPTED) {
        const stat = r.u32('reject_stat');
        const detail = stat === 1 ? `auth error ${r.u32('auth_stat')}` : 'RPC version mismatch';
        throw this.#error(
          `denied the call (${detail}): it takes registrations only from local callers, as root`,
        );
      }
      r.u32('verf flavor');
      r.opaque(400, 'verf body');
      const stat = r.u32('accept_stat');
      if (stat !== AcceptStat.SUCCESS) throw this.#error(`answered accept_stat ${stat}`);
      return r.u32('result');
    } catch (err) {
      if (err instanceof NfsError && err.code === NfsErrorCode.IO) throw err;
      throw this.#error(`sent a malformed reply: ${(err as Error).message}`, err);
    }
  }

  #fail(err: NfsError): void {
    const p = this.#pending;
    this.#pending = undefined;
    this.#socket.destroy();
    p?.reject(err);
  }

  #error(message: string, cause?: unknown): NfsError {
    return new NfsError(NfsErrorCode.IO, `rpcbind at ${this.#where} ${message}`, { cause });
  }
}

function open(
  target: { host: string; port: number; timeoutMs: number },
  localPort: number | undefined,
): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: target.host, port: target.port, localPort, noDelay: true });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(
        Object.assign(new Error(`connect timed out after ${target.timeoutMs} ms`), {
          code: 'ETIMEDOUT',
        }),
      );
    }, target.timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.removeAllListeners('error');
      resolve(socket);
    });
    socket.once('error', (err) => {
      clearTimeout(timer);
      socket.destroy();
      reject(err);
    });
  });
}
