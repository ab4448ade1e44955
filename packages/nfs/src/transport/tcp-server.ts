import { type AddressInfo, createServer, type Server, type Socket } from 'node:net';
import { NfsError, NfsErrorCode } from '../errors.js';
import type { Dispatcher, PendingReply, RemoteInfo } from '../rpc/dispatcher.js';
import { RecordDecoder } from '../rpc/record-decoder.js';
import { XdrWriter } from '../xdr/writer.js';

/** Options of an {@link RpcTcpServer}. */
export interface RpcTcpServerOptions {
  /** Largest RPC record accepted (default 1 MiB + 64 KiB, enough for a 1 MiB WRITE). */
  maxRecordSize?: number;
  /** Calls in flight per connection before the server stops reading from it (default 64). */
  maxInFlight?: number;
  /** Bytes queued for a connection before the server stops reading from it (default 16 MiB). */
  maxQueuedBytes?: number;
  /** Called when a connection is closed for misbehaving (oversized or undecodable record). */
  onConnectionError?: (error: unknown, remote: RemoteInfo) => void;
}

const LAST_FRAGMENT = 0x8000_0000;
const PAD = Buffer.alloc(3);
/** Replies up to this size (record mark included) may share a socket write with others. */
const GLUE_REPLY_BYTES = 16 * 1024;
/** At most this many bytes of small replies share one socket write. */
const GLUE_MAX_BYTES = 64 * 1024;

/**
 * ONC RPC over TCP: accepts connections, reassembles records, hands each to the dispatcher at
 * once (many calls in flight per connection; replies go out in completion order), and writes
 * each reply as one record. Small replies (16 KiB or less) finished in the same turn of the event
 * loop share one socket write, up to 64 KiB of them: a write per reply was a fifth of the
 * serving thread's time under many small calls. A reply with no other call of its connection in
 * flight goes out at once (waiting for the turn's end cost a QD1 client a fifth of its IOPS). A
 * large reply always goes out with a write of its own (header and data corked together), never
 * glued to others: libnfs was seen to hang on several large READ replies in one write. A connection that sends an oversized or undecodable
 * record is closed; others are untouched.
 */
export class RpcTcpServer {
  readonly #dispatcher: Dispatcher;
  readonly #maxRecord: number;
  readonly #maxInFlight: number;
  readonly #maxQueued: number;
  readonly #onConnectionError: RpcTcpServerOptions['onConnectionError'];
  readonly #server: Server;
  readonly #sockets = new Set<Socket>();
  readonly #inFlight = new Set<Promise<unknown>>();
  #stopping = false;

  constructor(dispatcher: Dispatcher, options: RpcTcpServerOptions = {}) {
    this.#dispatcher = dispatcher;
    this.#maxRecord = options.maxRecordSize ?? 1024 * 1024 + 64 * 1024;
    this.#maxInFlight = options.maxInFlight ?? 64;
    this.#maxQueued = options.maxQueuedBytes ?? 16 * 1024 * 1024;
    this.#onConnectionError = options.onConnectionError;
    this.#server = createServer({ noDelay: true }, (socket) => this.#accept(socket));
  }

