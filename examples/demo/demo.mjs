// The ivmr demo, the main job on embedded defaults: make a sample VM disk (an MBR partition table
// and an ext4 filesystem with files), back it up, change files in it, back it up again
// (incremental, with a VMware-CBT-style changed-blocks list), list, verify, restore both points
// and check each against the image as it was, then start instant recovery: `ivmr serve` presents
// the newest point as an NFS datastore, qemu-img checks the disk through nfs://, and the ESXi
// commands to mount and register the VM are printed. The server keeps running until Ctrl-C.
//
//   node examples/demo/demo.mjs [--no-wait]   (after the workspace is built; `npm run demo` builds)
//
// --no-wait stops the server after the check. Exits non-zero when any step fails or any disk
// differs. IVMR_DEMO_KEEP=1 keeps the temporary directory for a look around.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
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

const PART_START = MiB;

/**
 * A 64 MiB sample disk as a hypervisor would see it: an MBR with one Linux partition from 1 MiB
 * holding an ext4 filesystem made by mkfs.ext4 from a folder of files (logs that compress well,
 * random data that does not, and one file stored twice, which deduplicates).
 */
async function makeDisk(dir) {
  const files = join(dir, 'rootfs');
  await mkdir(join(files, 'var/log'), { recursive: true });
  await mkdir(join(files, 'srv/data'), { recursive: true });
  let log = '';
  for (let line = 0; log.length < 6 * MiB; line++) {
    log += `2024-05-${String((line % 28) + 1).padStart(2, '0')} 12:${String(line % 60).padStart(2, '0')} app: request ${line} served in ${line % 97} ms\n`;
  }
  await writeFile(join(files, 'var/log/app.log'), log);
  await writeFile(join(files, 'srv/data/blob.bin'), noise(12 * MiB, 7));
  const copied = noise(4 * MiB, 99);
  await writeFile(join(files, 'srv/data/report.pdf'), copied);
  await writeFile(join(files, 'srv/data/report-copy.pdf'), copied);
  await writeFile(join(files, 'hostname'), 'demo-vm\n');
  const fs = join(dir, 'rootfs.ext4');
  sh('mkfs.ext4', [
    '-q',
    '-F',
    '-L',
    'demo-root',
    '-d',
    files,
    fs,
    `${(DISK_SIZE - PART_START) / 1024}k`,
  ]);
  const disk = Buffer.alloc(DISK_SIZE);
  (await readFile(fs)).copy(disk, PART_START);
  // MBR: one primary partition, type 0x83, LBA start 2048, to the end of the disk.
  const entry = disk.subarray(446, 462);
  entry[4] = 0x83;
  entry.writeUInt32LE(PART_START / 512, 8);
  entry.writeUInt32LE((DISK_SIZE - PART_START) / 512, 12);
  disk[510] = 0x55;
  disk[511] = 0xaa;
  return disk;
}

/**
 * Changes files inside the filesystem with debugfs (a new log file, an overwritten data file),
 * as a running VM would between two backups; returns the byte ranges of the disk that changed
 * (what VMware's changed block tracking reports), found by comparing the images.
 */
