/** A set of chunk numbers `0..capacity-1` as a bitset, with its count. */
export class ChunkSet {
  #words: Uint32Array;
  #count = 0;

  constructor(capacity: number) {
    this.#words = new Uint32Array(Math.ceil(capacity / 32));
  }

  get count(): number {
    return this.#count;
  }

  has(c: number): boolean {
    const w = this.#words[c >>> 5];
    return w !== undefined && (w & (1 << (c & 31))) !== 0;
  }

  add(c: number): void {
    const i = c >>> 5;
    if (i >= this.#words.length) {
      const grown = new Uint32Array(Math.max(i + 1, this.#words.length * 2));
      grown.set(this.#words);
      this.#words = grown;
    }
    const bit = 1 << (c & 31);
    if ((this.#words[i]! & bit) === 0) {
      this.#words[i]! |= bit;
      this.#count++;
    }
  }

  delete(c: number): void {
    const i = c >>> 5;
    const bit = 1 << (c & 31);
    if (i < this.#words.length && (this.#words[i]! & bit) !== 0) {
      this.#words[i]! &= ~bit;
      this.#count--;
    }
  }

  /** Removes every chunk from `from` on. */
  truncate(from: number): void {
    for (const c of [...this.values(from)]) this.delete(c);
  }

  /** The chunks in the set, ascending, from `from` on. */
  *values(from = 0): Generator<number> {
    for (let i = from >>> 5; i < this.#words.length; i++) {
      let w = this.#words[i]!;
      if (w === 0) continue;
      for (let b = 0; w !== 0; b++, w >>>= 1) {
        const c = i * 32 + b;
        if ((w & 1) !== 0 && c >= from) yield c;
      }
    }
  }

  /** The set as runs `[first, count]`, for the progress file. */
  toRuns(): [number, number][] {
    const runs: [number, number][] = [];
    for (const c of this.values()) {
      const last = runs.at(-1);
      if (last && last[0] + last[1] === c) last[1]++;
      else runs.push([c, 1]);
    }
    return runs;
  }
}
