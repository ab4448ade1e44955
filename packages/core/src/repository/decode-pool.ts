import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';

/** Options of {@link DecodePool}. */
export interface DecodePoolOptions {
  /** Worker threads (default: the machine's cores less one, at least 1 and at most 4). */
  threads?: number;
  /**
   * Smallest read handed to a worker, in raw bytes of the frames it decodes whole (default
   * 256 KiB). A smaller read decodes on the calling thread: passing it to a worker and back
   * costs more than a 64 KiB frame takes to decode.
   */
  minBytes?: number;
  /**
   * The worker script. The default is `decode-worker.js` next to this module in the built
   * package; code that runs this package from its TypeScript sources (tests) passes a bundle
   * of `src/repository/decode-worker.ts`.
   */
  workerUrl?: URL;
}

/** What a {@link DecodePool} has done since it was made. */
export interface DecodePoolStats {
  /** Reads decoded by a worker, and their frames and raw bytes. */
  readonly jobs: number;
  readonly frames: number;
  readonly bytes: number;
  /** Worker threads running now. */
  readonly threads: number;
  /**
   * Why the pool stopped using its workers (a worker failed to start or died), or undefined.
   * Reads then decode on the calling thread, as they do without a pool.
   */
  readonly failure: string | undefined;
}

/** A job as a worker receives it: frames as quads of byte offsets into the two buffers. */
export interface DecodeJobMessage {
  readonly id: number;
  readonly input: SharedArrayBuffer;
  readonly output: SharedArrayBuffer;
  /** Per frame: stored offset in `input`, stored length, offset in `output`, raw length. */
  readonly frames: readonly number[];
}

/** A worker's answer: `index` is -1, or the first frame (in job order) that is corrupt. */
export interface DecodeReplyMessage {
  readonly id: number;
  readonly index: number;
  readonly why?: string;
}

/** A frame a worker found corrupt: its position in the job's list, and why. */
export interface DecodeJobFault {
  readonly index: number;
  readonly why: string;
}

/**
 * Jobs a worker holds at most (the one it decodes included); when every worker has this many,
 * the caller decodes the read itself, so that its thread decodes beside the workers instead of
 * waiting for them.
 */
const MAX_QUEUE = 1;

interface Thread {
  readonly worker: Worker;
  online: boolean;
  pending: number;
}

interface Pending {
  readonly thread: Thread;
  resolve(fault: DecodeJobFault | undefined): void;
  reject(err: Error): void;
}

/**
 * Worker threads that check and decode the frames of large reads, so that a cold sequential
 * stream's decoding runs beside the thread that serves it instead of on it. Give one to
 * {@link Repository.open} (`decodePool`); one pool may serve many repositories. The caller owns
 * it and closes it after the repositories that use it.
 *
 * Only reads whose stored bytes and destination are both in `SharedArrayBuffer` memory go to a
 * worker (the repository reads packs into shared scratch buffers when it has a pool; the read
 * cache of `@ivmr/cache` loads blocks into shared buffers); any other read, and every read while
 * the workers start, decodes on the calling thread. Workers start at the first large read and
 * do not keep the process alive while idle. A worker that fails stops the pool's use of workers
 * (see {@link DecodePoolStats.failure}); reads in flight on it are decoded again on the calling
 * thread, so a failure costs speed, never bytes.
 */
export class DecodePool {
  readonly #size: number;
  readonly #minBytes: number;
  readonly #url: URL;
  #threads: Thread[] | undefined;
  readonly #pending = new Map<number, Pending>();
  #nextId = 1;
  #failure: string | undefined;
  #closed = false;
  #jobs = 0;
  #frames = 0;
  #bytes = 0;

  constructor(options: DecodePoolOptions = {}) {
    const threads = options.threads ?? Math.min(4, Math.max(1, availableParallelism() - 1));
    if (!Number.isInteger(threads) || threads < 1) {
      throw new RangeError(`DecodePool: threads must be a positive integer, not ${threads}`);
    }
    this.#size = threads;
    this.#minBytes = options.minBytes ?? 256 * 1024;
    this.#url = options.workerUrl ?? new URL('./decode-worker.js', import.meta.url);
  }

