// The ivmr demo, the main job on embedded defaults: make a sample VM disk (an MBR partition table
// and an ext4 filesystem with files), back it up, change files in it, back it up again
// (incremental, with a VMware-CBT-style changed-blocks list), list, verify, restore both points
// and check each against the image as it was, then start instant recovery: `ivmr serve` presents
// the newest point as an NFS datastore, a real NFS client reads the disk back from it (qemu-img
// through nfs:// when a portmapper answers on port 111, else libnfs's nfs-ls and nfs-cat with the
// ports in the URL), and the ESXi commands to mount and register the VM are printed. The server
// keeps running until Ctrl-C.
//
//   node examples/demo/demo.mjs [--portmap auto|embedded|system|off] [--nfs-port N] [--no-wait]
//   (after the workspace is built; `npm run demo` sets up, builds, and passes its options on)
//
// --portmap is passed to `ivmr serve` (default auto: the embedded portmapper when port 111 can be
// bound, else the system rpcbind, else none). --no-wait stops the server after the check. Exits
// non-zero when any step fails or any disk differs. On exit (Ctrl-C included) the demo stops the
// server and removes its temporary directory, the serve cache with the session's writes
// included; IVMR_DEMO_KEEP=1 keeps the directory for a look around.
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const USAGE = `usage: node examples/demo/demo.mjs [--portmap auto|embedded|system|off] [--nfs-port N] [--no-wait]

  --portmap <mode>  portmapper mode passed to ivmr serve (default auto: embedded on port 111 when
                    it can bind it, else the system rpcbind, else none)
  --no-wait         stop ivmr serve after the datastore check instead of waiting for Ctrl-C
  --nfs-port <n>    NFS and MOUNT port passed to ivmr serve (default 2049; 0: any free port)
  -h, --help        print this help

IVMR_DEMO_KEEP=1 keeps the temporary directory (repository, images, serve cache) on exit.`;
const PORTMAP_MODES = ['auto', 'embedded', 'system', 'off'];

/** The command-line options; prints usage and exits on --help or a bad option. */
function options() {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        portmap: { type: 'string', default: 'auto' },
        'no-wait': { type: 'boolean', default: false },
        'nfs-port': { type: 'string' },
        help: { type: 'boolean', short: 'h', default: false },
      },
    }));
    if (!PORTMAP_MODES.includes(values.portmap)) {
      throw new Error(
        `--portmap must be one of ${PORTMAP_MODES.join(', ')}, got '${values.portmap}'`,
      );
    }
  } catch (err) {
    console.error(`${err.message}\n\n${USAGE}`);
    process.exit(2);
  }
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  return { portmap: values.portmap, wait: !values['no-wait'], nfsPort: values['nfs-port'] };
}

const OPTIONS = options();
const CLI = fileURLToPath(new URL('../../packages/cli/dist/cli.js', import.meta.url));
const MiB = 1024 * 1024;
const DISK_SIZE = 64 * MiB;
const VM = 'demo-vm';

let tmp = '';

// Ctrl-C (SIGINT) or SIGTERM: the first one stops the demo at the next step (or stops the waiting
// server) so that it cleans up; one more kills the server if it is still stopping.
let signals = 0;
let onRepeatedSignal = () => {};
let onInterrupt;
const interrupted = new Promise((resolve) => {
  onInterrupt = resolve;
});
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    signals++;
    if (signals === 1) onInterrupt();
    else onRepeatedSignal();
  });
}

/** Quotes a word for a POSIX shell, leaving `$DEMO` expandable. */
function quote(word) {
  if (/^[\w@%+=:,./$-]+$/.test(word)) return word;
  if (!/[$'\\]/.test(word)) return `'${word}'`;
  return `"${word.replace(/["\\`]/g, '\\$&')}"`;
}

/** Prints a command the way a user would type it, with the temp dir shortened to $DEMO. */
function show(cmd, args) {
  const shown = [cmd, ...args].map((a) => quote(a.replaceAll(tmp, '$DEMO')));
  console.log(`\n$ ${shown.join(' ')}`);
}

/** Prints a command's output indented, without blank lines. */
function indent(text) {
  const lines = text
    .replaceAll(tmp, '$DEMO')
    .split('\n')
    .filter((l) => l.trim() !== '');
  if (lines.length > 0) console.log(lines.map((l) => `  ${l}`).join('\n'));
}

