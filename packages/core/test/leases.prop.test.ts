import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MemoryBlockSource, MemoryStore, Repository, type RestorePoint } from '../src/index.js';
import { numRuns } from './fc.js';
import { Prng } from './support/bytes.js';

const BS = 64 * 1024;
const BLOCKS = 12;

/** One step of two processes (two repository objects) sharing one store. */
type Step =
  | { op: 'backup'; proc: number; vm: number; seed: number; changed: number; reverse: boolean }
  | { op: 'open'; proc: number; vm: number; pick: number }
  | { op: 'read'; reader: number }
  | { op: 'close'; reader: number }
  | { op: 'forget'; proc: number; vm: number; keep: number; prune: boolean }
  | { op: 'prune'; proc: number };

const step: fc.Arbitrary<Step> = fc.oneof(
  // Weighted so that points are opened, pruned under, and read again often.
  {
    weight: 3,
    arbitrary: fc.record({
      op: fc.constant('backup' as const),
      proc: fc.nat(1),
      vm: fc.nat(1),
      seed: fc.nat(1000),
      changed: fc.integer({ min: 1, max: BLOCKS }),
      reverse: fc.boolean(),
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      op: fc.constant('open' as const),
      proc: fc.nat(1),
      vm: fc.nat(1),
      pick: fc.nat(5),
    }),
  },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('read' as const), reader: fc.nat(5) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('close' as const), reader: fc.nat(5) }) },
  {
    weight: 2,
    arbitrary: fc.record({
      op: fc.constant('forget' as const),
      proc: fc.nat(1),
      vm: fc.nat(1),
      keep: fc.integer({ min: 1, max: 2 }),
      prune: fc.boolean(),
    }),
  },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('prune' as const), proc: fc.nat(1) }) },
);

describe('leases (model)', () => {
  it('every open restore point reads what was backed up, whatever backups, forgets and prunes of two processes do meanwhile', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 30 }), async (steps) => {
        const store = new MemoryStore();
        // No frame caches: every read reaches the store.
        const procs = [
          await Repository.init(store, {
            blockSize: BS,
            packSize: 1 << 20,
            frameCache: { maxBytes: 0 },
          }),
          await Repository.open(store, { frameCache: { maxBytes: 0 } }),
        ];
        const disks = [new Uint8Array(BLOCKS * BS), new Uint8Array(BLOCKS * BS)];
        /** Content of every point ever made, by id. */
        const content = new Map<string, Uint8Array>();
        const readers: { point: RestorePoint; bytes: Uint8Array }[] = [];
        for (const s of steps) {
          if (s.op === 'backup') {
            const next = disks[s.vm]!.slice();
            const rng = new Prng(s.seed + 1);
            for (let i = 0; i < s.changed; i++) {
              const b = rng.int(0, BLOCKS - 1);
              if (rng.int(0, 3) === 0) next.fill(0, b * BS, (b + 1) * BS);
              else rng.fill(next.subarray(b * BS, (b + 1) * BS));
            }
            const p = await procs[s.proc]!.backup({
              vm: `vm${s.vm}`,
              reverse: s.reverse,
              disks: [{ name: 'd', source: new MemoryBlockSource(next) }],
            });
            disks[s.vm] = next;
            content.set(p.id, next);
          } else if (s.op === 'open') {
            const points = await procs[s.proc]!.listPoints(`vm${s.vm}`);
            if (points.length === 0) continue;
            const p = points[s.pick % points.length]!;
            readers.push({
              point: await procs[s.proc]!.openPoint(p.vm, p.id),
              bytes: content.get(p.id)!,
            });
          } else if (s.op === 'read' || s.op === 'close') {
            if (readers.length === 0) continue;
            const r = readers[s.reader % readers.length]!;
            const got = await r.point.disk('d').read(0, r.bytes.length);
            expect(Buffer.from(got).equals(Buffer.from(r.bytes))).toBe(true);
            if (s.op === 'close') {
              await r.point.close();
              readers.splice(readers.indexOf(r), 1);
            }
          } else if (s.op === 'forget') {
            if ((await procs[s.proc]!.listPoints(`vm${s.vm}`)).length === 0) continue;
            await procs[s.proc]!.forget({ vm: `vm${s.vm}`, keepLast: s.keep, prune: s.prune });
          } else {
            await procs[s.proc]!.prune();
          }
        }
        for (const r of readers) {
          const got = await r.point.disk('d').read(0, r.bytes.length);
          expect(Buffer.from(got).equals(Buffer.from(r.bytes))).toBe(true);
          await r.point.close();
        }
        // With every reader gone, a prune leaves exactly what the points need, all readable.
        await procs[0]!.prune();
        const report = await procs[1]!.verify();
        expect(report.ok).toBe(true);
        for (const p of await procs[1]!.listPoints()) {
          const open = await procs[1]!.openPoint(p.vm, p.id);
          const got = await open.disk('d').read(0, BLOCKS * BS);
          expect(Buffer.from(got).equals(Buffer.from(content.get(p.id)!))).toBe(true);
          await open.close();
        }
        let locks = 0;
        for await (const _ of store.list('lock')) locks++;
        expect(locks).toBe(0);
      }),
      { numRuns: numRuns(150, 400) },
    );
  }, 300_000);
});
