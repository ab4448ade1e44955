import type { BlockSource } from '../../src/index.js';

/** Wraps a block source and records every read, to check what a backup reads. */
export class CountingSource implements BlockSource {
  readonly size: number;
  readonly reads: { offset: number; length: number }[] = [];
  readonly #inner: BlockSource;

  constructor(inner: BlockSource) {
    this.#inner = inner;
    this.size = inner.size;
  }

  read(offset: number, length: number, into?: Uint8Array): Promise<Uint8Array> {
    this.reads.push({ offset, length });
    return this.#inner.read(offset, length, into);
  }
}