/** Runs a command, prints it and its output, and fails the demo unless it exits with `expect`. */
function sh(cmd, args, expect = 0) {
  show(cmd, args);
  const file = cmd === 'ivmr' ? process.execPath : cmd;
  const r = spawnSync(file, cmd === 'ivmr' ? [CLI, ...args] : args, { encoding: 'utf8' });
  if (r.error) throw new Error(`${cmd}: ${r.error.message}`);
  indent(`${r.stdout}${r.stderr}`);
  if (signals > 0) throw new Error('interrupted');
  if (r.status !== expect) throw new Error(`${cmd} ${args[0]} exited with ${r.signal ?? r.status}`);
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
}

/**
 * Starts `ivmr serve` on the newest point, reads the disk back through NFS with a real client and
 * compares it with the image as it was backed up, prints the ESXi steps, and waits for Ctrl-C
 * (unless --no-wait). The check uses qemu-img through nfs:// when a portmapper answers on port
 * 111 (qemu finds servers only through one); with no portmapper it uses libnfs's nfs-ls and
 * nfs-cat, which take the NFS and MOUNT ports in the URL.
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
  ];
  if (OPTIONS.portmap !== 'auto') args.push('--portmap', OPTIONS.portmap);
  if (OPTIONS.nfsPort !== undefined) args.push('--nfs-port', OPTIONS.nfsPort);
  show('ivmr', args);
  const server = await startServe([...args, '--json']);
  try {
    const { ready } = server;
    const disk = ready.sessions[0].disks[0];
    // The portmapper serve ended up with (`auto` falls back from embedded to system to none).
    const { portmap, portmapPort } = ready;
    const described = {
      embedded: `embedded on port ${portmapPort}`,
      system: `system rpcbind on port ${portmapPort}`,
      off: 'off',
    }[portmap];
    console.log(
      `  datastore nfs://${ready.host}${ready.export}: NFS port ${ready.nfsPort}, MOUNT port ${ready.mountPort}, portmapper ${described}`,
    );
    const image = join(tmp, 'vm-disk.at-point-2.raw');
    if (portmapPort === 111) {
      sh('qemu-img', [
        'compare',
        '-f',
        'raw',
        '-F',
        'raw',
        `nfs://${ready.host}${ready.export}/${disk}`,
        image,
      ]);
    } else {
      const why =
        portmap === 'off' ? 'no portmapper (--portmap off)' : `portmapper on ${portmapPort}`;
      console.log(`  note: ${ready.note ?? `${why}: qemu and ESXi need one on port 111`}`);
      console.log(
        '\nqemu-img finds an NFS server only through a portmapper on port 111, so libnfs tools check the datastore instead, with the ports in the URL:',
      );
      await checkWithLibnfs(ready, disk, image);
    }
    console.log(`\nOn an ESXi host that can reach this machine (listen on a routable address with --listen and --allow):
  esxcli storage nfs add -H <this host> -s ${ready.export} -v ivmr
  vim-cmd solo/registervm /vmfs/volumes/ivmr/${ready.sessions[0].vmx}
  vim-cmd vmsvc/power.on <vmid printed by registervm>`);
    if (portmapPort !== 111) {
      console.log(
        'ESXi, too, finds the datastore only through a portmapper on port 111: free the port or start rpcbind, then serve again.',
      );
    }
    if (signals > 0) throw new Error('interrupted');
    console.log('\ndemo OK: every check passed');
    if (!OPTIONS.wait) {
      console.log('--no-wait: stopping ivmr serve');
      return;
    }
    console.log(
      process.env.IVMR_DEMO_KEEP === '1'
        ? `\nivmr serve keeps running; press Ctrl-C to stop it. $DEMO stays (IVMR_DEMO_KEEP=1), with the session and its writes in $DEMO/cache; serve it again with:\n  node ${CLI} serve --repo ${tmp}/repo --cache ${tmp}/cache --min-free 256M --cache-floor 1`
        : '\nivmr serve keeps running; press Ctrl-C to stop it. The demo then removes $DEMO, the cache with any writes made to the VM included (IVMR_DEMO_KEEP=1 keeps it).',
    );
    await server.untilStopped();
  } finally {
    await server.stop();
  }
}

/**
 * Lists the VM's folder with nfs-ls, then streams the flat extent with nfs-cat and compares its
 * length and SHA-256 with the image's, zero-padded to a whole number of 512-byte sectors (the
 * flat extent's size). Fails when they differ.
 */
