/**
 * The boot benchmark (issue #9): time from qemu's start to the heartbeat of the test VM of
 * scripts/test-vm, booted the same way (`bootQemu`'s qemu command line, TCG by default) from
 * - its raw image on the local disk (`raw`),
 * - the same image served by nfs-ganesha over nfs:// (`ganesha`),
 * - a backup of it through ivmr's NFS datastore (`checkBoot`, a fresh sandbox with an empty read
 *   cache each time): cold (`ivmr`), with its boot profile prefetched before power-on
 *   (`ivmr-prefetch`, the prefetch timed apart) or while it boots (`ivmr-prefetch-bg`),
 * - the same three from the repository behind a store whose every GET waits `--latency-ms`
 *   first, like an object store (`remote`, `remote-prefetch`, `remote-prefetch-bg`),
 * - and the same three from a real S3 repository on a single-node Ceph RADOS Gateway in the
 *   benchmark's namespace (`s3`, `s3-prefetch`, `s3-prefetch-bg`; issue #8).
 * Variants alternate within each round (the order rotates), and every heartbeat's checksum of
 * the guest's files is compared with the image's. See ../README.md, "Boot".
 *
 * Usage: node boot/run.mjs [--rounds 5] [--latency-ms 20] [--variants LIST] [--accel tcg]
 *        [--out DIR] [--tmp DIR]
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { median } from '../core/measure.mjs';
import { startCeph } from '../nfs/ceph.mjs';
import { Cleanups, lastLine, progressLog, wholeNumber } from '../nfs/common.mjs';
import { DEFAULT_CONGESTION_CONTROL, openNamespace } from '../nfs/namespace.mjs';
import { startGanesha } from '../nfs/servers.mjs';
import { CLI, checkBuilt } from '../serve/ivmr.mjs';

const VARIANTS = [
  'raw',
  'ganesha',
  'ivmr',
  'ivmr-prefetch',
  'ivmr-prefetch-bg',
  'remote',
  'remote-prefetch',
  'remote-prefetch-bg',
  's3',
  's3-prefetch',
  's3-prefetch-bg',
];
const VM = 'tvm';
const LABELS = {
  raw: 'raw image, local file',
  ganesha: 'raw image, nfs-ganesha',
  ivmr: 'ivmr, cold',
  'ivmr-prefetch': 'ivmr, profile prefetched before power-on',
  'ivmr-prefetch-bg': 'ivmr, profile prefetched while booting',
  remote: 'ivmr, remote store, cold',
  'remote-prefetch': 'ivmr, remote store, prefetched before power-on',
  'remote-prefetch-bg': 'ivmr, remote store, prefetched while booting',
  s3: 'ivmr, S3 (Ceph RGW), cold',
  's3-prefetch': 'ivmr, S3 (Ceph RGW), prefetched before power-on',
  's3-prefetch-bg': 'ivmr, S3 (Ceph RGW), prefetched while booting',
};
const S3_REPO = 's3://ivmr-boot/repo';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const ONE = fileURLToPath(new URL('./boot-one.mjs', import.meta.url));
const USAGE = `node boot/run.mjs [options]          (npx -y pnpm@10.34.8 bench:boot)

Time to heartbeat of the test VM (scripts/test-vm) booted by qemu from its raw image, from
nfs-ganesha, and from its backup through ivmr (cold, and with its boot profile prefetched),
also from a repository with object-store latency and from S3 on a real Ceph RADOS Gateway
(scripts/ceph/cluster.sh, in the benchmark's namespace). Needs root (apt-get on the first run, network
namespaces). The first run builds the test VM and installs nfs-ganesha (setup/ganesha.sh).

  --rounds N           rounds; each boots every variant once (default 5)
  --variants LIST      comma-separated (default all): ${VARIANTS.join(', ')}
  --latency-ms N       delay of every object GET for the remote variants (default 20)
  --accel tcg|kvm      qemu accelerator (default tcg: KVM guests stop on this machine)
  --timeout S          seconds to wait for a heartbeat (default 120)
  --out DIR            where boot.json and boot.md go (default benchmarks/results)
  --tmp DIR            where images, the repository and sandboxes live (default the OS temp dir)
  -h, --help           this text`;

const { values: opts } = parseArgs({
  options: {
    rounds: { type: 'string', default: '5' },
    variants: { type: 'string', default: VARIANTS.join(',') },
    'latency-ms': { type: 'string', default: '20' },
    accel: { type: 'string', default: 'tcg' },
    timeout: { type: 'string', default: '120' },
    out: { type: 'string', default: fileURLToPath(new URL('../results', import.meta.url)) },
    tmp: { type: 'string', default: tmpdir() },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (opts.help) {
  console.log(USAGE);
  process.exit(0);
}
const variants = opts.variants.split(',').filter(Boolean);
for (const v of variants) {
  if (!VARIANTS.includes(v)) throw new Error(`--variants: unknown ${v} (${VARIANTS.join(', ')})`);
}
if (!['tcg', 'kvm'].includes(opts.accel)) throw new Error('--accel: tcg or kvm');
const options = {
  rounds: wholeNumber(opts.rounds, '--rounds'),
  latencyMs: wholeNumber(opts['latency-ms'], '--latency-ms', 0),
  accel: opts.accel,
  timeoutMs: wholeNumber(opts.timeout, '--timeout') * 1000,
  variants,
};
const log = progressLog(performance.now());
const cleanups = new Cleanups(log);
const results = {
  benchmark: 'ivmr-boot',
  version: 1,
  command: `node boot/run.mjs ${process.argv.slice(2).join(' ')}`.trim(),
  date: new Date().toISOString(),
  node: process.versions.node,
  platform: `${process.platform}-${process.arch}`,
  cpu: { model: cpus()[0]?.model ?? 'unknown', count: cpus().length },
  memoryBytes: totalmem(),
  options,
  versions: {},
  image: null,
  profile: null,
  runs: [],
  summary: [],
};

try {
  await main();
} catch (err) {
  if (!cleanups.interrupted) {
    process.stderr.write(`\nboot benchmark failed: ${err?.stack ?? err}\n`);
    process.exitCode = 1;
  }
} finally {
  await cleanups.run();
}

async function main() {
  checkBuilt();
  for (const tool of ['qemu-system-x86_64', 'rpcbind']) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) {
      throw new Error(`${tool} not found: bash scripts/setup.sh installs it (as root)`);
    }
  }
  const tmp = await mkdtemp(join(opts.tmp, 'ivmr-boot-bench-'));
  cleanups.push(() => rm(tmp, { recursive: true, force: true }));
  log('building (or reusing) the test VM: scripts/test-vm/build.sh');
  const image = lastLine(
    execFileSync('bash', [join(ROOT, 'scripts/test-vm/build.sh')], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'inherit'],
    }),
  );
  const expected = lastLine(
    execFileSync('bash', [join(ROOT, 'scripts/test-vm/checksum.sh'), image], { encoding: 'utf8' }),
  );
  const sha = /sha256=([0-9a-f]{64})/.exec(expected)?.[1];
  if (!sha) throw new Error(`checksum.sh printed no sha256: ${expected}`);
  results.image = {
    path: image,
    bytes: Number(execFileSync('stat', ['-c', '%s', image], { encoding: 'utf8' })),
    sha256OfData: sha,
  };
  const version = (cmd, args) => {
    try {
      return lastLine(execFileSync(cmd, args, { encoding: 'utf8' }).split('\n')[0] ?? '');
    } catch {
      return 'unknown';
    }
  };
  results.versions = {
    qemu: version('qemu-system-x86_64', ['--version']),
    kernel:
      readFileSync(join(image, '..', 'info.txt'), 'utf8')
        .split('\n')
        .find((l) => l.startsWith('kernel=')) ?? 'unknown',
  };

  const repo = join(tmp, 'repo');
  log(`backing the image up into ${repo} (ivmr backup, lz4)`);
  execFileSync(
    process.execPath,
    [CLI, 'backup', image, '--repo', repo, '--vm', VM, '--codec', 'lz4'],
    {
      stdio: ['ignore', 'ignore', 'inherit'],
    },
  );

  // Two namespaces: ganesha registers with its rpcbind on 111 in one; ivmr's embedded
  // portmapper takes 111 in the other. Raw boots run in the second (no network use).
  const nsG = await openNamespace({ congestionControl: DEFAULT_CONGESTION_CONTROL });
  cleanups.push(() => nsG.close());
  const nsI = await openNamespace({ congestionControl: DEFAULT_CONGESTION_CONTROL });
  cleanups.push(() => nsI.close());
  const exportDir = join(tmp, 'export');
  await mkdir(exportDir);
  if (variants.includes('ganesha')) {
    log('setup/ganesha.sh');
    const ganeshaBin = lastLine(
      execFileSync('bash', [fileURLToPath(new URL('../setup/ganesha.sh', import.meta.url))], {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'inherit'],
      }),
    );
    const g = await startGanesha(nsG, { exportDir, workDir: tmp, ganeshaBin });
    cleanups.first(() => g.stop());
    results.versions.ganesha = version('dpkg-query', [
      '-W',
      '-f',
      '$' + '{Version}',
      'nfs-ganesha',
    ]);
  }

  if (variants.some((v) => v.startsWith('s3'))) {
    log('starting a Ceph cluster with its S3 gateway in the namespace (scripts/ceph/cluster.sh)');
    const ceph = await startCeph(nsI, join(tmp, 'ceph'));
    cleanups.first(() => ceph.stop());
    log(`backing the image up into ${S3_REPO} at ${ceph.endpoint}`);
    const [cmd, ...args] = nsI.argv([
      ...[process.execPath, CLI, 'backup', image],
      ...['--repo', S3_REPO, '--vm', VM, '--codec', 'lz4'],
    ]);
    execFileSync(cmd, args, { stdio: ['ignore', 'ignore', 'inherit'] });
  }

  const profiles = join(tmp, 'profiles');
  const sandboxes = join(tmp, 'sandbox');
  const ivmrSpec = (variant) => {
    const remote = variant.startsWith('remote');
    const s3 = variant.startsWith('s3');
    const prefetch = variant.endsWith('-bg')
      ? 'background'
      : variant.includes('prefetch')
        ? 'wait'
        : 'off';
    return {
      kind: 'ivmr',
      repo: s3 ? S3_REPO : repo,
      vm: VM,
      latencyMs: remote ? options.latencyMs : 0,
      accel: options.accel,
      timeoutMs: options.timeoutMs,
      tmpDir: sandboxes,
      ...(prefetch === 'off' ? {} : { profiles, prefetch, record: false }),
    };
  };
  /** Boots `variant` once; returns its run record. */
  const boot = async (variant, round) => {
    let spec;
    let ns = nsI;
    if (variant === 'raw' || variant === 'ganesha') {
      // A fresh copy each time: the guest counts its boots on its disk.
      const dir = variant === 'raw' ? tmp : exportDir;
      const disk = join(dir, 'disk.raw');
      copyFileSync(image, disk);
      execFileSync('chmod', ['0644', disk]);
      const drive = variant === 'raw' ? disk : `nfs://127.0.0.1${exportDir}/disk.raw`;
      if (variant === 'ganesha') ns = nsG;
      spec = { kind: 'qemu', drive, accel: options.accel, timeoutMs: options.timeoutMs };
    } else {
      await rm(sandboxes, { recursive: true, force: true });
      await mkdir(sandboxes);
      spec = ivmrSpec(variant);
    }
    const out = await runIn(
      ns,
      [process.execPath, ONE, JSON.stringify(spec)],
      options.timeoutMs + 60_000,
    );
    const r = JSON.parse(lastLine(out));
    const heartbeat = r.heartbeat ?? null;
    const ms = r.timeToHeartbeatMs ?? r.ms;
    const ok = heartbeat?.includes(`sha256=${sha} `) === true;
    const run = {
      variant,
      round,
      ok,
      ms: heartbeat ? ms : null,
      // Before the guest kernel ran: firmware and bootloader reading kernel and initramfs.
      beforeKernelMs: heartbeat && r.kernelMs !== undefined ? ms - r.kernelMs : null,
      heartbeat,
      ...(r.prefetch
        ? {
            prefetchMs: r.prefetch.ms,
            prefetchBytes: r.prefetch.bytesLoaded,
            prefetchState: r.prefetch.state,
          }
        : {}),
      ...(r.bytesFromBackup !== undefined ? { bytesFromBackup: r.bytesFromBackup } : {}),
      ...(ok
        ? {}
        : { error: r.reason ?? `no heartbeat (exit ${r.exitCode})`, output: r.serial ?? r.output }),
    };
    log(
      `round ${round} ${variant}: ${ok ? `${(ms / 1000).toFixed(2)} s` : `FAILED: ${run.error}`}${r.prefetch ? ` (prefetch ${r.prefetch.ms} ms${spec.prefetch === 'wait' ? ', before power-on' : ', alongside'})` : ''}`,
    );
    return run;
  };

  // Profiles are kept per repository: the local one serves the local and remote variants.
  const recordFor = [];
  if (variants.some((v) => v.includes('prefetch') && !v.startsWith('s3'))) recordFor.push('ivmr');
  if (variants.some((v) => v.includes('prefetch') && v.startsWith('s3'))) recordFor.push('s3');
  for (const from of recordFor) {
    log(`recording the boot profile (one verified boot, cold, from ${from})`);
    await rm(sandboxes, { recursive: true, force: true });
    await mkdir(sandboxes);
    const spec = { ...ivmrSpec(from), profiles, prefetch: 'off', record: true };
    const r = JSON.parse(
      lastLine(
        await runIn(nsI, [process.execPath, ONE, JSON.stringify(spec)], options.timeoutMs + 60_000),
      ),
    );
    if (!r.booted || !r.profile)
      throw new Error(`the recording boot failed: ${r.reason}\n${r.serial}`);
    results.profile ??= r.profile;
  }

  for (let round = 1; round <= options.rounds; round++) {
    const order = variants.map((_, i) => variants[(i + round - 1) % variants.length]);
    for (const v of order) results.runs.push(await boot(v, round));
  }

  const raw = summarize('raw');
  const ganesha = summarize('ganesha');
  for (const v of variants) {
    const s = summarize(v);
    results.summary.push({
      variant: v,
      ...s,
      vsRaw: raw.medianMs && s.medianMs ? s.medianMs / raw.medianMs : null,
      vsGanesha: ganesha.medianMs && s.medianMs ? s.medianMs / ganesha.medianMs : null,
      beforeKernelVsGanesha:
        ganesha.beforeKernelMedianMs && s.beforeKernelMedianMs
          ? s.beforeKernelMedianMs / ganesha.beforeKernelMedianMs
          : null,
    });
  }
  await mkdir(opts.out, { recursive: true });
  await writeFile(join(opts.out, 'boot.json'), `${JSON.stringify(results, null, 2)}\n`);
  const md = markdown(results);
  await writeFile(join(opts.out, 'boot.md'), md);
  process.stdout.write(md);
  const failed = results.runs.filter((r) => !r.ok);
  if (failed.length > 0)
    throw new Error(
      `${failed.length} boot(s) failed: ${failed.map((f) => `${f.variant}: ${f.error}`).join('; ')}`,
    );
}

