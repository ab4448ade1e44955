import { ErrorCode, isIvmrError } from '@ivmr/core';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { WriteOverlay } from '../src/index.js';
import { ReadCache } from '../src/read-cache/read-cache.js';
import { expectBytes } from './support/bytes.js';
import { CrashFs } from './support/crash-fs.js';
import { numRuns } from './support/fc.js';
import { randomBytesFrom } from './support/prng.js';
import { ReadOnlyBase } from './support/read-only-base.js';

// The model: the disk is a plain byte array (`live`), and `flushed` is a copy taken at every
// completed flush. Whatever the overlay does with grains, slots, journal records, checkpoints
// and the read cache beneath it, a read must return `live`, and the state found after a crash
// must be exactly `flushed`: every flushed write back, no unflushed write even partly. When the
// volume is squeezed, a change may fail with IVMR_NOSPC, and then it must have changed nothing;
// a flush must never fail for lack of space (its journal room was reserved by the writes).

interface Model {
  live: Uint8Array;
  flushed: Uint8Array;
  /** Bytes past this offset read as zeros where the base shows through (shrinking sets it). */
  baseLimit: number;
  flushedBaseLimit: number;
  base: Uint8Array;
  /** A change happened since the overlay was opened: a crash must change the verifier. */
  mutated: boolean;
}

interface Real {
  fs: CrashFs;
  overlay: WriteOverlay;
  cache: ReadCache;
  base: ReadOnlyBase;
  opts: Config;
  epoch: number;
}

interface Config {
  grainSize: number;
  checkpointAfterBytes: number;
  cacheBlock: number;
  cacheBlocks: number;
}

function resized(bytes: Uint8Array, size: number): Uint8Array {
  const out = new Uint8Array(size);
  out.set(bytes.subarray(0, Math.min(size, bytes.length)));
  return out;
}

async function openAll(fs: CrashFs, base: ReadOnlyBase, opts: Config) {
  const cache = await ReadCache.open(base, {
    path: '/vm/base.rcache',
    blockSize: opts.cacheBlock,
    maxBytes: opts.cacheBlocks * opts.cacheBlock,
    sourceId: 'model-base',
    fs,
    readAhead: 2,
  });
  const overlay = await WriteOverlay.open(cache, {
    dir: '/vm',
    grainSize: opts.grainSize,
    checkpointAfterBytes: opts.checkpointAfterBytes,
    fs,
    reclaimSpace: (n) => cache.shrink(n),
  });
  return { cache, overlay };
}

/** Runs a change; true when it was acknowledged, false when it failed for lack of space. */
async function acknowledged(change: Promise<unknown>): Promise<boolean> {
  try {
    await change;
    return true;
  } catch (err) {
    if (isIvmrError(err, ErrorCode.NO_SPACE)) return false;
    throw err;
  }
}

/** Gives the volume room again, as a reboot with space freed would. */
function relax(fs: CrashFs): void {
  fs.capacity = 2 ** 40;
}

async function expectDisk(r: Real, m: Model, label: string): Promise<void> {
  expect(r.overlay.size, `${label}: size`).toBe(m.live.length);
  expectBytes(await r.overlay.read(0, r.overlay.size), m.live, label);
}

/** A range inside the disk from two arbitrary numbers. */
function range(size: number, a: number, len: number): [number, number] {
  const offset = size === 0 ? 0 : a % (size + 1);
  return [offset, Math.min(len, size - offset)];
}

class Write implements fc.AsyncCommand<Model, Real> {
  constructor(
    readonly a: number,
    readonly len: number,
    readonly seed: number,
  ) {}
  check = () => true;
  async run(m: Model, r: Real) {
    const [offset, length] = range(m.live.length, this.a, this.len);
    const data = randomBytesFrom(this.seed, length);
    if (length > 0) m.mutated = true;
    if (await acknowledged(r.overlay.write(offset, data))) m.live.set(data, offset);
  }
  toString = () => `write(${this.a}, ${this.len}, #${this.seed})`;
}

class Clear implements fc.AsyncCommand<Model, Real> {
  constructor(
    readonly zero: boolean,
    readonly a: number,
    readonly len: number,
  ) {}
  check = () => true;
  async run(m: Model, r: Real) {
    const [offset, length] = range(m.live.length, this.a, this.len);
    if (length > 0) m.mutated = true;
    if (this.zero) {
      if (await acknowledged(r.overlay.writeZeroes(offset, length))) {
        m.live.fill(0, offset, offset + length);
      }
    } else if (await acknowledged(r.overlay.discard(offset, length))) {
      for (let i = offset; i < offset + length; i++) {
        m.live[i] = i < Math.min(m.baseLimit, m.base.length) ? m.base[i]! : 0;
      }
    }
  }
  toString = () => `${this.zero ? 'writeZeroes' : 'discard'}(${this.a}, ${this.len})`;
}