async function checkWithLibnfs(ready, disk, image) {
  if (spawnSync('nfs-cat', []).error) {
    throw new Error('nfs-cat is missing: run scripts/setup.sh (installs libnfs-utils)');
  }
  const ports = `nfsport=${ready.nfsPort}&mountport=${ready.mountPort}&version=3`;
  const base = `nfs://${ready.host}${ready.export}`;
  sh('nfs-ls', [`${base}/${disk.slice(0, disk.lastIndexOf('/'))}?${ports}`]);
  const url = `${base}/${disk}?${ports}`;
  console.log(`\n$ nfs-cat ${quote(url)} | sha256sum`);
  const got = await hashOutput('nfs-cat', [url]);
  console.log(`  ${got.digest}  -   (${got.bytes} bytes read through NFS)`);
  const bytes = await readFile(image);
  const padded = Math.ceil(bytes.length / 512) * 512;
  const want = createHash('sha256')
    .update(bytes)
    .update(Buffer.alloc(padded - bytes.length))
    .digest('hex');
  console.log(
    `  ${want}  ${image.replaceAll(tmp, '$DEMO')}   (${bytes.length} bytes${padded === bytes.length ? '' : `, zero-padded to ${padded}`})`,
  );
  if (got.bytes !== padded || got.digest !== want) {
    throw new Error(
      `the disk read through NFS differs from the backed-up image (${got.bytes} bytes, sha256 ${got.digest}; expected ${padded} bytes, sha256 ${want})`,
    );
  }
  console.log('  identical');
}

/** Runs a command and returns the SHA-256 and length of what it writes to stdout. */
function hashOutput(cmd, args) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const hash = createHash('sha256');
    let bytes = 0;
    let errors = '';
    child.stdout.on('data', (b) => {
      hash.update(b);
      bytes += b.length;
    });
    child.stderr.on('data', (b) => {
      errors += b;
    });
    child.once('error', (err) => reject(new Error(`${cmd}: ${err.message}`)));
    child.once('close', (code, signal) => {
      if (code === 0) resolve({ digest: hash.digest('hex'), bytes });
      else reject(new Error(`${cmd} exited with ${signal ?? code}: ${errors.trim()}`));
    });
  });
}

/**
 * Spawns `ivmr serve --json` and waits for its readiness line. Returns it with `untilStopped()`,
 * which resolves on Ctrl-C (SIGINT) or SIGTERM (a second one kills the server) and rejects when
 * the server exits on its own with an error, and `stop()`, which stops the server and waits.
 */
async function startServe(args) {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    await exited;
  };
  let ready;
  try {
    ready = await new Promise((resolve, reject) => {
      let out = '';
      child.stdout.on('data', (b) => {
        if (out === null) return; // read and dropped: serve prints nothing after the line
        out += b;
        const line = out
          .split('\n')
          .slice(0, -1)
          .find((l) => l.startsWith('{'));
        if (line === undefined) return;
        out = null;
        try {
          resolve(JSON.parse(line));
        } catch (err) {
          reject(new Error(`ivmr serve printed a bad readiness line: ${err.message}`));
        }
      });
      exited.then(({ code, signal }) =>
        reject(new Error(`ivmr serve exited with ${signal ?? code} before it was ready`)),
      );
      interrupted.then(() => reject(new Error('interrupted')));
    });
  } catch (err) {
    await stop();
    throw err;
  }
  const untilStopped = () =>
    new Promise((resolve, reject) => {
      interrupted.then(() => {
        console.log('\nstopping ivmr serve');
        resolve();
      });
      exited.then(({ code, signal }) => {
        // Ctrl-C in a terminal signals serve too; it then exits with 0.
        if (code === 0 || signals > 0) resolve();
        else reject(new Error(`ivmr serve stopped on its own with ${signal ?? `code ${code}`}`));
      });
    });
  onRepeatedSignal = () => child.kill('SIGKILL');
  return { ready, untilStopped, stop };
}

try {
  await demo();
} catch (err) {
  if (signals > 0) {
    console.error('\ndemo interrupted');
    process.exitCode = 130;
  } else {
    console.error(`\ndemo FAILED: ${err.message}`);
    process.exitCode = 1;
  }
} finally {
  if (tmp && process.env.IVMR_DEMO_KEEP !== '1') {
    await rm(tmp, { recursive: true, force: true });
    console.log(`removed ${tmp}`);
  } else if (tmp) {
    console.log(`kept ${tmp} (IVMR_DEMO_KEEP=1)`);
  }
}
