/**
 * Micro-benchmarks (tinybench) of the in-process read path of `ivmr serve`, layer by layer, on
 * the built packages. Every read is 4 KiB at a 4 KiB-aligned offset into one reused buffer (the
 * datastore allocates a fresh one per NFS READ, and @ivmr/vmdk's FlatExtent adds a range check:
 * neither is counted), from a rotation of 1024 offsets, on a 32 MiB disk (core/image.mjs) whose
 * backups live in a MemoryStore:
 *
 * - `lookup.zero.*`: `RestoreDisk.read` of a block the map says is all zero: the range checks, the
 *   flat block map entry, a fill of 4 KiB of zeros, one promise. No blob, no frame cache. On the
 *   1st and the 50th point of core/micro.mjs's forward chain (64 KiB blocks): the map is
 *   flattened when the point is opened, so the two should cost the same.
 * - `frame-cache.hit.lz4`: `RestoreDisk.read` of a block whose decoded 64 KiB frame is in core's
 *   frame cache: the lookup above, the blob's frame index, the LRU touch and a 4 KiB copy.
 * - `decode.lz4`, `decode.zstd`: the same read with the frame cache off, in a frame stored
 *   compressed (a non-zero frame that lz4 shrinks): the lookup, a copy of the frame's stored
 *   bytes out of the MemoryStore (where a LocalStore would make a file read, not counted here),
 *   the xxh64 check and the decode of the whole 64 KiB frame into a new buffer, the 4 KiB copy.
 *   Full backups with core's defaults (1 MiB blocks, 64 KiB frames), as `ivmr backup` makes them.
 * - `read-cache.hit`: `ReadCache.read` (@ivmr/cache) over the lz4 point, of a block it already
 *   holds: its index lookup and one read of the cache file (page cache) through libuv's pool.
 * - `overlay.base.read-cache-hit`: `WriteOverlay.read` of a range the VM never wrote, over that
 *   read cache: what `ivmr serve` does for every cached block (session.ts stacks the overlay over
 *   the read cache over the point's disk): the overlay's range lock and grain table, then the hit.
 * - `overlay.hit`: `WriteOverlay.read` of a 4 KiB grain the VM wrote (and flushed): one read of
 *   the overlay's data file through libuv's pool.
 * - `xdr.read-reply.*`: the XDR encoding of an NFSv3 READ reply. @ivmr/nfs exports neither its
 *   XdrWriter nor the READ encoder, so this is a copy of what it writes (record mark, RPC accepted
 *   reply header, READ3resok with post_op_attr) made with the same Buffer calls, minus the
 *   writer's bounds checks (checked once, when written, to give the bytes of XdrWriter with
 *   writeAcceptedHeader and writePostOpAttr, for 4096, 4097 and 524288 bytes of data). ivmr
 *   sends the data as a separate socket write behind that header, uncopied, so 4 KiB and 512 KiB
 *   cost the same; `.copied` also copies the (cache-hot) data into the reply buffer, for scale.
 *   Not measured: the GETATTR each READ runs beside its read, decoding the call, the socket write.
 *
 * Before any timing, every offset of every rotation is read and compared with the image's bytes
 * (or the bytes written); after it, the read cache must show no miss since it was filled.
 *
 * Usage: node serve/micro.mjs [--ms 500] [--seed 1] [--out DIR] [--tmp DIR]
 */
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { ReadCache, WriteOverlay } from '@ivmr/cache';
import { MemoryBlockSource, MemoryStore, Repository } from '@ivmr/core';
import { compressSync as lz4Compress } from 'lz4-napi';
import { Bench } from 'tinybench';
import { prng, writeImage } from '../core/image.mjs';
import { FRAME } from '../core/limits.mjs';
import { buildChain, CHAIN, DISK_SIZE, microResult, microTable } from '../core/micro.mjs';

const READ = 4096;
const ROTATION = 1024;
const VM = 'micro';
const LAST_FRAGMENT = 0x8000_0000;
const TWO_32 = 0x1_0000_0000;
const EMPTY = new Uint8Array(0);

/**
 * @typedef {import('../core/micro.mjs').MicroResult & { id: string, checkedReads: number }} ServeMicroResult
 */

/**
 * Reads every offset of a rotation once and compares it with the bytes expected there.
 * @param {string} what the figure, for the error
 * @param {(offset: number, into: Uint8Array) => Promise<Uint8Array>} read
 * @param {readonly number[]} offsets
 * @param {(offset: number) => Uint8Array} expected
 * @returns {Promise<number>} the reads checked
 * @throws when a read returns other bytes, naming the figure and the offset
 */
