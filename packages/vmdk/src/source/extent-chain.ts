import { type BlockSource, checkReadRange, ErrorCode, IvmrError, settleAll } from '@ivmr/core';

/** One extent of a disk: `size` bytes from `source` at `start`, or zeros when source is null. */
export interface ChainPart {
  /** Bytes of the extent. */
  readonly size: number;
  /** Where its bytes come from; null for a ZERO extent. */
  readonly source: BlockSource | null;
  /** Where the extent starts in its source. */
  readonly start: number;
}

/**
 * A disk made of extents end to end (a descriptor's extent lines) as one `BlockSource`.
 * Bytes of an extent past the end of its source read as zeros, like qemu reads a flat file
 * that is shorter than its extent; openers check how short a file may be.
 */
export class ExtentChain implements BlockSource {
  readonly size: number;
  readonly #parts: readonly ChainPart[];
  /** Start of each part in the disk. */
  readonly #starts: number[];
  #closed = false;

  constructor(parts: readonly ChainPart[]) {
    this.#parts = parts;
    this.#starts = [];
    let at = 0;
    for (const p of parts) {
      this.#starts.push(at);
      at += p.size;
    }
    this.size = at;
  }

  /** Reads as `BlockSource.read` does, from the extents the range covers, concurrently. */
  async read(offset: number, length: number, into?: Uint8Array): Promise<Uint8Array> {
    if (this.#closed) throw new IvmrError(ErrorCode.CLOSED, 'VMDK is closed');
    checkReadRange(this.size, offset, length, into);
    const out = into ? into.subarray(0, length) : new Uint8Array(length);
    const tasks: Promise<unknown>[] = [];
    let pos = offset;
    const end = offset + length;
    let i = this.#partAt(offset);
    while (pos < end) {
      const part = this.#parts[i]!;
      const partStart = this.#starts[i]!;
      const n = Math.min(end, partStart + part.size) - pos;
      const dst = pos - offset;
      const from = part.start + (pos - partStart);
      const available = part.source ? Math.max(0, Math.min(n, part.source.size - from)) : 0;
      if (available > 0)
        tasks.push(part.source!.read(from, available, out.subarray(dst, dst + available)));
      if (available < n) out.fill(0, dst + available, dst + n);
      pos += n;
      i++;
    }
    await settleAll(tasks);
    return out;
  }

  /** Index of the part holding byte `offset` (binary search over the starts). */
  #partAt(offset: number): number {
    let lo = 0;
    let hi = this.#parts.length - 1;
    while (lo < hi) {
      const mid = Math.ceil((lo + hi) / 2);
      if (this.#starts[mid]! <= offset) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  /** Closes every extent's source. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await Promise.all(this.#parts.map((p) => p.source?.close?.()));
  }
}