/** Median, fastest and slowest time to heartbeat of a variant's good boots, and its prefetch. */
function summarize(variant) {
  const runs = results.runs.filter((r) => r.variant === variant && r.ok);
  const ms = runs.map((r) => r.ms);
  const before = runs.filter((r) => r.beforeKernelMs !== null).map((r) => r.beforeKernelMs);
  const pre = runs.filter((r) => r.prefetchMs !== undefined).map((r) => r.prefetchMs);
  const bytes = runs.filter((r) => r.bytesFromBackup !== undefined).map((r) => r.bytesFromBackup);
  return {
    boots: runs.length,
    medianMs: ms.length ? median(ms) : null,
    minMs: ms.length ? Math.min(...ms) : null,
    maxMs: ms.length ? Math.max(...ms) : null,
    beforeKernelMedianMs: before.length ? median(before) : null,
    beforeKernelMinMs: before.length ? Math.min(...before) : null,
    prefetchMedianMs: pre.length ? median(pre) : null,
    bytesFromBackup: bytes.length ? median(bytes) : null,
  };
}

function markdown(r) {
  const s = (ms) => (ms === null ? '-' : (ms / 1000).toFixed(2));
  const x = (v) => (v === null ? '-' : v.toFixed(2));
  const lines = [
    `# Boot benchmark`,
    '',
    `\`${r.command}\` on ${r.date.slice(0, 10)}: ${r.cpu.count} × ${r.cpu.model}, qemu ${r.options.accel}, ${r.options.rounds} round(s)${r.options.variants.some((/** @type {string} */ v) => v.startsWith('remote')) ? `; remote store: every GET waits ${r.options.latencyMs} ms` : ''}${r.options.variants.some((/** @type {string} */ v) => v.startsWith('s3')) ? "; S3: a single-node Ceph RADOS Gateway (memstore) on the namespace's loopback" : ''}.`,
    `Boot profile: ${r.profile ? `${r.profile.reads} range(s), ${(r.profile.bytes / 1024 / 1024).toFixed(1)} MiB` : 'not recorded'}.`,
    '',
    '| Boot | Heartbeat after, s (median) | min–max | ÷ raw | ÷ ganesha | Before the kernel, s (median, min) | ÷ ganesha | Prefetch before power-on, s | Prefetch + boot, s |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- |',
  ];
  for (const v of r.summary) {
    const pre = v.prefetchMedianMs;
    const before = v.variant.endsWith('prefetch');
    lines.push(
      `| ${LABELS[v.variant]} | ${s(v.medianMs)} | ${s(v.minMs)}–${s(v.maxMs)} | ${x(v.vsRaw)} | ${x(v.vsGanesha)} | ${s(v.beforeKernelMedianMs)}, ${s(v.beforeKernelMinMs)} | ${x(v.beforeKernelVsGanesha)} | ${before ? s(pre) : '-'} | ${before && pre !== null && v.medianMs !== null ? s(pre + v.medianMs) : '-'} |`,
    );
  }
  lines.push('');
  return `${lines.join('\n')}\n`;
}

/** Runs argv in `ns`; resolves with its stdout, rejects on a non-zero exit or the deadline. */
function runIn(ns, argv, deadlineMs) {
  return new Promise((resolve, reject) => {
    const p = ns.spawn(argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (d) => {
      out += d;
    });
    p.stderr.on('data', (d) => {
      err = (err + d).slice(-8192);
    });
    const timer = setTimeout(() => p.kill('SIGKILL'), deadlineMs);
    p.once('error', reject);
    p.once('close', (code) => {
      clearTimeout(timer);
      if (code === 0) resolve(out);
      else reject(new Error(`${argv.slice(1, 2).join(' ')} exited with ${code}: ${err.trim()}`));
    });
  });
}
