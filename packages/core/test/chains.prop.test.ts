import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  type BackupDisk,
  type CodecName,
  ErrorCode,
  MemoryBlockSource,
  MemoryStore,
  Repository,
  type RepositoryOpenOptions,
} from '../src/index.js';
import { numRuns } from './fc.js';
import { expectBytes, Prng } from './support/bytes.js';
import { CountingSource } from './support/counting-source.js';
import { liveBlobIds, storedBlobIds } from './support/repo-inspect.js';

// The model: every VM's disks are plain Uint8Arrays, every restore point a copy of them taken at
// backup time. Whatever the repository does with chains (forward deltas, reverse rebases, merges
// and prunes in forget), each remaining point must read back exactly its copy.

const KiB = 1024;
const MiB = 1024 * KiB;

/** Disks stay small: up to 40 blocks of 64 KiB, 3 blocks of 4 MiB. */
function maxBlocks(blockSize: number): number {
  return blockSize === 64 * KiB ? 40 : Math.max(3, Math.floor((2.5 * MiB) / blockSize));
}

type SizeSpec =
  | { shape: 'partial'; blocks: number; rem: number }
  | { shape: 'small'; rem: number }
  | { shape: 'zero' }
  | { shape: 'aligned'; blocks: number };

const sizeArb: fc.Arbitrary<SizeSpec> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({ shape: fc.constant('partial'), blocks: fc.nat(), rem: fc.nat() }),
  },
  { weight: 2, arbitrary: fc.record({ shape: fc.constant('small'), rem: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ shape: fc.constant('zero') }) },
  { weight: 1, arbitrary: fc.record({ shape: fc.constant('aligned'), blocks: fc.nat() }) },
) as fc.Arbitrary<SizeSpec>;

/** A disk size for a block size: mostly not a multiple of it, sometimes below one block or 0. */
function sizeOf(spec: SizeSpec, bs: number): number {
  const max = maxBlocks(bs);
  switch (spec.shape) {
    case 'partial':
      return (spec.blocks % max) * bs + 1 + (spec.rem % (bs - 1));
    case 'small':
      return 1 + (spec.rem % (bs - 1));
    case 'zero':
      return 0;
    case 'aligned':
      return (1 + (spec.blocks % max)) * bs;
  }
}

const WRITE_KINDS = [
  'random',
  'zero',
  'zeroBlock',
  'pattern',
  'copy',
  'copyBlock',
  'revert',
] as const;
type WriteSpec = { kind: (typeof WRITE_KINDS)[number]; at: number; len: number; from: number };
const writeArb: fc.Arbitrary<WriteSpec> = fc.record({
  kind: fc.constantFrom(...WRITE_KINDS),
  at: fc.nat(),
  len: fc.nat(),
  from: fc.nat(),
});

const codecArb = fc.constantFrom<CodecName>('lz4', 'zstd', 'none');

const backupOpArb = fc.record({
  op: fc.constant('backup' as const),
  vm: fc.nat(),
  reverse: fc.boolean(),
  codec: fc.option(codecArb, { nil: undefined }),
  passBlockSize: fc.boolean(),
  cbt: fc.boolean(),
  extraRanges: fc.array(fc.record({ at: fc.nat(), len: fc.nat() }), { maxLength: 3 }),
  secondDisk: fc.boolean(),
  newSize: fc.tuple(sizeArb, sizeArb),
  resize: fc.tuple(fc.option(sizeArb, { freq: 3 }), fc.option(sizeArb, { freq: 3 })),
  writes: fc.array(writeArb, { maxLength: 6 }),
  seed: fc.nat(),
});
const forgetOpArb = fc.record({
  op: fc.constant('forget' as const),
  vm: fc.nat(),
  keepLast: fc.integer({ min: 1, max: 3 }),
});
const reopenOpArb = fc.record({ op: fc.constant('reopen' as const) });
type BackupOp = typeof backupOpArb extends fc.Arbitrary<infer T> ? T : never;

const scenarioArb = fc.record({
  vmCount: fc.integer({ min: 1, max: 2 }),
  blockShifts: fc.tuple(fc.integer({ min: 16, max: 22 }), fc.integer({ min: 16, max: 22 })),
  frameShift: fc.integer({ min: 12, max: 22 }),
  codec: codecArb,
  packMiB: fc.integer({ min: 1, max: 3 }),
  frameCache: fc.constantFrom<RepositoryOpenOptions['frameCache']>(
    undefined,
    { maxBytes: 0 },
    { maxBytes: 64 * KiB },
  ),
  // Backups with the odd forget or reopen, then forgets, then backups that continue the chains
  // the forgets rewrote.
  history: fc.array(
    fc.oneof(
      { weight: 8, arbitrary: backupOpArb },
      { weight: 1, arbitrary: forgetOpArb },
      { weight: 1, arbitrary: reopenOpArb },
    ),
    { minLength: 2, maxLength: 8 },
  ),
  forgets: fc.array(forgetOpArb, { minLength: 1, maxLength: 3 }),
  after: fc.array(backupOpArb, { maxLength: 2 }),
  seed: fc.nat(),
});

