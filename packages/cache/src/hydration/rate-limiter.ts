import { setTimeout as sleep } from 'node:timers/promises';

/**
 * A token bucket over bytes: `take(n)` waits until `n` bytes fit the rate. The bucket holds at
 * most `burst` bytes, so a pause does not buy a later burst beyond it. A rate of 0 or less (or
 * infinite) means no limit.
 */
export class RateLimiter {
  #rate: number;
  readonly #burst: number;
  #tokens: number;
  #at = performance.now();

  constructor(bytesPerSec: number, burst: number) {
    this.#rate = bytesPerSec;
    this.#burst = burst;
    this.#tokens = burst;
  }

  /** Changes the rate (0 = no limit). */
  set rate(bytesPerSec: number) {
    this.#rate = bytesPerSec;
  }

  get rate(): number {
    return this.#rate;
  }

  async take(n: number): Promise<void> {
    if (!(this.#rate > 0) || this.#rate === Number.POSITIVE_INFINITY) return;
    const now = performance.now();
    this.#tokens = Math.min(this.#burst, this.#tokens + ((now - this.#at) / 1000) * this.#rate);
    this.#at = now;
    this.#tokens -= n;
    if (this.#tokens < 0) await sleep((-this.#tokens / this.#rate) * 1000);
  }
}
