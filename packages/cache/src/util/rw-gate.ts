/**
 * A shared/exclusive gate with FIFO fairness: writes hold it shared, a flush exclusive. Once an
 * exclusive holder waits, later shared requests wait behind it, so a stream of writes cannot
 * starve a flush.
 */
export class RwGate {
  #shared = 0;
  #exclusive = false;
  readonly #queue: { exclusive: boolean; grant: () => void }[] = [];

  /** Runs `fn` holding the gate shared. */
  async shared<T>(fn: () => Promise<T>): Promise<T> {
    if (this.#exclusive || this.#queue.length > 0) {
      await new Promise<void>((grant) => this.#queue.push({ exclusive: false, grant }));
    } else {
      this.#shared++;
    }
    try {
      return await fn();
    } finally {
      this.#shared--;
      this.#next();
    }
  }

  /** Runs `fn` holding the gate alone. */
  async exclusive<T>(fn: () => Promise<T>): Promise<T> {
    if (this.#exclusive || this.#shared > 0 || this.#queue.length > 0) {
      await new Promise<void>((grant) => this.#queue.push({ exclusive: true, grant }));
    } else {
      this.#exclusive = true;
    }
    try {
      return await fn();
    } finally {
      this.#exclusive = false;
      this.#next();
    }
  }

  #next(): void {
    while (this.#queue.length > 0 && !this.#exclusive) {
      const head = this.#queue[0]!;
      if (head.exclusive) {
        if (this.#shared > 0) return;
        this.#queue.shift();
        this.#exclusive = true;
        head.grant();
        return;
      }
      this.#queue.shift();
      this.#shared++;
      head.grant();
    }
  }
}
