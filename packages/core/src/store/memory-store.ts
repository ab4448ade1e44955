import { ErrorCode, IvmrError } from '../errors.js';
import {
  type ByteRangeRequest,
  isValidObjectName,
  type ObjectInfo,
  type ObjectKind,
  type StoreAdapter,
} from './adapter.js';

/**
 * A store adapter in memory: for tests, examples and throw-away sandboxes. Objects are copied on
 * put and on get, so callers can reuse their buffers.
 */
export class MemoryStore implements StoreAdapter {
  readonly location = 'memory';
  readonly #objects = new Map<string, Uint8Array>();

  async get(kind: ObjectKind, name: string, range?: ByteRangeRequest): Promise<Uint8Array> {
    const data = this.#objects.get(key(kind, name));
    if (!data) {
      throw new IvmrError(ErrorCode.NOT_FOUND, `${kind}/${name}: not found in memory store`, {
        details: { kind, name },
      });
    }
    if (!range) return data.slice();
    const part = data.subarray(range.offset, range.offset + range.length);
    if (range.into === undefined || range.into.length < part.length) return part.slice();
    range.into.set(part);
    return range.into.subarray(0, part.length);
  }

  async put(kind: ObjectKind, name: string, data: Uint8Array): Promise<void> {
    this.#objects.set(key(kind, name), data.slice());
  }

  async has(kind: ObjectKind, name: string): Promise<boolean> {
    return this.#objects.has(key(kind, name));
  }

  async *list(kind: ObjectKind): AsyncIterable<ObjectInfo> {
    const prefix = `${kind}/`;
    for (const [k, v] of [...this.#objects]) {
      if (k.startsWith(prefix)) yield { name: k.slice(prefix.length), size: v.length };
    }
  }

  async delete(kind: ObjectKind, name: string): Promise<void> {
    this.#objects.delete(key(kind, name));
  }
}

function key(kind: ObjectKind, name: string): string {
  if (!isValidObjectName(name)) {
    throw new IvmrError(ErrorCode.INVALID_ARGUMENT, `invalid object name ${JSON.stringify(name)}`);
  }
  return `${kind}/${name}`;
}