  /** What the pool has done, and whether its workers still run. */
  get stats(): DecodePoolStats {
    return {
      jobs: this.#jobs,
      frames: this.#frames,
      bytes: this.#bytes,
      threads: this.#threads?.filter((t) => t.online).length ?? 0,
      failure: this.#failure,
    };
  }

  /**
   * @internal Hands frames to a worker. `frames` holds quads (stored offset in `input`'s
   * buffer, stored length, offset in `output`'s buffer, raw length); `rawBytes` is the sum of
   * the raw lengths. Returns undefined when the caller must decode them itself (not shared
   * memory, too small, workers not running); otherwise a promise of the first corrupt frame or
   * undefined, which rejects when the worker died (the caller then decodes them itself).
   */
  decode(
    input: Uint8Array,
    output: Uint8Array,
    frames: readonly number[],
    rawBytes: number,
  ): Promise<DecodeJobFault | undefined> | undefined {
    if (rawBytes < this.#minBytes || this.#closed || this.#failure !== undefined) return undefined;
    if (!(input.buffer instanceof SharedArrayBuffer && output.buffer instanceof SharedArrayBuffer))
      return undefined;
    const thread = this.#pick();
    if (thread === undefined) return undefined;
    const id = this.#nextId++;
    const message: DecodeJobMessage = { id, input: input.buffer, output: output.buffer, frames };
    if (thread.pending++ === 0) thread.worker.ref();
    this.#jobs++;
    this.#frames += frames.length / 4;
    this.#bytes += rawBytes;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { thread, resolve, reject });
      thread.worker.postMessage(message);
    });
  }

  /**
   * Starts the workers now rather than at the first large read (which, like every read while
   * they start, decodes on the calling thread): for a server that expects streams.
   */
  start(): void {
    if (this.#threads === undefined && !this.#closed) this.#start();
  }

  /**
   * Stops the workers; reads still waiting on one are then decoded on the calling thread (only
   * once the workers have stopped, so that none still writes to a read's buffers).
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const threads = this.#threads ?? [];
    this.#threads = undefined;
    await this.#stop(threads, new Error('the decode pool was closed'));
  }

  /** The online worker with the fewest jobs; starts the workers on first use. */
  #pick(): Thread | undefined {
    if (this.#threads === undefined) {
      this.#start();
      return undefined;
    }
    let best: Thread | undefined;
    for (const t of this.#threads) {
      if (t.online && t.pending < MAX_QUEUE && (best === undefined || t.pending < best.pending))
        best = t;
    }
    return best;
  }

  #start(): void {
    this.#threads = [];
    for (let i = 0; i < this.#size; i++) {
      const worker = new Worker(this.#url);
      const thread: Thread = { worker, online: false, pending: 0 };
      worker.unref();
      worker.on('online', () => {
        thread.online = true;
      });
      worker.on('message', (reply: DecodeReplyMessage) => this.#settle(reply));
      worker.on('error', (err) => this.#fail(`a decode worker failed: ${err.message}`));
      worker.on('exit', (code) => {
        if (!this.#closed) this.#fail(`a decode worker exited (code ${code})`);
      });
      this.#threads.push(thread);
    }
  }

  #settle(reply: DecodeReplyMessage): void {
    const p = this.#pending.get(reply.id);
    if (p === undefined) return;
    this.#pending.delete(reply.id);
    if (--p.thread.pending === 0) p.thread.worker.unref();
    p.resolve(reply.index < 0 ? undefined : { index: reply.index, why: reply.why ?? 'corrupt' });
  }

  /** Stops using workers after one failed: the others are stopped, pending reads fall back. */
  #fail(why: string): void {
    if (this.#failure !== undefined || this.#closed) return;
    this.#failure = why;
    const threads = this.#threads ?? [];
    this.#threads = [];
    void this.#stop(threads, new Error(why));
  }

  /** Terminates `threads`, then rejects every pending job (their callers decode them). */
  async #stop(threads: readonly Thread[], err: Error): Promise<void> {
    await Promise.all(threads.map((t) => t.worker.terminate().catch(() => {})));
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    for (const p of pending) p.reject(err);
  }
}