export async function checkReads(what, read, offsets, expected) {
  const buf = new Uint8Array(READ);
  for (const o of offsets) {
    const got = await read(o, buf);
    if (Buffer.compare(got, expected(o)) !== 0) {
      throw new Error(`serve micro: ${what} returned wrong bytes at offset ${o}`);
    }
  }
  return offsets.length;
}

/**
 * The attributes a READ reply carries for a flat extent (as the datastore reports one).
 * @param {number} size
 */
function flatAttributes(size) {
  const now = { seconds: Math.floor(Date.now() / 1000), nanoseconds: 0 };
  return {
    type: 'file',
    mode: 0o600,
    nlink: 1,
    uid: 0,
    gid: 0,
    size,
    used: size,
    fileId: 0x0001_0001_0000_0002n,
    atime: now,
    mtime: now,
    ctime: now,
  };
}

/** @param {Buffer} buf @param {number} v @param {number} at */
function u64n(buf, v, at) {
  const hi = Math.floor(v / TWO_32);
  buf.writeUInt32BE(hi, at);
  return buf.writeUInt32BE(v - hi * TWO_32, at + 4);
}

/**
 * Writes the record mark and the header of a successful NFSv3 READ reply carrying `count` bytes
 * into `buf`, field for field as @ivmr/nfs writes it (RpcTcpServer's record mark, the
 * dispatcher's accepted reply header, read3's READ3resok, writeFattr3), and returns the header's
 * length. With `data`, the data and its padding follow in `buf`; without, they are the record's
 * tail, sent as they are.
 * ```
 * struct READ3resok { post_op_attr file_attributes; count3 count; bool eof; opaque data<>; };
 * ```
 * @param {Buffer} buf
 * @param {number} xid
 * @param {ReturnType<typeof flatAttributes>} a
 * @param {number} fsid
 * @param {number} count
 * @param {boolean} eof
 * @param {Uint8Array} [data] copied in when given
 */
export function writeReadReply(buf, xid, a, fsid, count, eof, data) {
  let p = buf.writeUInt32BE(xid, 4);
  p = buf.writeUInt32BE(1, p); // REPLY
  p = buf.writeUInt32BE(0, p); // MSG_ACCEPTED
  p = buf.writeUInt32BE(0, p); // verifier: AUTH_NONE
  p = buf.writeUInt32BE(0, p); // of no bytes
  p = buf.writeUInt32BE(0, p); // SUCCESS
  p = buf.writeUInt32BE(0, p); // NFS3_OK
  p = buf.writeUInt32BE(1, p); // attributes_follow
  p = buf.writeUInt32BE(1, p); // NF3REG
  p = buf.writeUInt32BE(a.mode & 0o7777, p);
  p = buf.writeUInt32BE(a.nlink, p);
  p = buf.writeUInt32BE(a.uid, p);
  p = buf.writeUInt32BE(a.gid, p);
  p = u64n(buf, a.size, p);
  p = u64n(buf, a.used, p);
  p = buf.writeUInt32BE(0, p); // rdev
  p = buf.writeUInt32BE(0, p);
  p = u64n(buf, fsid, p);
  p = buf.writeBigUInt64BE(a.fileId, p);
  for (const t of [a.atime, a.mtime, a.ctime]) {
    p = buf.writeUInt32BE(t.seconds, p);
    p = buf.writeUInt32BE(t.nanoseconds, p);
  }
  p = buf.writeUInt32BE(count, p);
  p = buf.writeUInt32BE(eof ? 1 : 0, p);
  p = buf.writeUInt32BE(count, p);
  const pad = (4 - (count % 4)) % 4;
  if (data) {
    buf.set(data.subarray(0, count), p);
    buf.fill(0, p + count, p + count + pad);
    buf.writeUInt32BE(LAST_FRAGMENT + p - 4 + count + pad, 0);
    return p + count + pad;
  }
  buf.writeUInt32BE(LAST_FRAGMENT + p - 4 + count + pad, 0);
  return p;
}

/**
 * Decodes a reply of {@link writeReadReply} and checks it against RFC 5531 and RFC 1813: one last
 * fragment as long as header, data and padding, an accepted, successful READ of `want.length`
 * bytes with attributes, and the data itself.
 * @param {string} what
 * @param {Buffer} written what `writeReadReply` wrote
 * @param {Uint8Array} tail the bytes sent after it (empty when the data was copied in)
 * @param {Uint8Array} want the bytes the reply must carry
 */
