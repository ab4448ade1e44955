/** A held or wanted range of units. */
interface Request {
  readonly first: number;
  readonly last: number;
  readonly exclusive: boolean;
  grant?: () => void;
}

/** True when two requests cover a common unit and at least one is exclusive. */
function conflicts(a: Request, b: Request): boolean {
  return a.first <= b.last && b.first <= a.last && (a.exclusive || b.exclusive);
}

/** True when two requests cover a common unit. */
function overlaps(a: Request, b: Request): boolean {
  return a.first <= b.last && b.first <= a.last;
}

/**
 * Shared/exclusive locks on ranges of numbered units (grains). A request takes its whole range
 * at once or waits for all of it, and waits behind every earlier waiting request it overlaps; so
 * each unit serves requests in arrival order, no request holds part of a range while it waits,
 * and no two requests can deadlock, whatever ranges overlap.
 *
 * The cost of a lock or a release grows with the number of requests held or waiting (the calls
 * in flight), not with the length of the range: a 1 MiB read of 4 KiB grains is one entry.
 */
export class RangeLocks {
  readonly #held: Request[] = [];
  readonly #waiting: Request[] = [];

  /**
   * Locks units `first..last` (inclusive) and resolves to a release function, which must be
   * called exactly once.
   */
  lock(first: number, last: number, exclusive: boolean): Promise<() => void> | (() => void) {
    const req: Request = { first, last, exclusive };
    const release = () => this.#release(req);
    if (this.#grantable(req, this.#waiting.length)) {
      this.#held.push(req);
      return release;
    }
    return new Promise((resolve) => {
      req.grant = () => resolve(release);
      this.#waiting.push(req);
    });
  }

  /** True when no holder conflicts with `req` and none of the first `before` waiters overlaps. */
  #grantable(req: Request, before: number): boolean {
    for (const h of this.#held) if (conflicts(h, req)) return false;
    for (let i = 0; i < before; i++) if (overlaps(this.#waiting[i]!, req)) return false;
    return true;
  }

  #release(req: Request): void {
    const i = this.#held.indexOf(req);
    if (i < 0) throw new Error('RangeLocks: released twice');
    this.#held.splice(i, 1);
    // Grant, in arrival order, every waiter that no holder and no earlier waiter stands in front of.
    for (let w = 0; w < this.#waiting.length; ) {
      const next = this.#waiting[w]!;
      if (!this.#grantable(next, w)) {
        w++;
        continue;
      }
      this.#waiting.splice(w, 1);
      this.#held.push(next);
      next.grant!();
    }
  }

  /** Requests held or waiting (0 when idle; for tests). */
  get busyRanges(): number {
    return this.#held.length + this.#waiting.length;
  }
}
