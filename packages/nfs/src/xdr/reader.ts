import { xdrError } from '../errors.js';

const TWO_32 = 0x1_0000_0000;

/**
 * Decodes XDR (RFC 4506) from a buffer without copying: opaque data comes back as views.
 * Every read checks the bounds first, and every variable length is checked against both the
 * bytes that remain and the caller's limit before anything is allocated, so truncated or hostile
 * input raises `IVMR_XDR` and never allocates more than the input holds.
 */
export class XdrReader {
  buf: Buffer;
  pos: number;
  end: number;

  constructor(buf: Buffer, start = 0, end = buf.length) {
    this.buf = buf;
    this.pos = start;
    this.end = end;
  }

  /** Bytes left. */
  get remaining(): number {
    return this.end - this.pos;
  }

  #need(n: number, what: string): void {
    if (n > this.end - this.pos) {
      throw xdrError(`truncated XDR: ${what} needs ${n} bytes, ${this.end - this.pos} left`);
    }
  }

  /** unsigned int */
  u32(what = 'uint32'): number {
    this.#need(4, what);
    const v = this.buf.readUInt32BE(this.pos);
    this.pos += 4;
    return v;
  }

  /** int */
  i32(what = 'int32'): number {
    this.#need(4, what);
    const v = this.buf.readInt32BE(this.pos);
    this.pos += 4;
    return v;
  }

  /** bool: only 0 and 1 are valid. */
  bool(what = 'bool'): boolean {
    const v = this.u32(what);
    if (v > 1) throw xdrError(`${what}: bool must be 0 or 1, got ${v}`);
    return v === 1;
  }

  /** unsigned hyper as bigint (exact for all 64-bit values). */
  u64(what = 'uint64'): bigint {
    this.#need(8, what);
    const v = this.buf.readBigUInt64BE(this.pos);
    this.pos += 8;
    return v;
  }

  /**
   * unsigned hyper as a number, for sizes and offsets: exact up to 2^53 - 1. Larger values are
   * clamped to `Number.MAX_SAFE_INTEGER` (no file ivmr serves comes near it, so the clamped
   * value behaves as "past the end").
   */
  u64n(what = 'uint64'): number {
    this.#need(8, what);
    const hi = this.buf.readUInt32BE(this.pos);
    const lo = this.buf.readUInt32BE(this.pos + 4);
    this.pos += 8;
    const v = hi * TWO_32 + lo;
    return v > Number.MAX_SAFE_INTEGER ? Number.MAX_SAFE_INTEGER : v;
  }

  /** Fixed-length opaque of `n` bytes (plus padding) as a view. */
  fixed(n: number, what = 'opaque'): Buffer {
    const padded = n + ((4 - (n % 4)) % 4);
    this.#need(padded, what);
    const v = this.buf.subarray(this.pos, this.pos + n);
    this.pos += padded;
    return v;
  }

  /** Variable-length opaque<max> as a view. */
  opaque(max: number, what = 'opaque'): Buffer {
    const n = this.u32(`${what} length`);
    if (n > max) throw xdrError(`${what}: length ${n} exceeds its limit ${max}`);
    return this.fixed(n, what);
  }

  /** string<max> decoded as UTF-8. */
  string(max: number, what = 'string'): string {
    return this.opaque(max, what).toString('utf8');
  }

  /** Skips `n` bytes (plus padding). */
  skip(n: number, what = 'data'): void {
    this.fixed(n, what);
  }
}
