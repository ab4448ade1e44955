import type { BlobEntry } from '../format/pack.js';

/** Where a blob is, as the read path needs it. */
export interface BlobLocation {
  readonly pack: string;
  readonly offset: number;
  readonly rawLength: number;
  readonly frameShift: number;
  /** Stored length of each frame (header included). A view: do not keep it past the next add. */
  readonly frameLengths: ArrayLike<number>;
}

/**
 * The in-memory index of every blob in a repository: blob id -> slot -> location. Slots are
 * small integers that stay valid for the life of the index, so block maps resolve to slot arrays
 * (an Int32Array per disk) and equal slots mean equal blobs.
 */
export class BlobIndex {
  readonly #slots = new Map<string, number>();
  readonly #ids: string[] = [];
  readonly #pack: number[] = [];
  readonly #offset: number[] = [];
  readonly #raw: number[] = [];
  readonly #shift: number[] = [];
  readonly #frameStart: number[] = [];
  readonly #frameCount: number[] = [];
  readonly #frameLengths: number[] = [];
  readonly #packNames: string[] = [];
  readonly #packNumbers = new Map<string, number>();
  /** Packs found missing from the store (pruned or repaired away): their blobs may move. */
  readonly #gone = new Set<number>();

  /** Number of distinct blobs. */
  get size(): number {
    return this.#ids.length;
  }

  /**
   * Adds the blobs of a pack. A blob already indexed keeps its first location, unless that
   * location's pack is gone ({@link markPackGone}).
   */
  addPack(pack: string, blobs: readonly BlobEntry[]): void {
    let packNo = this.#packNumbers.get(pack);
    if (packNo === undefined) {
      packNo = this.#packNames.length;
      this.#packNames.push(pack);
      this.#packNumbers.set(pack, packNo);
    }
    const gone = this.#gone.has(packNo);
    for (const b of blobs) {
      const hex = Buffer.from(b.id).toString('hex');
      const slot = this.#slots.get(hex);
      if (slot !== undefined) {
        if (!gone && this.#gone.has(this.#pack[slot]!)) this.#relocate(slot, packNo, b);
        continue;
      }
      this.#slots.set(hex, this.#ids.length);
      this.#ids.push(hex);
      this.#pack.push(packNo);
      this.#offset.push(b.offset);
      this.#raw.push(b.rawLength);
      this.#shift.push(b.frameShift);
      this.#frameStart.push(this.#frameLengths.length);
      this.#frameCount.push(b.frameLengths.length);
      for (const l of b.frameLengths) this.#frameLengths.push(l);
    }
  }

  /**
   * Records that `pack` is no longer in the store (a prune rewrote it, or it was lost). Packs
   * added from now on take over the locations of its blobs; slots do not change.
   */
  markPackGone(pack: string): void {
    const packNo = this.#packNumbers.get(pack);
    if (packNo !== undefined) this.#gone.add(packNo);
  }

  #relocate(slot: number, packNo: number, b: BlobEntry): void {
    this.#pack[slot] = packNo;
    this.#offset[slot] = b.offset;
    this.#raw[slot] = b.rawLength;
    this.#shift[slot] = b.frameShift;
    this.#frameStart[slot] = this.#frameLengths.length;
    this.#frameCount[slot] = b.frameLengths.length;
    for (const l of b.frameLengths) this.#frameLengths.push(l);
  }

  /**
   * Makes the blobs of `pack` unfindable (their slots stay allocated but `slotOf` no longer
   * returns them). Used when a pack that was being filled is abandoned.
   */
  forgetPack(pack: string): void {
    const packNo = this.#packNumbers.get(pack);
    if (packNo === undefined) return;
    for (let slot = 0; slot < this.#ids.length; slot++) {
      if (this.#pack[slot] === packNo && this.#slots.get(this.#ids[slot]!) === slot) {
        this.#slots.delete(this.#ids[slot]!);
      }
    }
  }

  /** Slot of a blob id (raw bytes or hex), or -1 when the blob is not indexed. */
  slotOf(id: Uint8Array | string): number {
    const hex =
      typeof id === 'string'
        ? id
        : Buffer.from(id.buffer, id.byteOffset, id.byteLength).toString('hex');
    return this.#slots.get(hex) ?? -1;
  }

  /** Hex blob id of a slot. */
  idOf(slot: number): string {
    const id = this.#ids[slot];
    if (id === undefined) throw new RangeError(`no blob slot ${slot}`);
    return id;
  }

  /** Location of a slot's blob. */
  location(slot: number): BlobLocation {
    const start = this.#frameStart[slot];
    if (start === undefined) throw new RangeError(`no blob slot ${slot}`);
    return {
      pack: this.#packNames[this.#pack[slot]!]!,
      offset: this.#offset[slot]!,
      rawLength: this.#raw[slot]!,
      frameShift: this.#shift[slot]!,
      frameLengths: this.#frameLengths.slice(start, start + this.#frameCount[slot]!),
    };
  }

  /** Raw length of a slot's blob. */
  rawLength(slot: number): number {
    return this.#raw[slot] ?? 0;
  }

  /** Calls `fn` for every findable blob slot with the name of its pack. */
  forEachSlot(fn: (slot: number, pack: string) => void): void {
    for (let slot = 0; slot < this.#ids.length; slot++) {
      if (this.#slots.get(this.#ids[slot]!) === slot) fn(slot, this.#packNames[this.#pack[slot]!]!);
    }
  }

  /** Names of all packs that hold indexed blobs. */
  packs(): string[] {
    return [...this.#packNames];
  }
}
