import { type BlockSource, MemoryBlockSource } from '@ivmr/core';
import { expect } from 'vitest';

/**
 * A base source that can only be read: it has `size` and `read` and nothing else, so nothing
 * can write it by construction. It keeps a copy of its bytes to prove they never changed and
 * counts the reads.
 */
export class ReadOnlyBase implements BlockSource {
  readonly size: number;
  reads = 0;
  bytesRead = 0;
  readonly #inner: MemoryBlockSource;
  readonly #bytes: Uint8Array;
  readonly #pristine: Uint8Array;

  constructor(bytes: Uint8Array) {
    this.#bytes = bytes;
    this.#pristine = bytes.slice();
    this.#inner = new MemoryBlockSource(bytes);
    this.size = bytes.length;
  }

  read(offset: number, length: number, into?: Uint8Array): Promise<Uint8Array> {
    this.reads++;
    this.bytesRead += length;
    return this.#inner.read(offset, length, into);
  }

  /** Asserts the source has no method that could write and that its bytes are unchanged. */
  expectUntouched(): void {
    const methods = new Set<string>();
    for (let o: object | null = this; o && o !== Object.prototype; o = Object.getPrototypeOf(o)) {
      for (const k of Object.getOwnPropertyNames(o)) methods.add(k);
    }
    for (const m of ['write', 'writeZeroes', 'discard', 'resize', 'flush']) {
      expect(methods.has(m), `base has a ${m} method`).toBe(false);
    }
    expect(Buffer.compare(this.#bytes, this.#pristine), 'base bytes changed').toBe(0);
  }
}
