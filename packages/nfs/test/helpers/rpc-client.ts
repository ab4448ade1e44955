import { connect, type Socket } from 'node:net';
import { frameRecord, RecordDecoder } from '../../src/rpc/record-decoder.js';
import { XdrReader } from '../../src/xdr/reader.js';
import { XdrWriter } from '../../src/xdr/writer.js';

/** A decoded RPC reply. `body` is positioned at the procedure's result (after accept_stat). */
export interface RpcReply {
  readonly xid: number;
  /** 0 MSG_ACCEPTED, 1 MSG_DENIED. */
  readonly replyStat: number;
  /** accept_stat when accepted. */
  readonly acceptStat: number;
  /** reject_stat when denied. */
  readonly rejectStat: number;
  /** Rest of the reply (result body when accepted; mismatch info or auth_stat when denied). */
  readonly body: XdrReader;
}

/** Credentials to send: AUTH_NONE, AUTH_SYS with ids, or raw flavor + body (for bad cases). */
export type TestCred =
  | { flavor: 'none' }
  | { flavor: 'sys'; uid?: number; gid?: number; gids?: number[]; machine?: string }
  | { flavor: number; body: Uint8Array };

/**
 * A minimal ONC RPC client over TCP for tests, built on the package's own codec. It can send
 * what normal clients never do: raw bytes, odd fragmentations, wrong versions, bad credentials.
 */
export class RpcTestClient {
  readonly socket: Socket;
  #xid = 1;
  readonly #waiting = new Map<number, (r: RpcReply) => void>();
  #closed = false;
  readonly #closeWaiters: (() => void)[] = [];

  private constructor(socket: Socket) {
    this.socket = socket;
    const decoder = new RecordDecoder(64 * 1024 * 1024, (record) => {
      const r = new XdrReader(Buffer.from(record));
      const xid = r.u32();
      r.u32(); // REPLY
      const replyStat = r.u32();
      let acceptStat = -1;
      let rejectStat = -1;
      if (replyStat === 0) {
        r.u32();
        r.opaque(400);
        acceptStat = r.u32();
      } else {
        rejectStat = r.u32();
      }
      this.#waiting.get(xid)?.({ xid, replyStat, acceptStat, rejectStat, body: r });
      this.#waiting.delete(xid);
    });
    socket.on('data', (c) => decoder.push(c));
    socket.on('error', () => {});
    socket.on('close', () => {
      this.#closed = true;
      for (const w of this.#closeWaiters) w();
    });
  }

  /** Connects to 127.0.0.1:`port` (or `host`). */
  static connect(port: number, host = '127.0.0.1'): Promise<RpcTestClient> {
    return new Promise((resolve, reject) => {
      const s = connect({ port, host }, () => resolve(new RpcTestClient(s)));
      s.once('error', reject);
    });
  }

  /** True once the server closed the connection. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Resolves when the connection is closed. */
  whenClosed(): Promise<void> {
    return this.#closed ? Promise.resolve() : new Promise((r) => this.#closeWaiters.push(r));
  }

  /** Encodes a CALL message (without record mark). */
  encodeCall(
    prog: number,
    vers: number,
    proc: number,
    args: (w: XdrWriter) => void = () => {},
    options: { cred?: TestCred; xid?: number; rpcvers?: number } = {},
  ): { xid: number; bytes: Buffer } {
    const xid = options.xid ?? this.#xid++;
    const w = new XdrWriter();
    w.u32(xid)
      .u32(0)
      .u32(options.rpcvers ?? 2)
      .u32(prog)
      .u32(vers)
      .u32(proc);
    const cred = options.cred ?? { flavor: 'sys' };
    if (cred.flavor === 'none') w.u32(0).u32(0);
    else if (cred.flavor === 'sys') {
      const body = new XdrWriter();
      body
        .u32(0)
        .string(cred.machine ?? 'test')
        .u32(cred.uid ?? 0)
        .u32(cred.gid ?? 0);
      const gids = cred.gids ?? [];
      body.u32(gids.length);
      for (const g of gids) body.u32(g);
      w.u32(1).opaque(body.view());
    } else w.u32(cred.flavor).opaque(cred.body);
    w.u32(0).u32(0);
    args(w);
    return { xid, bytes: Buffer.from(w.view()) };
  }

  /** Sends a call and waits for its reply. */
  call(
    prog: number,
    vers: number,
    proc: number,
    args?: (w: XdrWriter) => void,
    options?: { cred?: TestCred; xid?: number; rpcvers?: number },
  ): Promise<RpcReply> {
    const { xid, bytes } = this.encodeCall(prog, vers, proc, args, options);
    const reply = this.expect(xid);
    this.socket.write(frameRecord(bytes));
    return reply;
  }

  /** A promise of the reply with this xid (for calls sent with {@link sendRaw}). */
  expect(xid: number, timeoutMs = 10_000): Promise<RpcReply> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiting.delete(xid);
        reject(new Error(`no reply for xid ${xid}`));
      }, timeoutMs);
      this.#waiting.set(xid, (r) => {
        clearTimeout(timer);
        resolve(r);
      });
    });
  }

  /** Writes raw bytes to the connection. */
  sendRaw(bytes: Uint8Array): void {
    this.socket.write(bytes);
  }

  /** Closes the connection and waits until it is closed. */
  async close(): Promise<void> {
    this.socket.end();
    this.socket.destroy();
    await this.whenClosed();
  }
}
