/** Buffers of one size, and the free ones kept for reuse. */
interface SizeClass {
  readonly size: number;
  readonly keep: number;
  readonly free: Uint8Array[];
}

/**
 * Buffers for loads from the source, reused: a block loaded on a miss, a read-ahead run. A new
 * buffer per load costs a page fault per page on its first touch (on a virtual machine whose
 * host backs memory lazily that was a fifth of a cold stream's time), and V8 counts every new
 * `ArrayBuffer` as external memory: a few hundred MB/s of them made it run a full garbage
 * collection every few dozen milliseconds, a pause for every read in flight.
 *
 * Buffers come in a few sizes (a block, a run); a load takes the smallest that fits, or a fresh
 * buffer that is not reused when none does. A block of a load (a subarray of its buffer) is held
 * by whatever keeps it (a store in flight, the stream's holding area, the load itself); the
 * buffer is reused when the last hold is released.
 *
 * Reused buffers are `SharedArrayBuffer` memory, so that a source with decode workers (a
 * repository opened with a `DecodePool` of `@ivmr/core`) decodes straight into them.
 */
export class LoadBuffers {
  readonly #classes: SizeClass[];
  readonly #holds = new Map<ArrayBufferLike, number>();

  /**
   * @param classes the sizes of buffer (bytes) and how many free buffers of each are kept for
   *   reuse, at most
   */
  constructor(classes: readonly { size: number; keep: number }[]) {
    this.#classes = [...classes]
      .sort((a, b) => a.size - b.size)
      .map((c) => ({ size: c.size, keep: c.keep, free: [] }));
  }

  /** Bytes of the largest buffer. */
  get size(): number {
    return this.#classes[this.#classes.length - 1]?.size ?? 0;
  }

  /**
   * A buffer of `length` bytes, held once by the caller; from the smallest size that holds it,
   * or a fresh one (not reused) when `length` is larger than every size.
   */
  take(length: number): Uint8Array {
    let c: SizeClass | undefined;
    for (const k of this.#classes) {
      if (k.size >= length) {
        c = k;
        break;
      }
    }
    // Not zeroed: a load's source read fills every byte.
    if (c === undefined) return new Uint8Array(Buffer.allocUnsafeSlow(length).buffer, 0, length);
    const buf = c.free.pop() ?? new Uint8Array(new SharedArrayBuffer(c.size));
    this.#holds.set(buf.buffer, 1);
    return buf.subarray(0, length);
  }

  /** Holds the buffer `part` lies in once more; nothing for a part of no buffer of these. */
  hold(part: Uint8Array): void {
    const n = this.#holds.get(part.buffer);
    if (n !== undefined) this.#holds.set(part.buffer, n + 1);
  }

  /** Releases one hold of the buffer `part` lies in; the last one makes it free for reuse. */
  release(part: Uint8Array): void {
    const n = this.#holds.get(part.buffer);
    if (n === undefined) return;
    if (n > 1) {
      this.#holds.set(part.buffer, n - 1);
      return;
    }
    this.#holds.delete(part.buffer);
    const size = part.buffer.byteLength;
    for (const c of this.#classes) {
      if (c.size !== size) continue;
      if (c.free.length < c.keep) c.free.push(new Uint8Array(part.buffer, 0, size));
      return;
    }
  }
}
