/**
 * The peer of the serve benchmark's S3 store: what this client (`S3Store`'s GETs, the ones the
 * read path makes) and this gateway do at all, with no NFS, cache or decoding on top. Run inside the benchmark's
 * namespace; prints one JSON line.
 *
 * - random 64 KiB ranged GETs (one frame: what a cold 4 KiB random read costs) at QD16;
 * - sequential 1 MiB ranged GETs (one block: what read-ahead asks for) at QD4.
 *
 * Usage: node serve/s3-gets.mjs s3://bucket/prefix SECONDS
 */
import { fileURLToPath } from 'node:url';

const dist = (pkg) =>
  fileURLToPath(new URL(`../../packages/${pkg}/dist/index.js`, import.meta.url));
const { S3Store } = await import(dist('store-s3'));

const [url, secondsArg] = process.argv.slice(2);
const seconds = Number(secondsArg ?? 5);
const [bucket, ...prefix] = (url ?? '').replace(/^s3:\/\//, '').split('/');
const store = await S3Store.open({
  bucket,
  prefix: prefix.join('/'),
  endpoint: process.env.AWS_ENDPOINT_URL,
});
const packs = [];
for await (const p of store.list('pack')) if (p.size > 2 * 1024 * 1024) packs.push(p);
if (packs.length === 0) throw new Error(`${url}: no packs to read`);

/** A seeded xorshift32 in [0, 1): runs are repeatable. */
let x = 12345;
const rand = () => {
  x ^= x << 13;
  x ^= x >>> 17;
  x ^= x << 5;
  return (x >>> 0) / 0x1_0000_0000;
};

/**
 * Runs `next()` GETs at `qd` for `seconds`; returns GETs per second, MB/s and the client's CPU
 * per GET.
 * @param {number} qd
 * @param {() => { name: string, offset: number, length: number }} next
 */
async function measure(qd, next) {
  const until = performance.now() + seconds * 1000;
  let gets = 0;
  let bytes = 0;
  const started = performance.now();
  const cpu = process.cpuUsage();
  await Promise.all(
    Array.from({ length: qd }, async () => {
      while (performance.now() < until) {
        const g = next();
        const b = await store.get('pack', g.name, { offset: g.offset, length: g.length });
        if (b.length !== g.length) throw new Error(`short GET: ${b.length} of ${g.length}`);
        gets++;
        bytes += b.length;
      }
    }),
  );
  const wall = (performance.now() - started) / 1000;
  const used = process.cpuUsage(cpu);
  return {
    getsPerSecond: gets / wall,
    mbPerSecond: bytes / wall / 1e6,
    clientCpuUsPerGet: (used.user + used.system) / gets,
  };
}

const K64 = 64 * 1024;
const M1 = 1024 * 1024;
const random64k = await measure(16, () => {
  const p = packs[Math.floor(rand() * packs.length)];
  return { name: p.name, offset: Math.floor(rand() * (p.size - K64)), length: K64 };
});
let pack = 0;
let offset = 0;
const sequential1m = await measure(4, () => {
  if (offset + M1 > packs[pack].size) {
    pack = (pack + 1) % packs.length;
    offset = 0;
  }
  const g = { name: packs[pack].name, offset, length: M1 };
  offset += M1;
  return g;
});
await store.close();
console.log(JSON.stringify({ random64k, sequential1m }));