class Read implements fc.AsyncCommand<Model, Real> {
  constructor(
    readonly a: number,
    readonly len: number,
  ) {}
  check = () => true;
  async run(m: Model, r: Real) {
    const [offset, length] = range(m.live.length, this.a, this.len);
    const into = new Uint8Array(length + 3);
    const got = await r.overlay.read(offset, length, into);
    expectBytes(got, m.live.subarray(offset, offset + length), `read(${offset}, ${length})`);
  }
  toString = () => `read(${this.a}, ${this.len})`;
}

/** Writes to disjoint byte ranges (possibly sharing grains) and reads elsewhere, all at once. */
class Concurrent implements fc.AsyncCommand<Model, Real> {
  constructor(
    readonly cuts: number[],
    readonly seed: number,
  ) {}
  check = () => true;
  async run(m: Model, r: Real) {
    const size = m.live.length;
    const points = [...new Set(this.cuts.map((c) => c % (size + 1)))].sort((a, b) => a - b);
    const ops: Promise<unknown>[] = [];
    const writes: Promise<void>[] = [];
    const expected: [number, Uint8Array, Uint8Array][] = [];
    for (let i = 0; i + 1 < points.length; i++) {
      const lo = points[i]!;
      const hi = points[i + 1]!;
      if (i % 3 === 1) {
        // Reads only of ranges no write here touches.
        expected.push([lo, m.live.slice(lo, hi), new Uint8Array(hi - lo)]);
        ops.push(r.overlay.read(lo, hi - lo, expected.at(-1)![2]));
      } else {
        const data = randomBytesFrom(this.seed + i, hi - lo);
        if (hi > lo) m.mutated = true;
        writes.push(
          acknowledged(r.overlay.write(lo, data)).then((ok) => {
            if (ok) m.live.set(data, lo);
          }),
        );
      }
    }
    await Promise.all([...ops, ...writes]);
    for (const [lo, want, got] of expected) expectBytes(got, want, `concurrent read at ${lo}`);
  }
  toString = () => `concurrent([${this.cuts.join(', ')}], #${this.seed})`;
}

class Flush implements fc.AsyncCommand<Model, Real> {
  check = () => true;
  async run(m: Model, r: Real) {
    await r.overlay.flush();
    m.flushed = m.live.slice();
    m.flushedBaseLimit = m.baseLimit;
  }
  toString = () => 'flush';
}

class Resize implements fc.AsyncCommand<Model, Real> {
  constructor(readonly to: number) {}
  check = () => true;
  async run(m: Model, r: Real) {
    const size = this.to;
    if (size !== m.live.length) m.mutated = true;
    if (!(await acknowledged(r.overlay.resize(size)))) return;
    m.live = resized(m.live, size);
    m.baseLimit = Math.min(m.baseLimit, size);
    m.flushed = m.live.slice();
    m.flushedBaseLimit = m.baseLimit;
  }
  toString = () => `resize(${this.to})`;
}

/** Read cache pruning: the cache gives back room, as it does when the overlay needs space. */
class Prune implements fc.AsyncCommand<Model, Real> {
  constructor(readonly blocks: number) {}
  check = () => true;
  async run(_m: Model, r: Real) {
    await r.cache.shrink(this.blocks * r.opts.cacheBlock);
  }
  toString = () => `prune(${this.blocks})`;
}

/** The volume fills up: only `room` more bytes fit (changes may now fail with IVMR_NOSPC). */
class Squeeze implements fc.AsyncCommand<Model, Real> {
  constructor(readonly room: number) {}
  check = () => true;
  async run(_m: Model, r: Real) {
    r.fs.capacity = r.fs.usedBytes + this.room;
  }
  toString = () => `squeeze(${this.room})`;
}

/** Room again. */
class Relax implements fc.AsyncCommand<Model, Real> {
  check = () => true;
  async run(_m: Model, r: Real) {
    relax(r.fs);
  }
  toString = () => 'relax';
}

/** A crash between two calls: reboot, reopen, find exactly the flushed state. */
class Crash implements fc.AsyncCommand<Model, Real> {
  constructor(readonly seed: number) {}
  check = () => true;
  async run(m: Model, r: Real) {
    r.fs = r.fs.crash(this.seed);
    relax(r.fs);
    Object.assign(r, await openAll(r.fs, r.base, r.opts));
    m.live = m.flushed.slice();
    m.baseLimit = m.flushedBaseLimit;
    await expectDisk(r, m, 'after crash');
    expect(r.overlay.epoch, 'epoch after crash').toBe(m.mutated ? r.epoch + 1 : r.epoch);
    r.epoch = r.overlay.epoch;
    m.mutated = false;
  }
  toString = () => `crash(#${this.seed})`;
}

