/**
 * Buffers for read-ahead runs, reused. A sequential stream reads ahead a run at a time; a new
 * buffer per run would cost a page fault per page on its first touch (and the garbage collector
 * its churn), which on a virtual machine whose host backs memory lazily was a fifth of a cold
 * stream's time. A block of a run (a subarray of its buffer) is held by whatever keeps it (a
 * store in flight, the stream's holding area, the load itself); the buffer is reused when the
 * last hold is released.
 */
export class RunBuffers {
  readonly #size: number;
  readonly #keep: number;
  readonly #free: Uint8Array[] = [];
  readonly #holds = new Map<ArrayBufferLike, number>();

  /**
   * @param size bytes of each buffer (a whole run)
   * @param keep free buffers kept for reuse, at most
   */
  constructor(size: number, keep: number) {
    this.#size = size;
    this.#keep = keep;
  }

  /** Bytes of each buffer. */
  get size(): number {
    return this.#size;
  }

  /** A buffer of `length` (<= size) bytes, held once by the caller. */
  take(length: number): Uint8Array {
    // Not zeroed: a run's source read fills every byte.
    const buf =
      this.#free.pop() ?? new Uint8Array(Buffer.allocUnsafeSlow(this.#size).buffer, 0, this.#size);
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
    if (this.#free.length < this.#keep) this.#free.push(new Uint8Array(part.buffer, 0, this.#size));
  }
}
