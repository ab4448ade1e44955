/**
 * Parents of directories, learned from LOOKUP, READDIRPLUS, MKDIR and RENAME, so that LOOKUP of
 * `..` and the `..` entry of READDIR can name the real parent: the adapter interface has no way
 * to ask for it. Bounded: the oldest entries go first. A directory whose parent is unknown (a
 * client holding a handle from before a restart that has not looked anything up since) gets the
 * export's root as its parent; clients resolve paths by LOOKUP from the root, so this is rare.
 */
export class ParentMap {
  readonly #parents = new Map<bigint, bigint>();
  readonly #max: number;

  constructor(max = 65_536) {
    this.#max = max;
  }

  /** The parent of directory `id`, if known. */
  get(id: bigint): bigint | undefined {
    return this.#parents.get(id);
  }

  /** Remembers that directory `id` lives in directory `parent`. */
  set(id: bigint, parent: bigint): void {
    if (id === parent) return;
    if (this.#parents.get(id) === parent) return;
    this.#parents.delete(id);
    this.#parents.set(id, parent);
    if (this.#parents.size > this.#max) {
      this.#parents.delete(this.#parents.keys().next().value as bigint);
    }
  }
}
