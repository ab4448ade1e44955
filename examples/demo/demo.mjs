// The ivmr demo: back up a sample VM disk, change 5% of it, back up again (incremental), list,
// verify, restore both points and check each restored disk with qemu-img against the image as it
// was at that point. Runs the built `ivmr` command (packages/cli/dist/cli.js) on the embedded
// defaults (local directory repository, lz4, 1 MiB blocks) in a temporary directory.
//
//   node examples/demo/demo.mjs          (after the workspace is built; `npm run demo` builds)
//
// Exits non-zero when any step fails or any restored disk differs. IVMR_DEMO_KEEP=1 keeps the
// temporary directory for a look around.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { copyFile, mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const CLI = fileURLToPath(new URL('../../packages/cli/dist/cli.js', import.meta.url));
const MiB = 1024 * 1024;
const DISK_SIZE = 64 * MiB;
const VM = 'demo-vm';

let tmp = '';

/** Prints a command the way a user would type it, with the temp dir shortened to $DEMO. */
function show(cmd, args) {
  const shown = [cmd, ...args].map((a) => a.replaceAll(tmp, '$DEMO'));
  console.log(`\n$ ${shown.join(' ')}`);
}

/** Runs a command, prints it and its output, and fails the demo unless it exits with `expect`. */
function sh(cmd, args, expect = 0) {
  show(cmd, args);
  const file = cmd === 'ivmr' ? process.execPath : cmd;
  const r = spawnSync(file, cmd === 'ivmr' ? [CLI, ...args] : args, { encoding: 'utf8' });
  if (r.error) throw new Error(`${cmd}: ${r.error.message}`);
  const out = `${r.stdout}${r.stderr}`.replaceAll(tmp, '$DEMO').trimEnd();
  if (out) console.log(out.replace(/^/gm, '  '));
  if (r.status !== expect) throw new Error(`${cmd} ${args[0]} exited with ${r.status}`);
  return r.stdout;
}

/** Deterministic pseudo-random bytes (xorshift32). */
function noise(length, seed) {
  const words = new Uint32Array(Math.ceil(length / 4));
  let x = seed >>> 0 || 1;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    words[i] = x >>> 0;
  }
  return Buffer.from(words.buffer, 0, length);
}

/**
 * A 64 MiB sample disk, by MiB: a quarter never written (zeros), text that compresses well
 * (logs), random data that does not (media, encrypted files), and one 4 MiB file stored twice
 * (a copied file, deduplicated).
 */
function makeDisk() {
  const disk = Buffer.alloc(DISK_SIZE);
  const kinds = noise(64, 7);
  for (let mib = 0; mib < 64; mib++) {
    const at = mib * MiB;
    const kind = kinds[mib] % 4;
    if (kind === 1 || kind === 2) {
      let text = '';
      for (let line = 0; text.length < MiB; line++) {
        text += `2024-05-${String((mib % 28) + 1).padStart(2, '0')} 12:${String(line % 60).padStart(2, '0')} app[${mib}]: request ${line} served in ${line % 97} ms\n`;
      }
      disk.write(text.slice(0, MiB), at, 'latin1');
    } else if (kind === 3) {
      noise(MiB, 1000 + mib).copy(disk, at);
    }
  }
  const file = noise(4 * MiB, 99);
  file.copy(disk, 8 * MiB);
  file.copy(disk, 40 * MiB);
  return disk;
}

/** Overwrites 5% of the disk in four extents; returns the changed ranges (what CBT reports). */
function change(disk) {
  const ranges = [];
  const piece = Math.floor((DISK_SIZE * 0.05) / 4);
  for (const [i, at] of [3.3, 17.9, 30.1, 58.6].entries()) {
    const offset = Math.floor(at * MiB);
    noise(piece, 5000 + i).copy(disk, offset);
    ranges.push({ start: offset, length: piece });
  }
  return ranges;
}

