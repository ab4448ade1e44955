import { spawn } from 'node:child_process';
import { mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bundleForNode } from '../../../scripts/testing/bundle.js';
import {
  type CodecName,
  DecodePool,
  ErrorCode,
  MemoryBlockSource,
  openLocalRepository,
  type Repository,
} from '../src/index.js';
import { numRuns } from './fc.js';
import { expectBytes, Prng } from './support/bytes.js';
import { findBlob, localPackPath } from './support/repo-inspect.js';
import { useTempDirs } from './support/temp-dir.js';

const KiB = 1024;
const BS = 64 * KiB;
const FRAME = 16 * KiB;
const tempDir = useTempDirs('decode-pool');

/** The worker script bundled from its sources (the built package has it as decode-worker.js). */
let workerUrl: URL;
/** Worker scripts that misbehave: one exits at its first job, one never answers. */
let exitingUrl: URL;
let silentUrl: URL;

// The scripts live for the whole file (a tempDir is removed after each test).
let scripts: string;
beforeAll(async () => {
  scripts = await mkdtemp(join(tmpdir(), 'ivmr-decode-worker-'));
  const dir = scripts;
  const out = join(dir, 'decode-worker.mjs');
  await bundleForNode('packages/core/src/repository/decode-worker.ts', out, 'core');
  workerUrl = pathToFileURL(out);
  exitingUrl = pathToFileURL(join(dir, 'exiting.mjs'));
  await writeFile(
    exitingUrl,
    "import { parentPort } from 'node:worker_threads';\nparentPort.on('message', () => process.exit(3));\n",
  );
  silentUrl = pathToFileURL(join(dir, 'silent.mjs'));
  await writeFile(
    silentUrl,
    "import { parentPort } from 'node:worker_threads';\nparentPort.on('message', () => {});\n",
  );
}, 60_000);
afterAll(async () => {
  await rm(scripts, { recursive: true, force: true });
});

/** Random, compressible, repetitive and zero blocks, and a short tail. */
function makeDisk(blocks: number, seed = 5): Uint8Array {
  const rng = new Prng(seed);
  const bytes = new Uint8Array(blocks * BS + 5000);
  for (let b = 0; b * BS < bytes.length; b++) {
    const block = bytes.subarray(b * BS, (b + 1) * BS);
    if (b % 6 === 2) continue;
    if (b % 4 === 1) for (let i = 0; i < block.length; i++) block[i] = (i >> 7) & 0xff;
    else if (b % 4 === 3) for (let i = 0; i < block.length; i++) block[i] = rng.u32() & 7;
    else rng.fill(block);
  }
  return bytes;
}

async function backedUp(
  disk: Uint8Array,
  codec: CodecName,
  pool: DecodePool,
): Promise<{ repo: Repository; dir: string }> {
  const dir = await tempDir();
  const settings = { blockSize: BS, frameSize: FRAME, packSize: 1024 * KiB, codec } as const;
  const repo = await openLocalRepository(dir, {
    create: true,
    ...settings,
    frameCache: { maxBytes: 0 },
    decodePool: pool,
  });
  await repo.backup({ vm: 'vm', disks: [{ name: 'd', source: new MemoryBlockSource(disk) }] });
  return { repo, dir };
}

/** A destination in SharedArrayBuffer memory, `at` bytes into its buffer. */
function sharedOut(length: number, at: number): Uint8Array {
  return new Uint8Array(new SharedArrayBuffer(length + at + 8)).subarray(at, at + length);
}