interface ModelDisk {
  bytes: Uint8Array;
  blockSize: number;
}
interface ModelPoint {
  id: string;
  disks: Map<string, ModelDisk>;
}
interface ModelVm {
  name: string;
  blockSize: number;
  disks: Map<string, ModelDisk>;
  points: ModelPoint[];
  sequence: number;
}

function newDisk(size: number, rng: Prng): Uint8Array {
  // A mix of zero, compressible and incompressible stretches so every codec path is taken.
  const bytes = new Uint8Array(size);
  let pos = 0;
  while (pos < size) {
    const n = Math.min(size - pos, rng.int(1, 96 * KiB));
    const kind = rng.int(0, 3);
    if (kind === 1) fillPattern(bytes.subarray(pos, pos + n), rng);
    else if (kind >= 2) rng.fill(bytes.subarray(pos, pos + n));
    pos += n;
  }
  return bytes;
}

function fillPattern(out: Uint8Array, rng: Prng): void {
  const pattern = rng.fill(new Uint8Array(rng.int(1, 16)));
  for (let i = 0; i < out.length; i++) out[i] = pattern[i % pattern.length]!;
}

function resized(bytes: Uint8Array, size: number): Uint8Array {
  const out = new Uint8Array(size);
  out.set(bytes.subarray(0, Math.min(size, bytes.length)));
  return out;
}

/** Applies one write; returns the byte range it may have changed, or null. */
function applyWrite(
  w: WriteSpec,
  disk: ModelDisk,
  rng: Prng,
  others: readonly Uint8Array[],
  history: readonly Uint8Array[],
): { offset: number; length: number } | null {
  const { bytes, blockSize: bs } = disk;
  const size = bytes.length;
  if (size === 0) return null;
  const blocks = Math.ceil(size / bs);
  const offset = w.at % size;
  const length = 1 + (w.len % Math.min(size - offset, 2 * bs + 17));
  const block = w.at % blocks;
  const blockStart = block * bs;
  const blockLen = Math.min(bs, size - blockStart);
  switch (w.kind) {
    case 'random':
      rng.fill(bytes.subarray(offset, offset + length));
      return { offset, length };
    case 'zero':
      bytes.fill(0, offset, offset + length);
      return { offset, length };
    case 'zeroBlock':
      bytes.fill(0, blockStart, blockStart + blockLen);
      return { offset: blockStart, length: blockLen };
    case 'pattern':
      fillPattern(bytes.subarray(offset, offset + length), rng);
      return { offset, length };
    case 'copy': {
      const src = w.from % size;
      const n = Math.min(length, size - src);
      bytes.copyWithin(offset, src, src + n);
      return { offset, length: n };
    }
    case 'copyBlock':
    case 'revert': {
      // Whole aligned blocks copied from elsewhere (this disk, another disk or VM, or an older
      // version of this disk) are what makes deduplication happen.
      const pool = w.kind === 'copyBlock' ? [bytes, ...others] : history;
      if (pool.length === 0) return null;
      const src = pool[w.from % pool.length]!;
      const srcBlocks = Math.floor(src.length / bs);
      if (srcBlocks === 0) return null;
      const srcStart = w.kind === 'revert' ? blockStart : ((w.from >>> 4) % srcBlocks) * bs;
      const n = Math.min(blockLen, src.length - srcStart);
      if (n <= 0) return null;
      bytes.set(src.slice(srcStart, srcStart + n), blockStart);
      return { offset: blockStart, length: n };
    }
  }
}

/**
 * Which block starts a backup must read. With a parent: changed, past the parent's whole blocks,
 * or short. Without one, `changed` lists the allocated areas: only the blocks they overlap.
 */
function expectedReads(
  size: number,
  bs: number,
  parentSize: number | null,
  changed: readonly { offset: number; length: number }[] | null,
): number[] {
  const blocks = Math.ceil(size / bs);
  const parentWhole = parentSize === null ? 0 : Math.floor(parentSize / bs);
  const hit = new Set<number>();
  for (const r of changed ?? []) {
    if (r.length === 0) continue;
    for (let b = Math.floor(r.offset / bs); b <= Math.floor((r.offset + r.length - 1) / bs); b++)
      hit.add(b);
  }
  const starts: number[] = [];
  for (let b = 0; b < blocks; b++) {
    const whole = Math.min(bs, size - b * bs) === bs;
    const read =
      changed === null || hit.has(b) || (parentSize !== null && (b >= parentWhole || !whole));
    if (read) starts.push(b * bs);
  }
  return starts;
}

