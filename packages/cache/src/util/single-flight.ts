/**
 * Runs at most one load per key at a time: a call for a key whose load is still running gets
 * the same promise (restic's LoadBlob idea; STYLE.md rule 12).
 */
export class SingleFlight<K, V> {
  readonly #running = new Map<K, Promise<V>>();

  /** The running load of `key`, or a new one started with `load`. */
  run(key: K, load: () => Promise<V>): Promise<V> {
    const running = this.#running.get(key);
    if (running !== undefined) return running;
    const p = load().finally(() => {
      if (this.#running.get(key) === p) this.#running.delete(key);
    });
    this.#running.set(key, p);
    return p;
  }

  /** The load of `key` in progress, if any. */
  get(key: K): Promise<V> | undefined {
    return this.#running.get(key);
  }

  /** Number of loads in progress. */
  get size(): number {
    return this.#running.size;
  }

  /** Settles when every load now running has settled. */
  async idle(): Promise<void> {
    while (this.#running.size > 0) await Promise.allSettled([...this.#running.values()]);
  }
}