/** Reads until all `threads` of the pool's workers run (the first large read starts them). */
async function warmUp(
  pool: DecodePool,
  threads: number,
  read: () => Promise<unknown>,
): Promise<void> {
  for (let i = 0; i < 300 && pool.stats.threads < threads && !pool.stats.failure; i++) {
    await read();
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('decode pool', () => {
  for (const codec of ['lz4', 'zstd'] as const) {
    it(`workers decode concurrent reads into shared memory to the disk's bytes (${codec}, property)`, async () => {
      const disk = makeDisk(24);
      const pool = new DecodePool({ threads: 2, minBytes: 0, workerUrl });
      const { repo } = await backedUp(disk, codec, pool);
      try {
        const point = await repo.openPoint('vm');
        const d = point.disk('d');
        await warmUp(pool, 2, () => d.read(0, BS, sharedOut(BS, 0)));
        expect(pool.stats).toMatchObject({ threads: 2, failure: undefined });
        const before = pool.stats.jobs;
        await fc.assert(
          fc.asyncProperty(
            fc.array(
              fc.record({
                offset: fc.integer({ min: 0, max: disk.length - 1 }),
                length: fc.integer({ min: 1, max: 4 * BS }),
                at: fc.integer({ min: 0, max: 15 }),
              }),
              { minLength: 1, maxLength: 16 },
            ),
            async (reads) => {
              const got = await Promise.all(
                reads.map((r) => {
                  const length = Math.min(r.length, disk.length - r.offset);
                  return d.read(r.offset, length, sharedOut(length, r.at));
                }),
              );
              reads.forEach((r, i) => {
                const want = disk.subarray(r.offset, r.offset + got[i]!.length);
                expectBytes(got[i]!, want, `read ${r.offset}+${got[i]!.length} at ${r.at}`);
              });
            },
          ),
          { numRuns: numRuns(30, 120) },
        );
        // The reads above went to the workers, not only to this thread.
        expect(pool.stats.jobs).toBeGreaterThan(before);
        expect(pool.stats.failure).toBeUndefined();
        await point.close();
      } finally {
        await repo.close();
        await pool.close();
      }
    });
  }

  it('a corrupt frame decoded by a worker fails the read with IVMR_CHUNK_CORRUPT naming the frame', async () => {
    const disk = makeDisk(8);
    const pool = new DecodePool({ threads: 1, minBytes: 0, workerUrl });
    const { repo, dir } = await backedUp(disk, 'lz4', pool);
    let point = await repo.openPoint('vm');
    // Block 1 is the repetitive one (compressed); damage the payload of its third frame.
    const blob = point.disk('d').blobOf(1)!;
    await point.close();
    const { pack, entry } = await findBlob(repo.store, blob);
    const at = entry.offset + entry.frameLengths[0]! + entry.frameLengths[1]! + 20;
    const fh = await open(localPackPath(dir, pack), 'r+');
    await fh.write(Buffer.from([0xff, 0x00, 0xff]), 0, 3, at);
    await fh.close();
    await repo.close();

    const fresh = await openLocalRepository(dir, { frameCache: { maxBytes: 0 }, decodePool: pool });
    try {
      point = await fresh.openPoint('vm');
      const d = point.disk('d');
      await warmUp(pool, 1, () => d.read(4 * BS, BS, sharedOut(BS, 0)));
      const jobs = pool.stats.jobs;
      const err = await d.read(BS, BS, sharedOut(BS, 0)).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(pool.stats.jobs).toBe(jobs + 1);
      expect(err).toMatchObject({
        code: ErrorCode.CHUNK_CORRUPT,
        details: { blob, pack, frame: 2 },
      });
      // The blocks around it read back.
      expectBytes(await d.read(0, BS, sharedOut(BS, 3)), disk.subarray(0, BS));
      expectBytes(await d.read(2 * BS, BS, sharedOut(BS, 0)), disk.subarray(2 * BS, 3 * BS));
      await point.close();
    } finally {
      await fresh.close();
      await pool.close();
    }
  });

  for (const [name, url] of [
    ['exits at its first job', () => exitingUrl],
    ['cannot be loaded', () => new URL('file:///nonexistent/decode-worker.js')],
  ] as const) {
    it(`a worker that ${name} costs no bytes: reads decode on the calling thread, and stats say why`, async () => {
      const disk = makeDisk(12);
      const pool = new DecodePool({ threads: 1, minBytes: 0, workerUrl: url() });
      const { repo } = await backedUp(disk, 'lz4', pool);
      try {
        const point = await repo.openPoint('vm');
        const d = point.disk('d');
        for (let round = 0; round < 30 && pool.stats.failure === undefined; round++) {
          const reads = [0, 3, 7].map((b) => d.read(b * BS, 2 * BS, sharedOut(2 * BS, 0)));
          const got = await Promise.all(reads);
          [0, 3, 7].forEach((b, i) => {
            expectBytes(got[i]!, disk.subarray(b * BS, (b + 2) * BS));
          });
          await new Promise((r) => setTimeout(r, 20));
        }
        expect(pool.stats.failure).toMatch(/a decode worker (exited|failed)/);
        expect(pool.stats.threads).toBe(0);
        expectBytes(await d.read(0, disk.length, sharedOut(disk.length, 0)), disk);
        await point.close();
      } finally {
        await repo.close();
        await pool.close();
      }
    });
  }

  it('closing the pool while a worker holds a read: the read decodes on the calling thread', async () => {
    const disk = makeDisk(6);
    const pool = new DecodePool({ threads: 1, minBytes: 0, workerUrl: silentUrl });
    const { repo } = await backedUp(disk, 'lz4', pool);
    try {
      const point = await repo.openPoint('vm');
      const d = point.disk('d');
      // The silent worker never answers: the first read it is given waits until the close.
      let held: Promise<Uint8Array> | undefined;
      for (let i = 0; i < 200 && held === undefined; i++) {
        const jobs = pool.stats.jobs;
        let done = false;
        const read = d.read(BS, 2 * BS, sharedOut(2 * BS, 0)).finally(() => {
          done = true;
        });
        // Until the read is done here, or given to the worker (its pack read comes first).
        while (!done && pool.stats.jobs === jobs) await new Promise((r) => setTimeout(r, 1));
        if (pool.stats.jobs > jobs) held = read;
        else await new Promise((r) => setTimeout(r, 10));
      }
      expect(held).toBeDefined();
      await pool.close();
      expectBytes(await held!, disk.subarray(BS, 3 * BS));
      // After the close, reads decode here.
      expectBytes(await d.read(0, BS, sharedOut(BS, 0)), disk.subarray(0, BS));
      await point.close();
    } finally {
      await repo.close();
    }
  });

  it('an idle pool does not keep a process alive, and one decoding a read does', async () => {
    const dir = await tempDir();
    const script = join(dir, 'idle-pool.mjs');
    await bundleForNode('packages/core/test/fixtures/idle-pool.ts', script, 'core');
    const child = spawn(process.execPath, [script, workerUrl.href, await tempDir()], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (b: Buffer) => {
      out += b.toString();
    });
    child.stderr.on('data', (b: Buffer) => {
      err += b.toString();
    });
    const code = await new Promise<number | null>((resolve) => {
      const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
      child.on('exit', (c) => {
        clearTimeout(timer);
        resolve(c);
      });
    });
    expect(err).toBe('');
    // The fixture's last line comes after reads the workers decoded; then it leaves the pool
    // open and returns, and the process ends by itself (killed after 30 s, it would be null).
    expect(out).toMatch(/^read back \d+ bytes, \d+ jobs in workers$/m);
    expect(code).toBe(0);
  });
});