async function dirBytes(dir) {
  let total = 0;
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) total += (await stat(join(e.parentPath ?? e.path, e.name))).size;
  }
  return total;
}

const mib = (n) => `${(n / MiB).toFixed(1)} MiB`;

async function demo() {
  if (!existsSync(CLI))
    throw new Error(`${CLI} is missing: build first (npx -y pnpm@10.34.8 -r run build)`);
  if (spawnSync('qemu-img', ['--version']).error) {
    throw new Error('qemu-img is missing: run scripts/setup.sh (installs qemu-utils)');
  }
  tmp = await mkdtemp(join(tmpdir(), 'ivmr-demo-'));
  const repo = join(tmp, 'repo');
  const image = join(tmp, 'vm-disk.raw');
  console.log(`ivmr demo in $DEMO = ${tmp}`);

  const disk = makeDisk();
  await writeFile(image, disk);
  await copyFile(image, join(tmp, 'vm-disk.at-point-1.raw'));
  console.log(
    `\nmade a ${mib(DISK_SIZE)} VM disk image: zeros, log text, random data, a duplicated file`,
  );
  const first = sh('ivmr', ['backup', image, '--repo', repo, '--vm', VM]).trim();

  const ranges = change(disk);
  await writeFile(image, disk);
  await copyFile(image, join(tmp, 'vm-disk.at-point-2.raw'));
  const cbt = join(tmp, 'changed-blocks.json');
  await writeFile(cbt, `${JSON.stringify({ changedArea: ranges }, null, 1)}\n`);
  console.log(
    `\nchanged 5% of the disk in ${ranges.length} places; the list of changed ranges (as VMware CBT reports it) is in changed-blocks.json`,
  );
  const second = sh('ivmr', [
    'backup',
    image,
    '--repo',
    repo,
    '--vm',
    VM,
    '--changed-blocks',
    cbt,
  ]).trim();

  sh('ivmr', ['list', '--repo', repo]);
  sh('ivmr', ['verify', '--repo', repo]);

  let identical = 0;
  for (const [n, point] of [
    [1, first],
    [2, second],
  ]) {
    const out = join(tmp, `restore-${n}`);
    sh('ivmr', ['restore', '--repo', repo, '--vm', VM, '--point', point, '--out', out]);
    const restored = join(out, 'vm-disk.raw');
    const st = await stat(restored);
    console.log(
      `  (${mib(st.size)} image, ${mib(st.blocks * 512)} allocated on disk: zeros are holes)`,
    );
    sh('qemu-img', [
      'compare',
      '-f',
      'raw',
      '-F',
      'raw',
      join(tmp, `vm-disk.at-point-${n}.raw`),
      restored,
    ]);
    identical++;
  }

  const points = JSON.parse(sh('ivmr', ['list', '--repo', repo, '--vm', VM, '--json']));
  const nonZero = points.reduce((a, p) => a + p.allocatedBytes, 0);
  const stored = points.reduce((a, p) => a + p.storedBytes, 0);
  const repoBytes = await dirBytes(repo);
  console.log('\nsummary');
  for (const p of points) {
    console.log(
      `  ${p.kind.padEnd(11)} ${p.id}: ${mib(p.logicalBytes)} disk, ${mib(p.allocatedBytes)} non-zero, stored ${mib(p.storedBytes)} new: dedup ratio ${p.dedupRatio.toFixed(1)}x`,
    );
  }
  console.log(
    `  both points: ${mib(nonZero)} of non-zero data in ${mib(stored)} of blocks (${(nonZero / stored).toFixed(1)}x); repository on disk ${mib(repoBytes)}`,
  );
  console.log(`  restored disks identical to the originals (qemu-img compare): ${identical} of 2`);
  console.log('\ndemo OK');
}

try {
  await demo();
} catch (err) {
  console.error(`\ndemo FAILED: ${err.message}`);
  process.exitCode = 1;
} finally {
  if (tmp && process.env.IVMR_DEMO_KEEP !== '1') await rm(tmp, { recursive: true, force: true });
}
