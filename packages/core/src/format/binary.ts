import { ErrorCode, IvmrError } from '../errors.js';

const TWO_32 = 0x1_0000_0000;

/**
 * Appends big-endian fields to a growing buffer. Used for metadata objects only (pack headers,
 * index, block maps), never on the read path.
 */
export class BinaryWriter {
  #buf: Buffer;
  #len = 0;

  constructor(initial = 4096) {
    this.#buf = Buffer.allocUnsafe(initial);
  }

  get length(): number {
    return this.#len;
  }

  #reserve(n: number): void {
    if (this.#len + n <= this.#buf.length) return;
    let cap = this.#buf.length * 2;
    while (cap < this.#len + n) cap *= 2;
    const next = Buffer.allocUnsafe(cap);
    this.#buf.copy(next, 0, 0, this.#len);
    this.#buf = next;
  }

  u8(v: number): this {
    this.#reserve(1);
    this.#buf.writeUInt8(v, this.#len);
    this.#len += 1;
    return this;
  }

  u16(v: number): this {
    this.#reserve(2);
    this.#buf.writeUInt16BE(v, this.#len);
    this.#len += 2;
    return this;
  }

  u32(v: number): this {
    this.#reserve(4);
    this.#buf.writeUInt32BE(v, this.#len);
    this.#len += 4;
    return this;
  }

  /** Unsigned 64-bit from a safe integer, written as two u32 halves (no bitwise ops). */
  u64(v: number): this {
    if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`u64 out of range: ${v}`);
    const hi = Math.floor(v / TWO_32);
    return this.u32(hi).u32(v - hi * TWO_32);
  }

  big64(v: bigint): this {
    this.#reserve(8);
    this.#buf.writeBigUInt64BE(v, this.#len);
    this.#len += 8;
    return this;
  }

  bytes(b: Uint8Array): this {
    this.#reserve(b.length);
    this.#buf.set(b, this.#len);
    this.#len += b.length;
    return this;
  }

  /** A string as u16 length + UTF-8 bytes. */
  str(s: string): this {
    const b = Buffer.from(s, 'utf8');
    if (b.length > 0xffff) throw new RangeError('string too long');
    return this.u16(b.length).bytes(b);
  }

  /** The written bytes (a view into the internal buffer: copy before writing more). */
  view(): Buffer {
    return this.#buf.subarray(0, this.#len);
  }
}

/**
 * Reads big-endian fields with a bounds check on every access. Every length read from the data
 * must be checked with {@link BinaryReader.need} before anything is allocated for it: a bad
 * length is an `IVMR_FORMAT` error naming `what`, never a huge allocation.
 */
export class BinaryReader {
  readonly #buf: Buffer;
  #pos = 0;
  readonly what: string;

  constructor(bytes: Uint8Array, what: string) {
    this.#buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.what = what;
  }

  get position(): number {
    return this.#pos;
  }

  get remaining(): number {
    return this.#buf.length - this.#pos;
  }

  /** Throws `IVMR_FORMAT` unless `n` more bytes are available. */
  need(n: number, field: string): void {
    if (!Number.isSafeInteger(n) || n < 0 || n > this.remaining) {
      throw formatError(
        this.what,
        `${field} needs ${n} bytes, ${this.remaining} left at ${this.#pos}`,
      );
    }
  }

  u8(field: string): number {
    this.need(1, field);
    return this.#buf.readUInt8(this.#pos++);
  }

  u16(field: string): number {
    this.need(2, field);
    const v = this.#buf.readUInt16BE(this.#pos);
    this.#pos += 2;
    return v;
  }

  u32(field: string): number {
    this.need(4, field);
    const v = this.#buf.readUInt32BE(this.#pos);
    this.#pos += 4;
    return v;
  }

  u64(field: string): number {
    const hi = this.u32(field);
    const lo = this.u32(field);
    const v = hi * TWO_32 + lo;
    if (!Number.isSafeInteger(v)) throw formatError(this.what, `${field} is beyond 2^53`);
    return v;
  }

  big64(field: string): bigint {
    this.need(8, field);
    const v = this.#buf.readBigUInt64BE(this.#pos);
    this.#pos += 8;
    return v;
  }

  /** A view of the next `n` bytes (not a copy). */
  bytes(n: number, field: string): Buffer {
    this.need(n, field);
    const v = this.#buf.subarray(this.#pos, this.#pos + n);
    this.#pos += n;
    return v;
  }

  str(field: string): string {
    const n = this.u16(field);
    return this.bytes(n, field).toString('utf8');
  }

  /** Throws unless every byte was consumed. */
  end(): void {
    if (this.remaining !== 0)
      throw formatError(this.what, `${this.remaining} unexpected trailing bytes`);
  }
}

/** An `IVMR_FORMAT` error about the object `what`. */
export function formatError(what: string, problem: string): IvmrError {
  return new IvmrError(ErrorCode.FORMAT, `${what}: ${problem}`, { details: { object: what } });
}