/** The runs of non-zero bytes of `bytes`, runs less than `gap` apart merged into one. */
function nonZeroRuns(bytes: Uint8Array, gap: number): { offset: number; length: number }[] {
  const runs: { offset: number; length: number }[] = [];
  for (let i = 0; i < bytes.length; i++) {
    if (bytes[i] === 0) continue;
    let end = i + 1;
    while (end < bytes.length && bytes[end] !== 0) end++;
    const last = runs.at(-1);
    if (last && i - (last.offset + last.length) < gap) last.length = end - last.offset;
    else runs.push({ offset: i, length: end - i });
    i = end;
  }
  return runs;
}

async function readBackAll(repo: Repository, vms: readonly ModelVm[], rng: Prng): Promise<void> {
  for (const vm of vms) {
    expect((await repo.listPoints(vm.name)).map((p) => p.id)).toEqual(vm.points.map((p) => p.id));
    for (const point of vm.points) {
      const opened = await repo.openPoint(vm.name, point.id);
      try {
        expect(opened.disks.map((d) => [d.name, d.size, d.blockSize]).sort()).toEqual(
          [...point.disks].map(([n, d]) => [n, d.bytes.length, d.blockSize]).sort(),
        );
        for (const [name, want] of point.disks) {
          const disk = opened.disk(name);
          const label = `${vm.name}@${point.id}/${name}`;
          const { bytes } = want;
          expectBytes(await disk.read(0, bytes.length), bytes, `${label} whole`);
          for (let k = 0; k < 4; k++) {
            const offset = rng.int(0, bytes.length);
            const length = rng.int(0, Math.min(bytes.length - offset, 3 * want.blockSize));
            const into = k % 2 === 0 ? undefined : new Uint8Array(length + rng.int(0, 100));
            const got = await disk.read(offset, length, into);
            expectBytes(
              got.subarray(0, length),
              bytes.subarray(offset, offset + length),
              `${label} [${offset}, +${length})`,
            );
          }
        }
      } finally {
        await opened.close();
      }
    }
  }
}

/** After a prune every stored blob is needed by some point, and is stored once. */
async function expectNoDeadBlobs(repo: Repository): Promise<void> {
  const stored = await storedBlobIds(repo.store);
  const live = await liveBlobIds(repo);
  const storedSet = new Set(stored);
  expect(stored.length, 'a blob is stored twice').toBe(storedSet.size);
  expect({
    dead: [...storedSet].filter((id) => !live.has(id)),
    lost: [...live].filter((id) => !storedSet.has(id)),
  }).toEqual({ dead: [], lost: [] });
}

async function expectVerifyOk(repo: Repository): Promise<void> {
  const report = await repo.verify();
  expect(
    {
      ok: report.ok,
      damagedBlobs: report.damagedBlobs,
      missingBlobs: report.missingBlobs,
      damagedObjects: report.damagedObjects,
    },
    'verify',
  ).toEqual({ ok: true, damagedBlobs: [], missingBlobs: [], damagedObjects: [] });
}