export function checkReadReply(what, written, tail, want) {
  const fail = (/** @type {string} */ why) => {
    throw new Error(`serve micro: ${what}: ${why}`);
  };
  const padded = want.length + ((4 - (want.length % 4)) % 4);
  const header = tail.length > 0 ? written.length : written.length - padded;
  const mark = written.readUInt32BE(0);
  if (mark !== LAST_FRAGMENT + header - 4 + padded) fail(`record mark ${mark.toString(16)}`);
  // xid, REPLY, MSG_ACCEPTED, verifier (AUTH_NONE, empty), SUCCESS, NFS3_OK, attributes_follow.
  const words = [1, 0, 0, 0, 0, 0, 1].map((_, k) => written.readUInt32BE(8 + 4 * k));
  if (words.join() !== '1,0,0,0,0,0,1') fail(`reply header ${words.join()}`);
  // fattr3 is 84 bytes; count, eof and the opaque's length follow.
  const at = 36 + 84;
  if (header !== at + 12) fail(`header of ${header} bytes`);
  if (written.readUInt32BE(at) !== want.length || written.readUInt32BE(at + 8) !== want.length)
    fail('wrong count');
  const data = tail.length > 0 ? tail : written.subarray(header, header + want.length);
  if (Buffer.compare(data, want) !== 0) fail('wrong data');
  if (tail.length === 0 && written.subarray(header + want.length).some((b) => b !== 0))
    fail('padding not zero');
}

/**
 * @param {Buffer} image
 * @param {(i: number) => boolean} wanted frames to draw from
 * @param {() => number} rnd
 * @returns {number[]} 4 KiB-aligned offsets inside the wanted 64 KiB frames
 */
function offsetsIn(image, wanted, rnd) {
  const frames = [];
  for (let i = 0; i < image.length / FRAME; i++) if (wanted(i)) frames.push(i);
  if (frames.length === 0) throw new Error('serve micro: the image has no frame of that kind');
  return Array.from({ length: ROTATION }, () => {
    const f = frames[Math.floor(rnd() * frames.length)];
    return f * FRAME + Math.floor(rnd() * (FRAME / READ)) * READ;
  });
}

/**
 * A full backup of `image` into a memory store, opened with a frame cache of `frameCacheBytes`.
 * @param {Buffer} image
 * @param {'lz4' | 'zstd'} codec
 * @param {number} frameCacheBytes
 */
async function fullPoint(image, codec, frameCacheBytes) {
  const store = new MemoryStore();
  const init = await Repository.init(store, { codec });
  const info = await init.backup({
    vm: VM,
    disks: [{ name: 'd', source: new MemoryBlockSource(image) }],
  });
  await init.close();
  const repo = await Repository.open(store, { frameCache: { maxBytes: frameCacheBytes } });
  const point = await repo.openPoint(VM, info.id);
  return { repo, point, disk: point.disk() };
}

/**
 * @param {{ seed: number, ms: number, tmp: string }} options
 * @returns {Promise<{ results: ServeMicroResult[], diskSize: number, chain: number }>}
 */
