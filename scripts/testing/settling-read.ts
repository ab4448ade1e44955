import { expect } from 'vitest';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A gate a test holds one part of a read or write behind (see {@link expectSettlesAfterItsParts}). */
export class Hold {
  /** True once the held part reached the gate. */
  reached = false;
  /** Resolves when the held part reaches the gate. */
  readonly started: Promise<void>;
  readonly #gate: Promise<void>;
  #open!: () => void;
  #start!: () => void;

  constructor() {
    this.#gate = new Promise<void>((resolve) => {
      this.#open = resolve;
    });
    this.started = new Promise<void>((resolve) => {
      this.#start = resolve;
    });
  }

  /** Marks the part as held and returns what it waits for. */
  wait(): Promise<void> {
    this.reached = true;
    this.#start();
    return this.#gate;
  }

  /** Lets the held part go on. */
  release(): void {
    this.#open();
  }
}

/**
 * Checks the `BlockSource.read` rule that a read settles only once it has stopped writing into
 * its buffer: `read` (into `into`) has a part that fails at once and a part held by `hold`. The
 * read must still be pending while the held part is, must then reject with an error matching
 * `error`, and `into` must not change afterwards.
 */
export async function expectSettlesAfterItsParts(
  read: Promise<unknown>,
  into: Uint8Array,
  hold: Hold,
  error: RegExp | object,
): Promise<void> {
  let settled = false;
  const watched = read.finally(() => {
    settled = true;
  });
  watched.catch(() => {});
  await sleep(50);
  expect(hold.reached, 'the held part of the read started').toBe(true);
  // A caller reuses the buffer once the read settles, also after a failure.
  expect(settled, 'the read settled while a part of it could still write its buffer').toBe(false);
  hold.release();
  if (error instanceof RegExp) await expect(watched).rejects.toThrow(error);
  else await expect(watched).rejects.toMatchObject(error);
  const after = into.slice();
  await sleep(20);
  expect(Buffer.compare(into, after), 'the buffer changed after the read rejected').toBe(0);
}