async function runBackupOp(repo: Repository, op: BackupOp, vms: ModelVm[]): Promise<void> {
  const vm = vms[op.vm % vms.length]!;
  const rng = new Prng(op.seed);
  const parent = vm.points.at(-1) ?? null;
  const repoDefault = vms[0]!.blockSize;
  // A chain's block size is fixed: pass it when asked (or when it is not the repository's), but
  // never one that contradicts an existing disk's chain.
  const d1 = vm.disks.get('d1');
  const pass =
    (op.passBlockSize || vm.blockSize !== repoDefault) &&
    !(op.secondDisk && d1 && d1.blockSize !== vm.blockSize);
  const newDiskBs = pass ? vm.blockSize : repoDefault;

  for (const [i, name] of ['d0', 'd1'].entries()) {
    const present = name === 'd0' || op.secondDisk;
    const disk = vm.disks.get(name);
    if (!present) {
      vm.disks.delete(name);
    } else if (!disk) {
      const bs = name === 'd0' ? vm.blockSize : newDiskBs;
      vm.disks.set(name, { bytes: newDisk(sizeOf(op.newSize[i]!, bs), rng), blockSize: bs });
    } else if (op.resize[i]) {
      disk.bytes = resized(disk.bytes, sizeOf(op.resize[i]!, disk.blockSize));
    }
  }

  const inputs: BackupDisk[] = [];
  const checks: (() => void)[] = [];
  const others = vms.flatMap((v) => [...v.disks.values()].map((d) => d.bytes));
  for (const [name, disk] of vm.disks) {
    const history = vm.points.flatMap((p) => {
      const old = p.disks.get(name);
      return old ? [old.bytes] : [];
    });
    const ranges: { offset: number; length: number }[] = [];
    for (const w of op.writes) {
      const r = applyWrite(
        w,
        disk,
        rng,
        others.filter((o) => o !== disk.bytes),
        history,
      );
      if (r) ranges.push(r);
    }
    const size = disk.bytes.length;
    // A superset of the real changes: extra ranges anywhere, some of length 0.
    for (const x of op.extraRanges) {
      if (size === 0) break;
      const offset = x.at % size;
      ranges.push({ offset, length: x.len % Math.min(size - offset + 1, 3 * disk.blockSize) });
    }
    const parentDisk = parent?.disks.get(name);
    // Without a parent the ranges are the allocated areas (a first backup with CBT): they must
    // cover every non-zero byte, so add the disk's non-zero runs to the writes and extras.
    if (op.cbt && !parentDisk)
      ranges.push(...nonZeroRuns(disk.bytes, rng.int(1, 2 * disk.blockSize)));
    const source = new CountingSource(new MemoryBlockSource(disk.bytes));
    inputs.push({ name, source, changedRanges: op.cbt ? ranges : undefined });
    checks.push(() => {
      const want = expectedReads(
        size,
        disk.blockSize,
        parentDisk ? parentDisk.bytes.length : null,
        op.cbt ? ranges : null,
      );
      expect(
        source.reads.map((r) => r.offset),
        `blocks read from ${name}`,
      ).toEqual(want);
      for (const r of source.reads) {
        expect(r.length).toBe(Math.min(disk.blockSize, size - r.offset));
      }
    });
  }

  const info = await repo.backup({
    vm: vm.name,
    disks: inputs,
    reverse: op.reverse,
    codec: op.codec,
    blockSize: pass ? vm.blockSize : undefined,
  });
  for (const check of checks) check();
  vm.sequence++;
  expect(info.sequence).toBe(vm.sequence);
  const shared = parent !== null && [...vm.disks.keys()].some((n) => parent.disks.has(n));
  expect(info.kind).toBe(shared && !op.reverse ? 'incremental' : 'full');
  expect(info.base).toBe(shared && !op.reverse ? parent!.id : null);
  const snapshot = new Map<string, ModelDisk>();
  for (const [name, d] of vm.disks) {
    snapshot.set(name, { bytes: d.bytes.slice(), blockSize: d.blockSize });
    expect(info.disks.find((x) => x.name === name)?.blockSize).toBe(d.blockSize);
  }
  vm.points.push({ id: info.id, disks: snapshot });
}

describe('backup chains (property)', () => {
  it(
    'every restore point reads back its disks exactly, through backups, reverse rebases, forget and prune',
    async () => {
      await fc.assert(
        fc.asyncProperty(scenarioArb, async (s) => {
          // The memory store resolves at once, so a run is one long chain of microtasks: yield
          // to the event loop between runs so vitest's worker can still talk to its parent.
          await new Promise<void>((resolve) => setImmediate(resolve));
          const store = new MemoryStore();
          const open: RepositoryOpenOptions = { frameCache: s.frameCache };
          const vms: ModelVm[] = Array.from({ length: s.vmCount }, (_, i) => ({
            name: `vm${i}`,
            blockSize: 2 ** s.blockShifts[i]!,
            disks: new Map(),
            points: [],
            sequence: 0,
          }));
          let repo = await Repository.init(store, {
            codec: s.codec,
            blockSize: vms[0]!.blockSize,
            frameSize: 2 ** s.frameShift,
            packSize: s.packMiB * MiB,
            ...open,
          });
          const rng = new Prng(s.seed);
          let dirty = false;
          for (const op of [...s.history, ...s.forgets, ...s.after]) {
            if (op.op === 'backup') {
              await runBackupOp(repo, op, vms);
              dirty = true;
            } else if (op.op === 'reopen') {
              repo = await Repository.open(store, open);
            } else {
              const vm = vms[op.vm % vms.length]!;
              if (vm.points.length === 0) {
                await expect(
                  repo.forget({ vm: vm.name, keepLast: op.keepLast }),
                ).rejects.toMatchObject({ code: ErrorCode.NOT_FOUND });
                continue;
              }
              if (dirty) await readBackAll(repo, vms, rng);
              const doomed = vm.points.slice(0, Math.max(0, vm.points.length - op.keepLast));
              const report = await repo.forget({ vm: vm.name, keepLast: op.keepLast });
              expect([...report.removed].sort()).toEqual(doomed.map((p) => p.id).sort());
              vm.points = vm.points.slice(doomed.length);
              await readBackAll(repo, vms, rng);
              await expectVerifyOk(repo);
              await expectNoDeadBlobs(repo);
              dirty = false;
            }
          }
          await readBackAll(repo, vms, rng);
          await expectVerifyOk(repo);
        }),
        { numRuns: numRuns(100, 300) },
      );
    },
    15 * 60_000,
  );
});
