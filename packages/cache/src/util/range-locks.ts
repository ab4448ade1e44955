interface Waiter {
  readonly exclusive: boolean;
  pending: number;
  grant: () => void;
}

interface UnitState {
  readers: number;
  writer: boolean;
  readonly queue: Waiter[];
}

/**
 * Shared/exclusive locks on numbered units (grains). A request for a range of units is
 * registered on all of them in one synchronous step, and each unit serves requests in arrival
 * order; so every request waits only for earlier ones and no two requests can deadlock, whatever
 * ranges overlap.
 */
export class RangeLocks {
  readonly #units = new Map<number, UnitState>();

  /**
   * Locks units `first..last` (inclusive) and resolves to a release function, which must be
   * called exactly once.
   */
  lock(first: number, last: number, exclusive: boolean): Promise<() => void> | (() => void) {
    const waiter: Waiter = { exclusive, pending: 0, grant: () => {} };
    const blocked: UnitState[] = [];
    for (let u = first; u <= last; u++) {
      let st = this.#units.get(u);
      if (st === undefined) {
        st = { readers: 0, writer: false, queue: [] };
        this.#units.set(u, st);
      }
      const free = st.queue.length === 0 && !st.writer && (!exclusive || st.readers === 0);
      if (free) {
        if (exclusive) st.writer = true;
        else st.readers++;
      } else {
        waiter.pending++;
        blocked.push(st);
      }
    }
    const release = () => this.#release(first, last, exclusive);
    if (blocked.length === 0) return release;
    return new Promise((resolve) => {
      waiter.grant = () => resolve(release);
      for (const st of blocked) st.queue.push(waiter);
    });
  }

  #release(first: number, last: number, exclusive: boolean): void {
    for (let u = first; u <= last; u++) {
      const st = this.#units.get(u)!;
      if (exclusive) st.writer = false;
      else st.readers--;
      while (st.queue.length > 0 && !st.writer) {
        const head = st.queue[0]!;
        if (head.exclusive && st.readers > 0) break;
        st.queue.shift();
        if (head.exclusive) st.writer = true;
        else st.readers++;
        if (--head.pending === 0) head.grant();
        if (head.exclusive) break;
      }
      if (st.readers === 0 && !st.writer && st.queue.length === 0) this.#units.delete(u);
    }
  }

  /** Units with a holder or a waiter (0 when idle; for tests). */
  get busyUnits(): number {
    return this.#units.size;
  }
}
