import { NfsError, NfsErrorCode } from '../errors.js';

const LAST_FRAGMENT = 0x8000_0000;

/**
 * Reassembles ONC RPC records from a TCP byte stream (RFC 5531 §11, record marking): each
 * fragment is a 4-byte big-endian header (top bit: last fragment; low 31 bits: length) and its
 * bytes; a record is one or more fragments. Works however TCP splits the stream. A record that
 * lies inside one received chunk is passed on as a view (no copy).
 *
 * A record longer than `maxRecord` (all fragments together) throws `IVMR_RPC_RECORD_TOO_LARGE`
 * before its bytes are buffered; the connection should then be closed.
 */
export class RecordDecoder {
  readonly #maxRecord: number;
  readonly #onRecord: (record: Buffer) => void;
  readonly #chunks: Buffer[] = [];
  #buffered = 0;
  /** Length of the fragment being read, or -1 while waiting for a header. */
  #fragmentLength = -1;
  #lastFragment = false;
  readonly #fragments: Buffer[] = [];
  #recordLength = 0;

  constructor(maxRecord: number, onRecord: (record: Buffer) => void) {
    this.#maxRecord = maxRecord;
    this.#onRecord = onRecord;
  }

  /** Bytes received but not yet part of a delivered record. */
  get pendingBytes(): number {
    return this.#buffered + this.#recordLength;
  }

  /** Feeds received bytes; calls `onRecord` for every record completed by them. */
  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.#chunks.push(chunk);
    this.#buffered += chunk.length;
    for (;;) {
      if (this.#fragmentLength < 0) {
        if (this.#buffered < 4) return;
        const header = this.#take(4).readUInt32BE(0);
        this.#lastFragment = header >= LAST_FRAGMENT;
        this.#fragmentLength = this.#lastFragment ? header - LAST_FRAGMENT : header;
        if (this.#recordLength + this.#fragmentLength > this.#maxRecord) {
          throw new NfsError(
            NfsErrorCode.RECORD_TOO_LARGE,
            `RPC record of at least ${this.#recordLength + this.#fragmentLength} bytes exceeds the limit of ${this.#maxRecord}`,
          );
        }
      }
      if (this.#buffered < this.#fragmentLength) return;
      if (this.#fragmentLength > 0) {
        this.#fragments.push(this.#take(this.#fragmentLength));
        this.#recordLength += this.#fragmentLength;
      }
      this.#fragmentLength = -1;
      if (!this.#lastFragment) continue;
      const record =
        this.#fragments.length === 1
          ? this.#fragments[0]!
          : Buffer.concat(this.#fragments, this.#recordLength);
      this.#fragments.length = 0;
      this.#recordLength = 0;
      this.#onRecord(record);
    }
  }

  /** Removes `n` buffered bytes: a view when they lie in one chunk, else a copy. */
  #take(n: number): Buffer {
    const first = this.#chunks[0]!;
    if (first.length >= n) {
      const out = first.subarray(0, n);
      if (first.length === n) this.#chunks.shift();
      else this.#chunks[0] = first.subarray(n);
      this.#buffered -= n;
      return out;
    }
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      const c = this.#chunks[0]!;
      const k = Math.min(c.length, n - filled);
      c.copy(out, filled, 0, k);
      filled += k;
      if (k === c.length) this.#chunks.shift();
      else this.#chunks[0] = c.subarray(k);
    }
    this.#buffered -= n;
    return out;
  }
}

/** Frames one record as a single last fragment (for clients and tests). */
export function frameRecord(body: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(4 + body.length);
  out.writeUInt32BE(LAST_FRAGMENT + body.length, 0);
  out.set(body, 4);
  return out;
}