  /** Starts listening; resolves with the bound address (port 0 picks a free port). */
  listen(port: number, host: string): Promise<AddressInfo> {
    return new Promise((resolve, reject) => {
      const onError = (err: Error) => {
        reject(
          new NfsError(NfsErrorCode.IO, `cannot listen on ${host}:${port}: ${err.message}`, {
            cause: err,
          }),
        );
      };
      this.#server.once('error', onError);
      this.#server.listen({ port, host, exclusive: true }, () => {
        this.#server.off('error', onError);
        resolve(this.#server.address() as AddressInfo);
      });
    });
  }

  /** The bound address, once listening. */
  address(): AddressInfo | null {
    return (this.#server.address() as AddressInfo | null) ?? null;
  }

  /** Number of open connections. */
  get connections(): number {
    return this.#sockets.size;
  }

  /**
   * Stops accepting, lets calls in flight finish (up to `graceMs`), then closes every
   * connection. Resolves when the listening socket and all connections are closed.
   */
  async close(graceMs = 5000): Promise<void> {
    this.#stopping = true;
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
    if (this.#inFlight.size > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        Promise.allSettled([...this.#inFlight]),
        new Promise((r) => {
          timer = setTimeout(r, graceMs);
        }),
      ]);
      clearTimeout(timer);
    }
    for (const s of this.#sockets) s.destroy();
    await closed;
  }

  #accept(socket: Socket): void {
    if (this.#stopping) {
      socket.destroy();
      return;
    }
    this.#sockets.add(socket);
    const remote: RemoteInfo = {
      address: socket.remoteAddress ?? '',
      port: socket.remotePort ?? 0,
      family: socket.remoteFamily ?? '',
      localAddress: socket.localAddress,
    };
    const writers: XdrWriter[] = [];
    let inFlight = 0;
    let paused = false;
    const updateFlow = () => {
      const full = inFlight >= this.#maxInFlight || socket.writableLength >= this.#maxQueued;
      if (full && !paused) {
        paused = true;
        socket.pause();
      } else if (!full && paused) {
        paused = false;
        socket.resume();
      }
    };
    const fail = (err: unknown) => {
      this.#onConnectionError?.(err, remote);
      socket.destroy();
    };
    // Small replies finished in one turn of the event loop go out together: one system call
    // for up to GLUE_MAX_BYTES of them instead of one each (see the class comment).
    let glued = 0;
    const unglue = () => {
      if (glued === 0) return;
      glued = 0;
      socket.uncork();
    };
    const send = (reply: PendingReply) => {
      if (socket.destroyed) {
        reply.sent?.();
        return;
      }
      const w = writers.pop() ?? new XdrWriter(16 * 1024);
      w.reset();
      const mark = w.reserve(4);
      let tail: Uint8Array | undefined;
      try {
        tail = reply.write(w);
      } catch (err) {
        writers.push(w);
        reply.sent?.();
        throw err;
      }
      const tailLength = tail ? tail.length : 0;
      const pad = (4 - (tailLength % 4)) % 4;
      w.patchU32(mark, LAST_FRAGMENT + (w.pos - 4) + tailLength + pad);
      // Called when the last write is done, or with an error when the socket is destroyed
      // before: either way the buffers are free again.
      const release = () => {
        writers.push(w);
        reply.sent?.();
      };
      const writeRecord = () => {
        if (!tail) {
          socket.write(w.view(), release);
          return;
        }
        socket.write(w.view());
        if (pad) {
          socket.write(tail);
          socket.write(PAD.subarray(0, pad), release);
        } else {
          socket.write(tail, release);
        }
      };
      const size = w.pos + tailLength + pad;
      // A reply with no other call in flight has nothing to wait for: it goes out at once.
      if (size <= GLUE_REPLY_BYTES && (glued > 0 || inFlight > 1)) {
        if (glued + size > GLUE_MAX_BYTES) unglue();
        if (glued === 0) {
          socket.cork();
          setImmediate(unglue);
        }
        glued += size;
        writeRecord();
        return;
      }
      // Any other reply goes out on its own (header and data in one write), after the small
      // ones before it.
      unglue();
      socket.cork();
      writeRecord();
      socket.uncork();
    };
    const decoder = new RecordDecoder(this.#maxRecord, (record) => {
      inFlight++;
      updateFlow();
      const p = this.#dispatcher.dispatch(record, remote).then(
        (reply) => {
          if (!reply) return;
          // An encoder that throws (an adapter's attribute out of its XDR range) must not
          // become an unhandled rejection: drop the connection, as for undecodable input.
          try {
            send(reply);
          } catch (err) {
            fail(err);
          }
        },
        (err) => fail(err),
      );
      const tracked = p.finally(() => {
        inFlight--;
        this.#inFlight.delete(tracked);
        if (!socket.destroyed) updateFlow();
      });
      this.#inFlight.add(tracked);
    });
    socket.on('data', (chunk) => {
      try {
        decoder.push(chunk);
      } catch (err) {
        fail(err);
      }
    });
    socket.on('drain', updateFlow);
    socket.on('error', () => socket.destroy());
    socket.on('close', () => this.#sockets.delete(socket));
  }
}
