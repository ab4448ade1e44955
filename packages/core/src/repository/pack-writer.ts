import { randomBytes } from 'node:crypto';
import { BinaryWriter } from '../format/binary.js';
import { CODEC_ID, type CodecName, compressFrame, frameChecksum } from '../format/codec.js';
import type { IndexedPack } from '../format/index-file.js';
import { type BlobEntry, encodePackTrailer, FRAME_HEADER_SIZE } from '../format/pack.js';
import type { StoreAdapter } from '../store/adapter.js';

/**
 * Collects new blobs into pack files of about `packSize` bytes and stores each full pack with
 * one atomic put. Never holds more than one pack in memory.
 */
export class PackWriter {
  readonly #store: StoreAdapter;
  readonly #packSize: number;
  readonly #frameShift: number;
  #chunks: Uint8Array[] = [];
  #entries: BlobEntry[] = [];
  #bytes = 0;
  #pack: string | null = null;

  constructor(store: StoreAdapter, packSize: number, frameSize: number) {
    this.#store = store;
    this.#packSize = packSize;
    this.#frameShift = Math.log2(frameSize);
  }

  /** Name of the pack being filled, or null when no blob waits. */
  get currentPack(): string | null {
    return this.#pack;
  }

  /**
   * Frames, compresses and appends a blob. A frame that does not shrink is stored raw.
   * Returns the blob's entry and the name of the pack it goes to (not stored until that pack is
   * flushed).
   */
  add(id: Uint8Array, raw: Uint8Array, codec: CodecName): { pack: string; entry: BlobEntry } {
    const frameSize = 2 ** this.#frameShift;
    const frameLengths: number[] = [];
    const offset = this.#bytes;
    for (let pos = 0; pos < raw.length; pos += frameSize) {
      const piece = raw.subarray(pos, Math.min(pos + frameSize, raw.length));
      let used: CodecName = codec;
      let payload = compressFrame(codec, piece);
      if (payload.length >= piece.length) {
        used = 'none';
        payload = piece.slice();
      }
      const header = new BinaryWriter(FRAME_HEADER_SIZE);
      header.u8(CODEC_ID[used]).big64(frameChecksum(CODEC_ID[used], payload));
      this.#chunks.push(Buffer.from(header.view()), payload);
      frameLengths.push(FRAME_HEADER_SIZE + payload.length);
      this.#bytes += FRAME_HEADER_SIZE + payload.length;
    }
    const entry: BlobEntry = {
      id: Buffer.from(id),
      offset,
      rawLength: raw.length,
      frameShift: this.#frameShift,
      frameLengths,
    };
    this.#entries.push(entry);
    this.#pack ??= randomBytes(32).toString('hex');
    return { pack: this.#pack, entry };
  }

  /** Appends a blob whose frames are already stored elsewhere (pack rewrite: no recompression). */
  addStored(entry: BlobEntry, stored: Uint8Array): void {
    this.#entries.push({ ...entry, offset: this.#bytes });
    this.#chunks.push(stored);
    this.#bytes += stored.length;
    this.#pack ??= randomBytes(32).toString('hex');
  }

  /** True when the current pack reached the target size and should be flushed. */
  get full(): boolean {
    return this.#bytes >= this.#packSize;
  }

  /** Stores the current pack, if any blob waits, and returns what it holds. */
  async flush(): Promise<IndexedPack | null> {
    if (this.#entries.length === 0) return null;
    const trailer = encodePackTrailer(this.#entries);
    const bytes = Buffer.concat([...this.#chunks, trailer]);
    const pack = this.#pack!;
    const blobs = this.#entries;
    // Until the put succeeds the pack stays current, so a failed backup knows to forget its blobs.
    await this.#store.put('pack', pack, bytes);
    this.#chunks = [];
    this.#entries = [];
    this.#bytes = 0;
    this.#pack = null;
    return { pack, size: bytes.length, blobs };
  }
}
