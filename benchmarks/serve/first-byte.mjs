/**
 * Time to first byte of `ivmr serve`: how long after the command starts a hypervisor's first
 * 4 KiB READ of the VM's disk is answered, on a large (default 2 TiB), mostly sparse disk, and
 * how much memory the server holds meanwhile. The disk is backed up once with `ivmr backup
 * --changed-blocks` (its allocated areas); each round starts `ivmr serve` with an empty cache
 * folder and reads through qemu-io (qemu's nfs driver, libnfs) the moment the readiness line
 * arrives. Every byte read is checked against the image. See ../README.md, "serve: time to
 * first byte".
 *
 * qemu's nfs driver takes no port options: it asks the portmapper on port 111. So the server runs
 * with its embedded portmapper inside a private network namespace (../nfs/namespace.mjs), where
 * 111 is free and loopback is the only interface, and qemu-io runs in the same namespace.
 *
 * Usage: node serve/first-byte.mjs [--size 2T] [--data 256M] [--rounds 3] [--seed 1]
 *        [--out DIR] [--tmp DIR] [--drop-caches] [--cpu-prof DIR]
 */

import { execFileSync } from 'node:child_process';
import { createCipheriv, createHash } from 'node:crypto';
import {
  closeSync,
  ftruncateSync,
  openSync,
  readSync,
  statSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { prng } from '../core/image.mjs';
import { machineBusySeconds, median } from '../core/measure.mjs';
import { startCeph } from '../nfs/ceph.mjs';
import { Cleanups, parseSize, progressLog, wholeNumber } from '../nfs/common.mjs';
import { openNamespace } from '../nfs/namespace.mjs';
import { backUp, checkBuilt, startServe } from './ivmr.mjs';

const KiB = 1024;
const MiB = 1024 * KiB;
const PAGE = 4 * KiB;
/** Places of data on the disk: the first at offset 0, the last ending at the disk's end. */
const PLACES = 32;
/** `ivmr serve`'s default --read-cache, so that the server is the one a user starts. */
const READ_CACHE = 2 * 1024 * MiB;
/** How often the same qemu-io read is repeated against the running server (client cost). */
const REPEATS = 3;
/** The issue's targets: first READ within 1 s of the start on a 2 TiB disk, RSS under 200 MB. */
const TARGETS = [
  {
    id: 'first-read',
    title: 'first 4 KiB READ answered, from the start of `ivmr serve`',
    figure: 'firstReadSeconds',
    unit: 's',
    value: 1,
  },
  {
    id: 'rss',
    title: 'peak RSS of `ivmr serve` (VmHWM) after the reads',
    figure: 'peakRssBytes',
    unit: 'MB',
    value: 200e6,
  },
];

const USAGE = `node serve/first-byte.mjs [options]          (npx -y pnpm@10.34.8 bench:first-byte)

Time from starting \`ivmr serve\` to the first 4 KiB READ answered (qemu-io over NFSv3), on a
large, mostly sparse disk, and the server's RSS. Needs root (a private network namespace, where
the server's embedded portmapper can have port 111: qemu's nfs driver asks it for the ports),
qemu-io (qemu-utils) and the built \`ivmr\` (npx -y pnpm@10.34.8 -r run build).

  --size N[M|G|T]      size of the test disk (default 2T; a sparse file, at least 64M)
  --data N[M|G]        bytes of seeded pseudo-random data, in ${PLACES} places spread over the disk
                       (default 256M; at most a quarter of --size)
  --rounds N           rounds, each with a fresh server and an empty cache folder (default 3)
  --seed N             seed of the data and of where it lies (default 1)
  --out DIR            where serve-first-byte.json and .md go (default benchmarks/results)
  --tmp DIR            where the image, repository and cache folder live (default the OS temp
                       dir; needs about twice --data)
  --store local|s3     where the repository is: a folder (default), or an S3 bucket on a
                       single-node Ceph RADOS Gateway in the namespace (scripts/ceph/cluster.sh);
                       s3 writes serve-first-byte-s3.json and .md
  --drop-caches        drop the page cache before each round (root; the whole machine's)
  --cpu-prof DIR       run ivmr serve under node --cpu-prof, profiles into DIR
  -h, --help           this text`;

const { values: opts } = parseArgs({
  options: {
    size: { type: 'string', default: '2T' },
    data: { type: 'string', default: '256M' },
    rounds: { type: 'string', default: '3' },
    seed: { type: 'string', default: '1' },
    out: { type: 'string', default: fileURLToPath(new URL('../results', import.meta.url)) },
    tmp: { type: 'string', default: tmpdir() },
    'drop-caches': { type: 'boolean', default: false },
    store: { type: 'string', default: 'local' },
    'cpu-prof': { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (opts.help) {
  console.log(USAGE);
  process.exit(0);
}

const options = {
  size: parseSize(opts.size, '--size', 64 * MiB),
  data: parseSize(opts.data, '--data'),
  rounds: wholeNumber(opts.rounds, '--rounds'),
  seed: wholeNumber(opts.seed, '--seed'),
  dropCaches: opts['drop-caches'],
  store: opts.store,
};
if (!['local', 's3'].includes(options.store)) {
  console.error(`--store: local or s3, not ${options.store}`);
  process.exit(2);
}
/** Results file names: serve-first-byte[-s3].json and .md. */
const RESULTS = options.store === 's3' ? 'serve-first-byte-s3' : 'serve-first-byte';
if (options.data * 4 > options.size) {
  console.error(`--data ${opts.data} is more than a quarter of --size ${opts.size}`);
  process.exit(2);
}
const command = `node serve/first-byte.mjs ${process.argv.slice(2).join(' ')}`.trim();
const started = performance.now();
const log = progressLog(started);
const cleanups = new Cleanups(log);

const results = {
  benchmark: 'ivmr-serve-first-byte',
  version: 1,
  command,
  date: new Date().toISOString(),
  node: process.versions.node,
  platform: `${process.platform}-${process.arch}`,
  cpu: { model: cpus()[0]?.model ?? 'unknown', count: cpus().length },
  memoryBytes: totalmem(),
  options: { ...options, readCacheBytes: READ_CACHE, places: PLACES, repeats: REPEATS },
  versions: {},
  seconds: 0,
  /** @type {any} */
  disk: null,
  /** @type {any} */
  backup: null,
  /** @type {any[]} */
  reads: [],
  /** @type {any[]} */
  checks: [],
  /** @type {any[]} */
  rounds: [],
  /** @type {any} */
  summary: null,
  /** @type {any[]} */
  targets: [],
};

try {
  await main();
  results.seconds = (performance.now() - started) / 1000;
  const md = await writeResults(opts.out, results);
  console.log(md);
  log(`wrote ${RESULTS}.json and ${RESULTS}.md into ${opts.out}`);
} catch (err) {
  if (!cleanups.interrupted) {
    process.stderr.write(`\nfirst-byte benchmark failed: ${err?.stack ?? err}\n`);
    process.exitCode = 1;
  }
} finally {
  await cleanups.run();
}

async function main() {
  checkBuilt();
  results.versions = { qemuIo: version('qemu-io', ['--version']) };
  if (results.versions.qemuIo === 'unknown') {
    throw new Error('qemu-io not found: install qemu-utils (apt-get install qemu-utils)');
  }
  const tmp = await mkdtemp(join(resolve(opts.tmp), 'ivmr-bench-first-byte-'));
  cleanups.push(() => rm(tmp, { recursive: true, force: true }));

  const image = join(tmp, 'disk.raw');
  log(`writing a sparse ${opts.size} image with ${opts.data} of data in ${PLACES} places`);
  const places = writeSparseImage(image, options.size, options.data, options.seed);
  const areas = join(tmp, 'disk.areas');
  await writeFile(
    areas,
    `# allocated areas of ${image}\n${places.map((p) => `${p.offset} ${p.length}`).join('\n')}\n`,
  );
  results.disk = {
    size: options.size,
    dataBytes: options.data,
    seed: options.seed,
    allocatedBytes: statSync(image).blocks * 512,
    places,
  };

  const reads = chooseReads(places, options.size);
  const expected = expectedBytes(image, reads);
  results.reads = reads;

  const ns = await openNamespace();
  cleanups.push(async () => ns.close());
  if (options.store === 's3') {
    log('starting a Ceph cluster with its S3 gateway in the namespace (scripts/ceph/cluster.sh)');
    const ceph = await startCeph(ns, join(tmp, 'ceph'));
    cleanups.first(() => ceph.stop());
  }
  const repo = options.store === 's3' ? 's3://ivmr-bench/first-byte' : join(tmp, 'repo');
  log(`ivmr backup --codec lz4 --changed-blocks (the allocated areas) --repo ${repo}`);
  const b = await backUp({ image, repo, codec: 'lz4', changedBlocks: areas, ns });
  const stats = b.point?.disks?.[0]?.stats ?? {};
  results.backup = {
    codec: 'lz4',
    seconds: b.seconds,
    point: b.point?.id ?? null,
    storedBytes: stats.storedBytes ?? null,
    zeroBlocks: stats.zeroBlocks ?? null,
    blocks: stats.blocks ?? null,
  };
  log(`backup: ${b.seconds.toFixed(2)} s, ${stats.storedBytes ?? '?'} bytes stored`);
  // The image is not needed any more; its bytes to check against are in `expected`.
  await rm(image, { force: true });

  const first = reads.filter((r) => r.first);
  const rest = reads.filter((r) => !r.first);

  for (let round = 1; round <= options.rounds; round++) {
    if (options.dropCaches) dropPageCache();
    const busyBefore = machineBusySeconds();
    const s = await startServe(ns, {
      name: `ivmr-serve-round-${round}`,
      repo,
      cache: join(tmp, 'cache'),
      readCacheBytes: READ_CACHE,
      fresh: true,
      logFile: join(tmp, 'serve.log'),
      cpuProfDir: opts['cpu-prof'],
      portmap: 'embedded',
    });
    let stopped = false;
    const stop = async () => {
      if (stopped) return;
      stopped = true;
      await s.stop();
    };
    cleanups.first(stop);
    const url = s.portmapUrl(s.diskPath);

    // The first READ, the moment the server says it is ready.
    const cold = await qemuIo(ns, url, first);
    check(round, 'first read', cold, expected);
    // The same qemu-io command again: what the client's start-up and mount cost, server warm.
    const again = [];
    for (let i = 0; i < REPEATS; i++) {
      const r = await qemuIo(ns, url, first);
      check(round, `first read again (${i + 1})`, r, expected);
      again.push(r.seconds);
    }
    const others = await qemuIo(ns, url, rest);
    check(round, 'other reads', others, expected);
    const memory = s.memory();
    const serverCpuSeconds = s.cpuSeconds();
    const busyAfter = machineBusySeconds();
    const wall = (performance.now() - s.startedAt) / 1000;
    await stop();
    if (!memory) throw new Error('no /proc/<pid>/status for ivmr serve');

    const ready = (s.readyAt - s.startedAt) / 1000;
    const firstRead = (cold.endedAt - s.startedAt) / 1000;
    const clientAgain = median(again);
    const entry = {
      round,
      readySeconds: ready,
      firstReadSeconds: firstRead,
      firstClientSeconds: cold.seconds,
      harnessLagSeconds: (cold.startedAt - s.readyAt) / 1000,
      clientAgainSeconds: again,
      netFirstReadSeconds: firstRead - clientAgain,
      otherReadsSeconds: others.seconds,
      rssBytes: memory.rssBytes,
      peakRssBytes: memory.peakRssBytes,
      serverCpuSeconds,
      machineBusyCores:
        busyBefore === null || busyAfter === null ? null : (busyAfter - busyBefore) / wall,
    };
    results.rounds.push(entry);
    log(
      `round ${round}: ready ${ms(ready)}, first READ ${ms(firstRead)} (client ${ms(cold.seconds)}, again ${ms(clientAgain)}), net ${ms(entry.netFirstReadSeconds)}, RSS ${mb(memory.rssBytes)}, peak ${mb(memory.peakRssBytes)}`,
    );
  }
  results.summary = summarize(results.rounds);
  results.targets = TARGETS.map((t) => {
    const x = results.summary[t.figure];
    const margin = t.value - x.median;
    return {
      ...t,
      diskSize: options.size,
      measured: x.median,
      worst: x.max,
      met: x.median < t.value,
      metEveryRound: x.max < t.value,
      margin,
      ratio: x.median / t.value,
    };
  });
}

/**
 * A sparse image of `size` bytes with `dataBytes` of seeded pseudo-random bytes in PLACES equal
 * places: the first at offset 0, the last ending at the disk's end, the others one per equal
 * slice of the disk at a seeded page-aligned position. Returns the places (its allocated areas).
 * @param {string} path
 * @param {number} size
 * @param {number} dataBytes
 * @param {number} seed
 */
function writeSparseImage(path, size, dataBytes, seed) {
  const length = Math.floor(dataBytes / PLACES / PAGE) * PAGE;
  const slot = Math.floor(size / PLACES / PAGE) * PAGE;
  const rand = prng(seed);
  const fd = openSync(path, 'w');
  try {
    ftruncateSync(fd, size);
    const places = [];
    for (let i = 0; i < PLACES; i++) {
      let offset = i * slot + Math.floor(rand() * ((slot - length) / PAGE)) * PAGE;
      if (i === 0) offset = 0;
      if (i === PLACES - 1) offset = size - length;
      const stream = keystream(`first-byte seed ${seed} place ${i}`);
      const chunk = Buffer.allocUnsafe(Math.min(length, 4 * MiB));
      for (let done = 0; done < length; done += chunk.length) {
        stream(chunk);
        writeSync(fd, chunk, 0, Math.min(chunk.length, length - done), offset + done);
      }
      places.push({ offset, length });
    }
    return places;
  } finally {
    closeSync(fd);
  }
}

/**
 * AES-256-CTR keystream of a label: seeded, incompressible, fast.
 * @param {string} label
 */
function keystream(label) {
  const key = createHash('sha256').update(label).digest();
  const cipher = createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
  let zeros = Buffer.alloc(0);
  return (/** @type {Buffer} */ out) => {
    if (zeros.length < out.length) zeros = Buffer.alloc(out.length);
    cipher.update(zeros.subarray(0, out.length)).copy(out);
  };
}

/**
 * Where the benchmark reads 4 KiB: first (timed) in the middle of the place nearest the disk's
 * middle, then in the middle of the widest hole, at offset 0 and in the disk's last 4 KiB.
 * @param {{ offset: number, length: number }[]} places
 * @param {number} size
 */
function chooseReads(places, size) {
  const mid = /** @type {{ offset: number, length: number }} */ (places[PLACES >> 1]);
  let hole = { from: 0, length: 0 };
  for (let i = 0; i + 1 < places.length; i++) {
    const a = /** @type {{ offset: number, length: number }} */ (places[i]);
    const from = a.offset + a.length;
    const length = /** @type {{ offset: number }} */ (places[i + 1]).offset - from;
    if (length > hole.length) hole = { from, length };
  }
  const page = (/** @type {number} */ n) => Math.floor(n / PAGE) * PAGE;
  return [
    { what: 'data, middle of the disk', offset: mid.offset + page(mid.length / 2), first: true },
    { what: 'zero, middle of the widest hole', offset: hole.from + page(hole.length / 2) },
    { what: 'data, offset 0', offset: 0 },
    { what: 'data, last 4 KiB', offset: size - PAGE },
  ].map((r) => ({ first: false, ...r }));
}

/**
 * The image's bytes at each read, by offset; fails when the layout did not give data where data
 * is expected or zeros where a hole is (the checks would prove nothing).
 * @param {string} image
 * @param {{ what: string, offset: number }[]} reads
 */
function expectedBytes(image, reads) {
  const fd = openSync(image, 'r');
  try {
    /** @type {Map<number, Buffer>} */
    const out = new Map();
    for (const r of reads) {
      const buf = Buffer.alloc(PAGE);
      if (readSync(fd, buf, 0, PAGE, r.offset) !== PAGE)
        throw new Error(`short read at ${r.offset}`);
      const zero = buf.every((x) => x === 0);
      if (zero !== r.what.startsWith('zero')) {
        throw new Error(`image: ${r.what} at ${r.offset} is ${zero ? '' : 'not '}all zero`);
      }
      out.set(r.offset, buf);
    }
    return out;
  } finally {
    closeSync(fd);
  }
}

/**
 * One qemu-io process (in `ns`) reading 4 KiB at each of `reads` with a hexdump (-v), timed from
 * the spawn to its exit. Fails when it does not exit 0 within 60 s.
 * @param {import('../nfs/namespace.mjs').Namespace} ns
 * @param {string} url
 * @param {{ offset: number }[]} reads
 */
async function qemuIo(ns, url, reads) {
  const cmds = reads.flatMap((r) => ['-c', `read -v ${r.offset} ${PAGE}`]);
  const startedAt = performance.now();
  const proc = ns.spawn(['qemu-io', '-r', '-f', 'raw', ...cmds, url], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  proc.stdout?.on('data', (d) => {
    stdout += d;
  });
  proc.stderr?.on('data', (d) => {
    stderr += d;
  });
  const timer = setTimeout(() => proc.kill('SIGKILL'), 60_000);
  const code = await new Promise((res, rej) => {
    proc.once('error', rej);
    proc.once('close', (c, signal) => res(c ?? signal));
  }).finally(() => clearTimeout(timer));
  const endedAt = performance.now();
  if (code !== 0) {
    throw new Error(`qemu-io ${cmds.join(' ')} ${url} exited with ${code}: ${stderr.trim()}`);
  }
  return {
    startedAt,
    endedAt,
    seconds: (endedAt - startedAt) / 1000,
    got: parseDumps(stdout),
    output: stdout + stderr,
  };
}

/**
 * The bytes of each `read -v` in qemu-io's output, by offset: hexdump lines (`ADDR:  hh hh ...
 * ascii`, 16 bytes each) followed by `read N/N bytes at offset X`.
 * @param {string} text
 */
function parseDumps(text) {
  /** @type {Map<number, Buffer>} */
  const out = new Map();
  /** @type {{ addr: number, bytes: number[] }[]} */
  let lines = [];
  for (const line of text.split('\n')) {
    const dump = /^([0-9a-f]+): {2}((?:[0-9a-f]{2} ){16})/.exec(line);
    if (dump) {
      const bytes = /** @type {string} */ (dump[2])
        .trim()
        .split(' ')
        .map((h) => Number.parseInt(h, 16));
      lines.push({ addr: Number.parseInt(/** @type {string} */ (dump[1]), 16), bytes });
      continue;
    }
    const done = /^read (\d+)\/(\d+) bytes at offset (\d+)/.exec(line);
    if (!done) continue;
    const offset = Number(done[3]);
    const buf = Buffer.alloc(Number(done[1]));
    let filled = 0;
    for (const l of lines) {
      if (l.addr !== offset + filled) throw new Error(`qemu-io dump: line ${l.addr} out of place`);
      buf.set(l.bytes, filled);
      filled += l.bytes.length;
    }
    if (filled !== buf.length || done[1] !== done[2]) {
      throw new Error(`qemu-io: ${line} with ${filled} bytes dumped`);
    }
    out.set(offset, buf);
    lines = [];
  }
  return out;
}

/**
 * Checks the bytes qemu-io got against the image's; records each check; throws at a wrong one.
 * @param {number} round
 * @param {string} what
 * @param {{ got: Map<number, Buffer>, output: string }} run
 * @param {Map<number, Buffer>} expected
 */
function check(round, what, run, expected) {
  for (const [offset, bytes] of run.got) {
    const want = expected.get(offset);
    const ok = want !== undefined && bytes.equals(want);
    const read = results.reads.find((r) => r.offset === offset)?.what ?? '?';
    results.checks.push({ round, what: `${what}: ${read}`, offset, bytes: bytes.length, ok });
    if (!ok) {
      const at = want ? bytes.findIndex((x, i) => x !== want[i]) : -1;
      throw new Error(
        `round ${round}, ${what}: wrong bytes at offset ${offset}${at >= 0 ? ` (first difference at +${at})` : ''}`,
      );
    }
  }
  if (run.got.size === 0) throw new Error(`round ${round}, ${what}: no read in ${run.output}`);
}

/**
 * Median and max over the rounds of every figure of the report.
 * @param {any[]} rounds
 */
function summarize(rounds) {
  const figures = [
    'readySeconds',
    'firstReadSeconds',
    'firstClientSeconds',
    'netFirstReadSeconds',
    'harnessLagSeconds',
    'rssBytes',
    'peakRssBytes',
    'serverCpuSeconds',
  ];
  /** @type {Record<string, { median: number, max: number }>} */
  const out = {};
  for (const f of figures) {
    const xs = rounds.map((r) => r[f]);
    out[f] = { median: median(xs), max: Math.max(...xs) };
  }
  const again = rounds.flatMap((r) => r.clientAgainSeconds);
  out.clientAgainSeconds = { median: median(again), max: Math.max(...again) };
  return out;
}

/**
 * Drops the kernel's page cache, so that the server's first reads of the repository come from the
 * disk. Needs root.
 */
function dropPageCache() {
  execFileSync('sync');
  writeFileSync('/proc/sys/vm/drop_caches', '3');
}

/**
 * @param {string} cmd
 * @param {string[]} args
 */
function version(cmd, args) {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8' }).trim().split('\n')[0] ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

/** @param {number} s seconds */
function ms(s) {
  return `${(s * 1000).toFixed(Math.abs(s) < 0.1 ? 1 : 0)} ms`;
}

/** @param {number} b bytes */
function mb(b) {
  return `${(b / 1e6).toFixed(1)} MB`;
}

/**
 * Bytes as a binary size up to TiB.
 * @param {number} bytes
 */
function binary(bytes) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = bytes;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${Number.isInteger(v) ? v : v.toFixed(1)} ${units[u]}`;
}

/**
 * The markdown report.
 * @param {any} r the results object written to serve-first-byte.json
 */
function markdown(r) {
  const s = r.summary;
  const d = r.disk;
  const out = [];
  const place = binary(d.places[0].length);
  out.push(
    `Command: \`${r.command}\`  `,
    `${r.date} · node ${r.node} · ${r.cpu.model} × ${r.cpu.count} · ${r.versions.qemuIo} · ${r.seconds.toFixed(0)} s`,
    '',
    `Repository: ${r.options.store === 's3' ? "an S3 bucket on a single-node Ceph RADOS Gateway (memstore) on the namespace's loopback" : 'a local folder'}.`,
    '',
    `Disk: ${binary(d.size)} raw, sparse, ${binary(d.dataBytes)} of seeded pseudo-random data in ${d.places.length} places of ${place} (the first at offset 0, the last ending at the disk's end), backed up with \`ivmr backup --codec lz4 --changed-blocks\` (its allocated areas) in ${r.backup.seconds.toFixed(2)} s, ${r.backup.storedBytes === null ? '?' : binary(r.backup.storedBytes)} stored. ${r.options.rounds} round${r.options.rounds === 1 ? '' : 's'}: \`ivmr serve\` started with an empty cache folder (read cache ${binary(r.options.readCacheBytes)}) and its embedded portmapper in a private network namespace; the moment its readiness line arrives, qemu-io (qemu's nfs driver, libnfs) reads 4 KiB of data in the middle of the disk; the same qemu-io command ${r.options.repeats} times more measures the client's own start-up and mount; then 4 KiB in a hole, at offset 0 and at the end. Page cache ${r.options.dropCaches ? 'dropped before each round' : 'not dropped (the repository is as warm as the backup left it)'}.`,
    '',
  );
  const f = (/** @type {{ median: number, max: number }} */ x, /** @type {string} */ unit) =>
    unit === 'MB' ? [mb(x.median), mb(x.max)] : [ms(x.median), ms(x.max)];
  const rounds = (/** @type {string} */ key, /** @type {string} */ unit) =>
    r.rounds.map((x) => (unit === 'MB' ? mb(x[key]) : ms(x[key]))).join(', ');
  out.push('| Figure | Median | Max | Rounds |', '| --- | ---: | ---: | --- |');
  const rows = [
    ['`ivmr serve` spawned → readiness line', 'readySeconds', 's'],
    ['spawned → first 4 KiB READ answered (qemu-io exited)', 'firstReadSeconds', 's'],
    ['… of which the first qemu-io run (start-up, mount, READ)', 'firstClientSeconds', 's'],
    ['the same qemu-io run again, server warm (client cost)', 'clientAgainSeconds', 's'],
    ['first READ net of client start-up', 'netFirstReadSeconds', 's'],
    ['RSS after the reads (VmRSS)', 'rssBytes', 'MB'],
    ['peak RSS (VmHWM)', 'peakRssBytes', 'MB'],
  ];
  for (const [title, key, unit] of rows) {
    const [med, max] = f(s[key], unit);
    const each =
      key === 'clientAgainSeconds'
        ? r.rounds.map((x) => x.clientAgainSeconds.map(ms).join(' ')).join('; ')
        : rounds(key, unit);
    out.push(`| ${title} | ${med} | ${max} | ${each} |`);
  }
  const busy = r.rounds
    .map((x) => (x.machineBusyCores === null ? '?' : x.machineBusyCores.toFixed(2)))
    .join(', ');
  out.push(
    '',
    `\`ivmr serve\` CPU up to the end of the reads: ${ms(s.serverCpuSeconds.median)} (median). The harness's own lag from the readiness line to qemu-io's spawn: ${ms(s.harnessLagSeconds.median)}. Machine busy during each round (every process, this benchmark's own included): ${busy} of ${r.cpu.count} cores.`,
    '',
    `| Target (issue) | Disk | Median | Worst round | Target | Met | Margin |`,
    '| --- | --- | ---: | ---: | ---: | --- | --- |',
  );
  for (const t of r.targets) {
    const show = (/** @type {number} */ v) => (t.unit === 'MB' ? mb(v) : ms(v));
    const met = t.met ? (t.metEveryRound ? 'yes' : 'yes in the median, not every round') : 'no';
    const margin =
      t.margin >= 0
        ? `${show(t.margin)} to spare (measured: ${(t.ratio * 100).toFixed(0)}% of the target)`
        : `${show(-t.margin)} over (${t.ratio.toFixed(2)}×)`;
    out.push(
      `| ${t.title} | ${binary(t.diskSize)} | ${show(t.measured)} | ${show(t.worst)} | < ${show(t.value)} | ${met} | ${margin} |`,
    );
  }
  const ok = r.checks.every((c) => c.ok);
  out.push(
    '',
    `Bytes checked against the image: ${r.checks.length} reads of 4 KiB (${r.reads.map((x) => `${x.what} at ${x.offset}`).join('; ')}), ${ok ? 'all right' : 'SOME WRONG'}.`,
  );
  return `${out.join('\n')}\n`;
}

/**
 * Writes serve-first-byte.json and serve-first-byte.md into `dir`; returns the markdown.
 * @param {string} dir
 * @param {any} r
 */
async function writeResults(dir, r) {
  await mkdir(dir, { recursive: true });
  const md = markdown(r);
  await writeFile(join(dir, `${RESULTS}.json`), `${JSON.stringify(r, null, 2)}\n`);
  await writeFile(join(dir, `${RESULTS}.md`), md);
  return md;
}
