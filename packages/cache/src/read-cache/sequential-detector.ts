interface Stream {
  /** Offset the next read of the stream starts at. */
  next: number;
  /** Reads in a row that continued the stream. */
  run: number;
  /** First block not yet asked to be read ahead. */
  aheadFrom: number;
  lastUsed: number;
}

/**
 * Finds sequential streams among reads: a read that starts where an earlier one ended continues
 * that stream. Several streams are tracked at once (a guest reading two files, or two disks'
 * worth of boot reads interleaved); the least recently used one is forgotten first.
 */
export class SequentialDetector {
  readonly #streams: Stream[] = [];
  readonly #max: number;
  readonly #trigger: number;
  #clock = 0;
  #streaming = false;

  /** Whether the read noted last continues a stream that has reached the trigger. */
  get streaming(): boolean {
    return this.#streaming;
  }

  /**
   * @param trigger reads in a row a stream needs before read-ahead starts
   * @param max streams tracked at once
   */
  constructor(trigger: number, max = 8) {
    this.#trigger = trigger;
    this.#max = max;
  }

  /**
   * Notes a read of `[offset, offset + length)`. When it continues a sequential stream, returns
   * the blocks (of `blockSize` bytes) to read ahead: the ones in the `ahead` blocks after the
   * read that were not asked for before; otherwise an empty range. Once a stream has blocks asked
   * for more than half a window ahead of the read, nothing more is asked until the reads have
   * used up half of that: read-ahead then comes in runs of at least half a window, each one
   * source read, instead of a block or less per read (each source read costs a request, a
   * checksum pass and a store of its own).
   */
  note(offset: number, length: number, blockSize: number, ahead: number): [number, number] {
    const end = offset + length;
    this.#clock++;
    let s = this.#streams.find((x) => x.next === offset);
    if (s === undefined) {
      s = { next: end, run: 1, aheadFrom: 0, lastUsed: this.#clock };
      if (this.#streams.length >= this.#max) {
        let lru = 0;
        for (let i = 1; i < this.#streams.length; i++) {
          if (this.#streams[i]!.lastUsed < this.#streams[lru]!.lastUsed) lru = i;
        }
        this.#streams[lru] = s;
      } else {
        this.#streams.push(s);
      }
    } else {
      s.next = end;
      s.run++;
      s.lastUsed = this.#clock;
    }
    this.#streaming = s.run >= this.#trigger && length > 0;
    if (s.run < this.#trigger || ahead <= 0 || length === 0) return [0, 0];
    const first = Math.floor((end - 1) / blockSize) + 1;
    if (s.aheadFrom - first > ahead / 2) return [0, 0];
    const from = Math.max(Math.ceil(end / blockSize), s.aheadFrom);
    const to = first + ahead;
    if (from >= to) return [0, 0];
    s.aheadFrom = to;
    return [from, to];
  }
}