export async function runServeMicro({ seed, ms, tmp }) {
  const dir = await mkdtemp(join(tmp, 'ivmr-serve-micro-'));
  /** @type {{ close(): Promise<void> }[]} */
  const open = [];
  try {
    const imagePath = join(dir, 'disk.img');
    writeImage(imagePath, DISK_SIZE, seed);
    const image = await readFile(imagePath);
    await rm(imagePath);
    const rnd = prng(seed ^ 0x5e7e);
    const zero = Buffer.alloc(FRAME);
    const frameOf = (/** @type {number} */ i) => image.subarray(i * FRAME, (i + 1) * FRAME);
    const compressed = offsetsIn(
      image,
      (i) => !frameOf(i).equals(zero) && lz4Compress(frameOf(i)).length < FRAME,
      rnd,
    );
    const expected = (/** @type {number} */ o) => image.subarray(o, o + READ);

    // The chain's zero blocks (64 KiB) are the image's zero frames; increments change only
    // allocated blocks, so they are zero on every point.
    const chain = await buildChain(image, seed);
    const chainRepo = await Repository.open(chain.store, { frameCache: { maxBytes: 0 } });
    const firstPoint = await chainRepo.openPoint(VM, chain.first.id);
    const lastPoint = await chainRepo.openPoint(VM, chain.last.id);
    open.push(chainRepo, firstPoint, lastPoint);
    const first = firstPoint.disk();
    const last = lastPoint.disk();
    const zeros = offsetsIn(image, (i) => first.isZeroBlock(i) && last.isZeroBlock(i), rnd);
    const zeroBytes = new Uint8Array(READ);

    const warm = await fullPoint(image, 'lz4', 2 * DISK_SIZE);
    const lz4 = await fullPoint(image, 'lz4', 0);
    const zstd = await fullPoint(image, 'zstd', 0);
    for (const p of [warm, lz4, zstd]) open.push(p.repo, p.point);

    // The serve stack (session.ts): overlay over read cache over the restore point's disk.
    const readCache = await ReadCache.open(lz4.disk, {
      path: join(dir, 'read-cache', 'disk0.rcache'),
      maxBytes: DISK_SIZE,
      sourceId: 'serve-micro',
      minFreeBytes: 0,
    });
    open.push(readCache);
    const overlay = await WriteOverlay.open(readCache, {
      dir: join(dir, 'overlays'),
      name: 'disk0',
      reclaimSpace: (n) => readCache.shrink(n),
    });
    open.push(overlay);
    // Written grains: anywhere but the grains the unwritten figure reads, each byte changed.
    const unwritten = new Set(compressed);
    const writtenSet = new Set();
    while (writtenSet.size < ROTATION) {
      const o = Math.floor(rnd() * (DISK_SIZE / READ)) * READ;
      if (!unwritten.has(o)) writtenSet.add(o);
    }
    const written = [...writtenSet];
    /** @type {Map<number, Uint8Array>} */
    const writes = new Map();
    for (const o of written) {
      const data = Buffer.from(expected(o)).map((b) => b ^ 0x5a);
      writes.set(o, data);
      await overlay.write(o, data);
    }
    await overlay.flush();

    const attrs = flatAttributes(DISK_SIZE);
    const replies = [READ, 512 * 1024].map((count) => {
      const offset = Math.floor(rnd() * ((DISK_SIZE - count) / READ)) * READ;
      return {
        count,
        offset,
        data: Buffer.from(image.subarray(offset, offset + count)),
        eof: offset + count >= DISK_SIZE,
        buf: Buffer.alloc(256 + count),
      };
    });

    /**
     * @typedef {object} Figure
     * @property {string} id
     * @property {string} name
     * @property {readonly number[]} offsets
     * @property {(offset: number, into: Uint8Array) => Promise<Uint8Array>} read
     * @property {(offset: number) => Uint8Array} expected
     */
    /** @type {Figure[]} */
    const figures = [
      ...[
        [1, first],
        [CHAIN, last],
      ].map(([n, disk]) => ({
        id: `lookup.zero.point${n}`,
        name: `RestoreDisk.read 4 KiB of a zero block (map lookup only), point ${n} of ${CHAIN}`,
        offsets: zeros,
        read: (/** @type {number} */ o, /** @type {Uint8Array} */ b) => disk.read(o, READ, b),
        expected: () => zeroBytes,
      })),
      {
        id: 'frame-cache.hit.lz4',
        name: 'RestoreDisk.read 4 KiB, frame cache hit, lz4',
        offsets: compressed,
        read: (o, b) => warm.disk.read(o, READ, b),
        expected,
      },
      ...[
        ['lz4', lz4],
        ['zstd', zstd],
      ].map(([codec, p]) => ({
        id: `decode.${codec}`,
        name: `RestoreDisk.read 4 KiB, frame cache off: decodes its 64 KiB frame, ${codec}`,
        offsets: compressed,
        read: (/** @type {number} */ o, /** @type {Uint8Array} */ b) =>
          /** @type {typeof lz4} */ (p).disk.read(o, READ, b),
        expected,
      })),
      {
        id: 'read-cache.hit',
        name: 'ReadCache.read 4 KiB, hit (pread of the cache file)',
        offsets: compressed,
        read: (o, b) => readCache.read(o, READ, b),
        expected,
      },
      {
        id: 'overlay.base.read-cache-hit',
        name: 'WriteOverlay.read 4 KiB, not written: read cache hit beneath',
        offsets: compressed,
        read: (o, b) => overlay.read(o, READ, b),
        expected,
      },
      {
        id: 'overlay.hit',
        name: 'WriteOverlay.read 4 KiB, written (pread of the overlay file)',
        offsets: written,
        read: (o, b) => overlay.read(o, READ, b),
        expected: (o) => /** @type {Uint8Array} */ (writes.get(o)),
      },
    ];

    // Right bytes first; this also fills the frame cache and the read cache.
    const bench = new Bench({ time: ms, warmupTime: Math.min(ms, 100), iterations: 16 });
    /** @type {{ id: string, bytesPerOp: number | null, checkedReads: number }[]} */
    const rows = [];
    const buf = new Uint8Array(READ);
    for (const f of figures) {
      const { offsets, read } = f;
      const checkedReads = await checkReads(f.name, read, offsets, f.expected);
      rows.push({ id: f.id, bytesPerOp: READ, checkedReads });
      let i = 0;
      bench.add(f.name, () => read(offsets[i++ % offsets.length], buf));
    }
    let xid = 0;
    for (const r of replies) {
      const want = image.subarray(r.offset, r.offset + r.count);
      const n = writeReadReply(r.buf, 1, attrs, 1, r.count, r.eof);
      checkReadReply(`READ reply of ${r.count} bytes`, r.buf.subarray(0, n), r.data, want);
      const kib = r.count / 1024;
      rows.push({ id: `xdr.read-reply.${kib}k`, bytesPerOp: null, checkedReads: 1 });
      bench.add(`XDR encode of a READ reply, ${kib} KiB (header; data sent uncopied)`, () => {
        writeReadReply(r.buf, ++xid, attrs, 1, r.count, r.eof);
      });
    }
    const big = /** @type {(typeof replies)[number]} */ (replies.at(-1));
    const copied = writeReadReply(big.buf, 1, attrs, 1, big.count, big.eof, big.data);
    checkReadReply(
      'READ reply of 512 KiB, copied',
      big.buf.subarray(0, copied),
      EMPTY,
      image.subarray(big.offset, big.offset + big.count),
    );
    rows.push({ id: 'xdr.read-reply.512k.copied', bytesPerOp: big.count, checkedReads: 1 });
    bench.add('XDR encode of a READ reply, 512 KiB, data copied into the reply', () => {
      writeReadReply(big.buf, ++xid, attrs, 1, big.count, big.eof, big.data);
    });

    // Every block the figures read is stored before timing starts. Read-ahead may still load
    // blocks no figure reads (two offsets that happen to follow each other, at a task's turn):
    // those loads are not misses, so only misses are checked.
    await readCache.settle();
    const filled = readCache.stats();
    await bench.run();
    const after = readCache.stats();
    if (after.misses !== filled.misses) {
      throw new Error(
        `serve micro: the read cache missed ${after.misses - filled.misses} time(s) after it was filled: ${JSON.stringify({ filled, after })}`,
      );
    }
    const results = bench.tasks.map((task, k) => {
      const { id, bytesPerOp, checkedReads } = /** @type {(typeof rows)[number]} */ (rows[k]);
      return { id, ...microResult(task, bytesPerOp), checkedReads };
    });
    return { results, diskSize: DISK_SIZE, chain: CHAIN };
  } finally {
    for (const o of open.reverse()) await o.close().catch(() => {});
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * Writes serve-micro.json and serve-micro.md into `out`.
 * @param {string} out
 * @param {Awaited<ReturnType<typeof runServeMicro>>} micro
 * @param {{ seed: number, ms: number }} options
 */
async function writeResults(out, micro, options) {
  const cpu = cpus();
  const results = {
    date: new Date().toISOString(),
    node: process.versions.node,
    cpu: { model: cpu[0]?.model ?? 'unknown', count: cpu.length },
    options,
    ...micro,
  };
  await mkdir(out, { recursive: true });
  await writeFile(join(out, 'serve-micro.json'), `${JSON.stringify(results, null, 2)}\n`);
  const md = [
    `${results.date} · node ${results.node} · ${results.cpu.model} × ${results.cpu.count}`,
    '',
    `Micro-benchmarks of the serve read path (tinybench, ${options.ms} ms per task, a ${DISK_SIZE / 2 ** 20} MiB`,
    'disk backed up into a MemoryStore; see serve/micro.mjs for what each figure includes):',
    '',
    microTable(micro.results),
    '',
  ];
  await writeFile(join(out, 'serve-micro.md'), md.join('\n'));
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const { values } = parseArgs({
    options: {
      ms: { type: 'string', default: '500' },
      seed: { type: 'string', default: '1' },
      out: { type: 'string', default: fileURLToPath(new URL('../results', import.meta.url)) },
      tmp: { type: 'string', default: tmpdir() },
    },
  });
  const options = { seed: Number(values.seed), ms: Number(values.ms) };
  for (const [k, v] of Object.entries(options)) {
    if (!Number.isInteger(v) || v <= 0) throw new Error(`--${k} must be a whole number > 0`);
  }
  const micro = await runServeMicro({ ...options, tmp: values.tmp });
  await writeResults(values.out, micro, options);
  console.log(microTable(micro.results));
}