async function change(dir, disk) {
  const fs = join(dir, 'rootfs.ext4');
  await writeFile(join(dir, 'new.log'), 'rotated log\n'.repeat(200_000));
  await writeFile(join(dir, 'blob.bin'), noise(3 * MiB, 8));
  sh('debugfs', ['-w', '-R', `write ${join(dir, 'new.log')} /var/log/app.log.1`, fs]);
  sh('debugfs', ['-w', '-R', 'rm /srv/data/blob.bin', fs]);
  sh('debugfs', ['-w', '-R', `write ${join(dir, 'blob.bin')} /srv/data/blob.bin`, fs]);
  const after = Buffer.from(disk);
  (await readFile(fs)).copy(after, PART_START);
  const ranges = [];
  const grain = 64 * 1024;
  for (let at = 0; at < DISK_SIZE; at += grain) {
    if (after.subarray(at, at + grain).equals(disk.subarray(at, at + grain))) continue;
    const last = ranges.at(-1);
    if (last && last.start + last.length === at) last.length += grain;
    else ranges.push({ start: at, length: grain });
  }
  return { after, ranges };
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

  const disk = await makeDisk(tmp);
  await writeFile(image, disk);
  await copyFile(image, join(tmp, 'vm-disk.at-point-1.raw'));
  console.log(
    `\nmade a ${mib(DISK_SIZE)} VM disk image: MBR + ext4 with logs, random data and a copied file`,
  );
  const first = sh('ivmr', ['backup', image, '--repo', repo, '--vm', VM]).trim();

  const { after, ranges } = await change(tmp, disk);
  await writeFile(image, after);
  await copyFile(image, join(tmp, 'vm-disk.at-point-2.raw'));
  const cbt = join(tmp, 'changed-blocks.json');
  await writeFile(cbt, `${JSON.stringify({ changedArea: ranges }, null, 1)}\n`);
  console.log(
    `\nchanged files in the filesystem: ${mib(ranges.reduce((a, r) => a + r.length, 0))} of the disk in ${ranges.length} ranges; the list (as VMware CBT reports it) is in changed-blocks.json`,
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
  await instantRecovery(repo, second);
  console.log('\ndemo OK');
}

/**
 * Starts `ivmr serve` on the newest point, checks the disk through nfs:// with qemu-img when a
 * portmapper is up (qemu finds servers only through one), prints the ESXi steps and waits.
 */
async function instantRecovery(repo, point) {
  const cache = join(tmp, 'cache');
  // The sample VM is small: ask for the room it needs instead of the production default
  // (max(20 GiB, 15% of the disks) plus 5% of the volume). Logs: warnings and errors only.
  const args = [
    'serve',
    '--repo',
    repo,
    '--cache',
    cache,
    '--vm',
    `${VM}@${point}`,
    '--min-free',
    '256M',
    '--cache-floor',
    '1',
    '--log-level',
    'warn',
    '--json',
  ];
  show(
    'ivmr',
    args.filter((a) => a !== '--json'),
  );
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  const ready = await new Promise((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (b) => {
      out += b;
      const line = out.split('\n').find((l) => l.startsWith('{'));
      if (line) resolve(JSON.parse(line));
    });
    child.once('exit', (code) => reject(new Error(`ivmr serve exited with ${code}`)));
  });
  const stopped = new Promise((resolve) => child.once('exit', resolve));
  try {
    const flat = `nfs://${ready.host}${ready.export}/${ready.sessions[0].disks[0]}`;
    console.log(
      `  datastore nfs://${ready.host}${ready.export}: NFS port ${ready.nfsPort}, portmapper ${ready.portmapPort ?? 'none'}`,
    );
    if (ready.note) console.log(`  note: ${ready.note}`);
    if (ready.portmapPort === 111 || ready.portmapPort === null) {
      sh('qemu-img', [
        'compare',
        '-f',
        'raw',
        '-F',
        'raw',
        flat,
        join(tmp, 'vm-disk.at-point-2.raw'),
      ]);
    }
    const vmx = `/vmfs/volumes/ivmr/${ready.sessions[0].vmx}`;
    console.log(`\nOn an ESXi host that can reach this machine (listen on a routable address with --listen and --allow):
  esxcli storage nfs add -H <this host> -s ${ready.export} -v ivmr
  vim-cmd solo/registervm ${vmx}
  vim-cmd vmsvc/power.on <vmid printed by registervm>`);
    if (process.argv.includes('--no-wait')) return;
    console.log(
      '\nivmr serve keeps running; press Ctrl-C to stop it (the session keeps its writes in $DEMO/cache).',
    );
    await new Promise((resolve) => {
      process.once('SIGINT', resolve);
      process.once('SIGTERM', resolve);
    });
  } finally {
    child.kill('SIGTERM');
    await stopped;
  }
}

try {
  await demo();
} catch (err) {
  console.error(`\ndemo FAILED: ${err.message}`);
  process.exitCode = 1;
} finally {
  if (tmp && process.env.IVMR_DEMO_KEEP !== '1') await rm(tmp, { recursive: true, force: true });
}
