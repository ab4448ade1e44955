import {
  type ByteRangeRequest,
  ErrorCode,
  IvmrError,
  type ObjectInfo,
  type ObjectKind,
  type StoreAdapter,
} from '../../src/index.js';

/**
 * A store wrapper that makes writes fail part-way: once `putBudget` puts have succeeded, every
 * further put rejects with `IVMR_IO` and writes nothing, as when a disk fills or a connection
 * drops in the middle of a backup. `putBudget = Infinity` passes everything through.
 */
export class FaultyStore implements StoreAdapter {
  readonly location: string;
  readonly inner: StoreAdapter;
  putBudget = Number.POSITIVE_INFINITY;
  /** Gets a test wants to hold back: a returned promise delays the get until it settles. */
  hold:
    | ((kind: ObjectKind, name: string, range?: ByteRangeRequest) => Promise<void> | undefined)
    | undefined;
  puts = 0;
  /** Kinds of the puts that went through, in order. */
  readonly log: ObjectKind[] = [];

  constructor(inner: StoreAdapter) {
    this.inner = inner;
    this.location = `faulty(${inner.location})`;
  }

  async get(kind: ObjectKind, name: string, range?: ByteRangeRequest): Promise<Uint8Array> {
    const held = this.hold?.(kind, name, range);
    if (held !== undefined) await held;
    return this.inner.get(kind, name, range);
  }

  async put(kind: ObjectKind, name: string, data: Uint8Array): Promise<void> {
    if (this.puts >= this.putBudget) {
      throw new IvmrError(ErrorCode.IO, `simulated crash before put of ${kind} ${name}`);
    }
    this.puts++;
    this.log.push(kind);
    await this.inner.put(kind, name, data);
  }

  has(kind: ObjectKind, name: string): Promise<boolean> {
    return this.inner.has(kind, name);
  }

  list(kind: ObjectKind): AsyncIterable<ObjectInfo> {
    return this.inner.list(kind);
  }

  delete(kind: ObjectKind, name: string): Promise<void> {
    return this.inner.delete(kind, name);
  }

  async close(): Promise<void> {
    await this.inner.close?.();
  }
}