/** A crash after `ops` file operations of a flush: the commit is all there or not at all. */
class CrashInFlush implements fc.AsyncCommand<Model, Real> {
  constructor(
    readonly ops: number,
    readonly seed: number,
  ) {}
  check = () => true;
  async run(m: Model, r: Real) {
    let count = 0;
    let after: CrashFs | undefined;
    r.fs.fault = () => {
      if (++count === this.ops) {
        after = r.fs.crash(this.seed);
        throw new Error('power cut');
      }
    };
    const flushed = await r.overlay.flush().then(
      () => true,
      () => false,
    );
    r.fs.fault = undefined;
    if (flushed) {
      m.flushed = m.live.slice();
      m.flushedBaseLimit = m.baseLimit;
    }
    if (after === undefined) return;
    r.fs = after;
    relax(r.fs);
    const candidates = [m.flushed, m.live];
    Object.assign(r, await openAll(r.fs, r.base, r.opts));
    const got = await r.overlay.read(0, r.overlay.size);
    const match = candidates.find((c) => Buffer.compare(c, got) === 0);
    expect(
      match,
      'state after a crash in a flush is the old or the new flushed state',
    ).toBeDefined();
    m.live = match!.slice();
    m.flushed = match!.slice();
    expect(r.overlay.epoch).toBe(m.mutated ? r.epoch + 1 : r.epoch);
    r.epoch = r.overlay.epoch;
    m.mutated = false;
  }
  toString = () => `crashInFlush(${this.ops}, #${this.seed})`;
}

/** A clean close and reopen: everything written is there and the verifier stays. */
class Reopen implements fc.AsyncCommand<Model, Real> {
  check = () => true;
  async run(m: Model, r: Real) {
    const verifier = r.overlay.verifier;
    await r.overlay.close();
    await r.cache.close();
    relax(r.fs);
    Object.assign(r, await openAll(r.fs, r.base, r.opts));
    m.flushed = m.live.slice();
    m.flushedBaseLimit = m.baseLimit;
    expect(Buffer.compare(r.overlay.verifier, verifier), 'verifier after clean close').toBe(0);
    await expectDisk(r, m, 'after reopen');
    m.mutated = false;
  }
  toString = () => 'reopen';
}

const configArb = fc.record({
  grainSize: fc.constantFrom(512, 4096),
  grains: fc.integer({ min: 1, max: 24 }),
  rem: fc.integer({ min: 0, max: 4095 }),
  checkpointAfterBytes: fc.constantFrom(1, 2048, 1 << 24),
  cacheBlock: fc.constantFrom(1024, 4096),
  cacheBlocks: fc.integer({ min: 1, max: 8 }),
  seed: fc.integer(),
});

const len = fc.oneof(
  fc.integer({ min: 0, max: 64 }),
  fc.integer({ min: 500, max: 4200 }),
  fc.integer({ min: 4000, max: 14_000 }),
);
const commands = [
  fc.tuple(fc.nat(), len, fc.integer()).map(([a, l, s]) => new Write(a, l, s)),
  fc.tuple(fc.nat(), len, fc.integer()).map(([a, l, s]) => new Write(a, l, s)),
  fc.tuple(fc.boolean(), fc.nat(), len).map(([z, a, l]) => new Clear(z, a, l)),
  fc.tuple(fc.nat(), len).map(([a, l]) => new Read(a, l)),
  fc
    .tuple(fc.array(fc.nat(), { minLength: 2, maxLength: 9 }), fc.integer())
    .map(([c, s]) => new Concurrent(c, s)),
  fc.constant(new Flush()),
  fc.constant(new Flush()),
  fc.integer({ min: 0, max: 120_000 }).map((n) => new Resize(n)),
  fc.integer({ min: 1, max: 4 }).map((n) => new Prune(n)),
  fc.integer().map((s) => new Crash(s)),
  fc.tuple(fc.integer({ min: 1, max: 6 }), fc.integer()).map(([n, s]) => new CrashInFlush(n, s)),
  fc.constant(new Reopen()),
  fc.integer({ min: 0, max: 20_000 }).map((n) => new Squeeze(n)),
  fc.constant(new Relax()),
];

describe('WriteOverlay over a ReadCache, against a byte-array model', () => {
  it('agrees with the model through writes, trims, resizes, prunes, flushes and crashes', async () => {
    await fc.assert(
      fc.asyncProperty(configArb, fc.commands(commands, { maxCommands: 40 }), async (cfg, cmds) => {
        const size = cfg.grains * cfg.grainSize + (cfg.rem % cfg.grainSize);
        const bytes = randomBytesFrom(cfg.seed, size);
        const base = new ReadOnlyBase(bytes);
        const fs = new CrashFs();
        const opts: Config = cfg;
        const { cache, overlay } = await openAll(fs, base, opts);
        const real: Real = { fs, overlay, cache, base, opts, epoch: overlay.epoch };
        const model: Model = {
          live: bytes.slice(),
          flushed: bytes.slice(),
          baseLimit: size,
          flushedBaseLimit: size,
          base: bytes,
          mutated: false,
        };
        await fc.asyncModelRun(() => ({ model, real }), cmds);
        await expectDisk(real, model, 'at the end');
        relax(real.fs);
        await real.overlay.close();
        await real.cache.close();
        expect(real.fs.openHandles, 'files left open').toBe(0);
        base.expectUntouched();
        await new Promise((resolve) => setImmediate(resolve));
      }),
      { numRuns: numRuns(300, 2000) },
    );
  });
});
