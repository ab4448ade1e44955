const TWO_32 = 0x1_0000_0000;
const PAD = Buffer.alloc(4);

/**
 * Encodes XDR (RFC 4506) into one growable, reusable buffer. A reply is written by
 * `reset()`, `reserve(4)` for the record mark, the fields, and a patch of the mark; the buffer
 * is reused for the next reply, so steady-state encoding allocates nothing.
 *
 * `view()` returns a view of the written bytes that is valid only until the next `reset()`.
 */
export class XdrWriter {
  buf: Buffer;
  pos = 0;

  constructor(initial = 8192) {
    this.buf = Buffer.allocUnsafe(initial);
  }

  /** Starts over, keeping the buffer. */
  reset(): this {
    this.pos = 0;
    return this;
  }

  #room(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < this.pos + n) cap *= 2;
    const next = Buffer.allocUnsafe(cap);
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }

  /** Skips `n` bytes to be patched later; returns their position. */
  reserve(n: number): number {
    this.#room(n);
    const at = this.pos;
    this.pos += n;
    return at;
  }

  u32(v: number): this {
    this.#room(4);
    this.buf.writeUInt32BE(v, this.pos);
    this.pos += 4;
    return this;
  }

  i32(v: number): this {
    this.#room(4);
    this.buf.writeInt32BE(v, this.pos);
    this.pos += 4;
    return this;
  }

  bool(v: boolean): this {
    return this.u32(v ? 1 : 0);
  }

  /** unsigned hyper from a bigint. */
  u64(v: bigint): this {
    this.#room(8);
    this.buf.writeBigUInt64BE(v, this.pos);
    this.pos += 8;
    return this;
  }

  /** unsigned hyper from a non-negative safe integer (no 32-bit bitwise operations). */
  u64n(v: number): this {
    const hi = Math.floor(v / TWO_32);
    this.#room(8);
    this.buf.writeUInt32BE(hi, this.pos);
    this.buf.writeUInt32BE(v - hi * TWO_32, this.pos + 4);
    this.pos += 8;
    return this;
  }

  /** Fixed-length opaque (padded to 4 bytes). */
  fixed(data: Uint8Array): this {
    const pad = (4 - (data.length % 4)) % 4;
    this.#room(data.length + pad);
    this.buf.set(data, this.pos);
    this.pos += data.length;
    if (pad) {
      PAD.copy(this.buf, this.pos, 0, pad);
      this.pos += pad;
    }
    return this;
  }

  /** Variable-length opaque: length, bytes, padding. */
  opaque(data: Uint8Array): this {
    return this.u32(data.length).fixed(data);
  }

  /** string as UTF-8 opaque. */
  string(s: string): this {
    const n = Buffer.byteLength(s, 'utf8');
    const pad = (4 - (n % 4)) % 4;
    this.#room(4 + n + pad);
    this.u32(n);
    this.buf.write(s, this.pos, 'utf8');
    this.pos += n;
    if (pad) {
      PAD.copy(this.buf, this.pos, 0, pad);
      this.pos += pad;
    }
    return this;
  }

  /** Writes a u32 at an earlier position (record marks, counts known only at the end). */
  patchU32(at: number, v: number): void {
    this.buf.writeUInt32BE(v, at);
  }

  /** The bytes written so far (a view, valid until the next reset). */
  view(): Buffer {
    return this.buf.subarray(0, this.pos);
  }
}
