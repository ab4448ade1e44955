import { LZ4_DECODE_WASM } from './lz4-wasm-bytes.js';

/** The exports of lz4-decode.c. */
interface Lz4Exports {
  readonly memory: { readonly buffer: ArrayBuffer; grow(pages: number): number };
  readonly __heap_base: { readonly value: number };
  slack(): number;
  decode(src: number, srcLength: number, dst: number, dstCapacity: number): number;
}

/** The part of the WebAssembly API used here (Node's type declarations lack it). */
interface WasmApi {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: object) => { readonly exports: unknown };
}
const wasm = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;

const PAGE = 65536;
/** The size prefix lz4-napi's block format puts before the LZ4 block (u32, little-endian). */
const PREFIX = 4;
/** The word size whose alignment copies keep (see `decodeInto`). */
const ALIGN = 8;

const ERRORS: Readonly<Record<number, string>> = {
  [-1]: 'a literal run or match runs past the end of the input or the output',
  [-2]: 'a match refers to before the start of the output',
  [-3]: 'the input ends inside a sequence',
};

/**
 * The LZ4 block decoder of lz4-decode.c, run as WebAssembly: it decodes into a caller's buffer,
 * so a read allocates nothing. lz4-napi's decoder returns a new Buffer per frame and reports
 * each one to V8 as external memory; at a few hundred MB/s of cold reads that alone made V8 run
 * a full garbage collection every 40-50 ms, a pause each time for every read in flight.
 *
 * One instance, used synchronously: an input area and an output area in the module's memory,
 * grown when a frame needs more.
 */
class Lz4Decoder {
  readonly #x: Lz4Exports;
  #src = 0;
  #dst = 0;
  #srcCapacity = 0;
  #dstCapacity = 0;
  readonly #slack: number;

  constructor() {
    const module = new wasm.Module(Buffer.from(LZ4_DECODE_WASM, 'base64'));
    this.#x = new wasm.Instance(module, {}).exports as unknown as Lz4Exports;
    this.#slack = this.#x.slack();
  }

  /**
   * Decodes `payload` (lz4-napi's format: the raw length as a u32 little-endian, then one LZ4
   * block) into all of `out`. Throws a plain Error unless it decodes to exactly `out.length`
   * bytes.
   */
  decodeInto(payload: Uint8Array, out: Uint8Array): void {
    if (payload.length < PREFIX)
      throw new Error(`${payload.length} bytes cannot hold an LZ4 block`);
    const declared =
      (payload[0]! | (payload[1]! << 8) | (payload[2]! << 16) | (payload[3]! << 24)) >>> 0;
    if (declared !== out.length) {
      throw new Error(`frame decoded to ${declared} bytes, expected ${out.length}`);
    }
    const blockLength = payload.length - PREFIX;
    this.#reserve(blockLength + ALIGN, out.length + ALIGN);
    const memory = new Uint8Array(this.#x.memory.buffer);
    // Each area starts where its bytes have the alignment they have outside, modulo a word:
    // V8 copies to and from SharedArrayBuffer memory (a decode pool's buffers) a word at a
    // time only when both sides agree, and byte by byte (8x slower) when they do not.
    const src = this.#src + ((payload.byteOffset + PREFIX) % ALIGN);
    const dst = this.#dst + (out.byteOffset % ALIGN);
    memory.set(payload.subarray(PREFIX), src);
    const n = this.#x.decode(src, blockLength, dst, out.length);
    if (n < 0) throw new Error(`damaged LZ4 block: ${ERRORS[n] ?? `error ${n}`}`);
    if (n !== out.length) throw new Error(`frame decoded to ${n} bytes, expected ${out.length}`);
    out.set(memory.subarray(dst, dst + n));
  }

  /** Makes room for `src` bytes of input and `dst` of output, each followed by the slack. */
  #reserve(src: number, dst: number): void {
    if (src <= this.#srcCapacity && dst <= this.#dstCapacity) return;
    const round = (n: number) => Math.ceil(Math.max(n, PAGE) / PAGE) * PAGE;
    this.#srcCapacity = Math.max(this.#srcCapacity, round(src));
    this.#dstCapacity = Math.max(this.#dstCapacity, round(dst));
    const base = this.#x.__heap_base.value;
    this.#src = Math.ceil(base / 16) * 16;
    this.#dst = this.#src + this.#srcCapacity + this.#slack;
    const end = this.#dst + this.#dstCapacity + this.#slack;
    const have = this.#x.memory.buffer.byteLength;
    if (end > have) this.#x.memory.grow(Math.ceil((end - have) / PAGE));
  }
}

let decoder: Lz4Decoder | undefined;

/**
 * Decodes an lz4-napi block (u32 little-endian raw length, then one LZ4 block) into `out`,
 * which must be exactly its raw length. Throws a plain Error on a damaged block or a length
 * mismatch; nothing is written outside `out`.
 */
export function lz4DecodeInto(payload: Uint8Array, out: Uint8Array): void {
  decoder ??= new Lz4Decoder();
  decoder.decodeInto(payload, out);
}
