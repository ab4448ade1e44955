/** Smallest buffer the pool hands out: one page. */
const MIN_CLASS = 4096;

/**
 * Buffers for READ data, reused once their reply has been written to the socket. A READ then
 * allocates nothing: fresh `ArrayBuffer`s of hundreds of KiB each would count as external memory
 * and make V8 run a full garbage collection every few dozen megabytes read.
 *
 * Sizes are rounded up to a power of two (at least 4 KiB); each size keeps at most
 * `maxBytesPerSize` bytes of free buffers, so an idle server holds little. A buffer taken and never
 * given back (a read that failed) is simply garbage collected. Contents are not cleared: a buffer
 * holds the bytes of earlier replies.
 */
export class BufferPool {
  readonly #free = new Map<number, Buffer[]>();
  readonly #maxBytesPerSize: number;

  constructor(maxBytesPerSize = 16 * 1024 * 1024) {
    this.#maxBytesPerSize = maxBytesPerSize;
  }

  /** A buffer of at least `n` bytes (its length is `n` rounded up to a power of two). */
  take(n: number): Buffer {
    const size = sizeFor(n);
    return this.#free.get(size)?.pop() ?? Buffer.allocUnsafeSlow(size);
  }

  /** Returns a buffer from {@link take}; the caller must not use it afterwards. */
  give(buf: Buffer): void {
    const size = buf.length;
    let list = this.#free.get(size);
    if (list === undefined) {
      if (size !== sizeFor(size)) return;
      list = [];
      this.#free.set(size, list);
    }
    if ((list.length + 1) * size <= Math.max(this.#maxBytesPerSize, size)) list.push(buf);
  }

  /** Bytes of free buffers held. */
  get freeBytes(): number {
    let n = 0;
    for (const [size, list] of this.#free) n += size * list.length;
    return n;
  }
}

function sizeFor(n: number): number {
  let size = MIN_CLASS;
  while (size < n) size *= 2;
  return size;
}
