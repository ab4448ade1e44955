/**
 * Every benchmark, one after the other, with its defaults: what `pnpm bench` runs. Builds the
 * workspace first (the benchmarks run the built packages and the built `ivmr` command); the
 * benchmarks that need fio's nfs engine and nfs-ganesha set them up on their first run. Stops at
 * the first benchmark that fails. See README.md.
 *
 * Usage: node all.mjs [--only core,vmdk,...] [--skip nfs,...]
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

/** Each benchmark: its id, its script (relative to benchmarks/), its arguments and its results. */
export const BENCHMARKS = [
  { id: 'core', script: 'core/run.mjs', results: 'core.json' },
  { id: 'vmdk', script: 'vmdk/run.mjs', results: 'vmdk.json' },
  { id: 'cache', script: 'cache/run.mjs', results: 'cache.json' },
  { id: 'nfs', script: 'nfs/run.mjs', results: 'nfs.json' },
  { id: 'serve', script: 'serve/run.mjs', results: 'serve.json' },
  { id: 'serve-micro', script: 'serve/micro.mjs', results: 'serve-micro.json' },
  { id: 'serve-first-byte', script: 'serve/first-byte.mjs', results: 'serve-first-byte.json' },
  { id: 'boot', script: 'boot/run.mjs', results: 'boot.json' },
  // Issue #8: cold reads from an S3 repository (a Ceph RGW in the namespace) beside a local one.
  {
    id: 'serve-s3',
    script: 'serve/run.mjs',
    args: [
      ...['--stores', 'lz4,s3', '--temps', 'cold', '--jobs', 'read-512k-qd4,randread-4k-qd16'],
      ...['--out', 'results/s3'],
    ],
    results: 's3/serve.json',
  },
  {
    id: 'serve-first-byte-s3',
    script: 'serve/first-byte.mjs',
    args: ['--store', 's3'],
    results: 'serve-first-byte-s3.json',
  },
];

const here = fileURLToPath(new URL('.', import.meta.url));
const { values } = parseArgs({
  options: { only: { type: 'string' }, skip: { type: 'string' }, help: { type: 'boolean' } },
});
if (values.help) {
  console.log(`node all.mjs [--only LIST] [--skip LIST]     (npx -y pnpm@10.34.8 bench)

Builds the workspace, then runs every benchmark with its defaults; results go to results/.
Benchmarks: ${BENCHMARKS.map((b) => b.id).join(', ')}.`);
  process.exit(0);
}
const ids = (/** @type {string | undefined} */ s) => (s ? s.split(',').filter(Boolean) : []);
const only = ids(values.only);
const skip = ids(values.skip);
for (const id of [...only, ...skip]) {
  if (!BENCHMARKS.some((b) => b.id === id)) {
    console.error(`unknown benchmark ${id}: one of ${BENCHMARKS.map((b) => b.id).join(', ')}`);
    process.exit(2);
  }
}
const chosen = BENCHMARKS.filter(
  (b) => (only.length === 0 || only.includes(b.id)) && !skip.includes(b.id),
);

/** Runs a command in benchmarks/ with the terminal attached; exits like it when it fails. */
function step(/** @type {string} */ what, /** @type {string[]} */ argv) {
  const started = performance.now();
  console.error(`\n=== ${what}: ${argv.join(' ')}`);
  const r = spawnSync(argv[0], argv.slice(1), { cwd: here, stdio: 'inherit' });
  const seconds = ((performance.now() - started) / 1000).toFixed(0);
  if (r.status !== 0) {
    console.error(`=== ${what} failed (${r.error?.message ?? `exit ${r.status ?? r.signal}`})`);
    process.exit(r.status || 1);
  }
  console.error(`=== ${what}: done in ${seconds} s`);
}

step('build', ['npx', '-y', 'pnpm@10.34.8', '-r', 'run', 'build']);
for (const b of chosen) step(b.id, [process.execPath, b.script, ...(b.args ?? [])]);
console.error(`\nall done: ${chosen.map((b) => `results/${b.results}`).join(', ')}`);
