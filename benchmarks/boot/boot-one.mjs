/**
 * One boot of the boot benchmark, run by boot/run.mjs inside a network namespace, so that qemu's
 * nfs:// driver finds its server through a portmapper on port 111 there. Its only argument is a
 * JSON spec; it prints one JSON line with what the boot saw.
 *
 * - `{ kind: 'qemu', drive, accel, timeoutMs }`: boots a raw image (a file, or an `nfs://` URL of
 *   nfs-ganesha's export) with `bootQemu`, the qemu command line `checkBoot` uses.
 * - `{ kind: 'ivmr', repo, vm, latencyMs, prefetch, profiles, record, accel, timeoutMs, tmpDir }`:
 *   `checkBoot` of the VM's newest point (`repo`: a folder or an `s3://` URL): a sandbox session served through ivmr's NFS datastore
 *   (embedded portmapper on 111), its read cache empty. With `latencyMs`, every object GET of the
 *   repository waits that long first, like an object store's first-byte latency.
 */
import { fileURLToPath } from 'node:url';

const dist = (pkg) =>
  fileURLToPath(new URL(`../../packages/${pkg}/dist/index.js`, import.meta.url));
const { LocalStore, Repository } = await import(dist('core'));
const { BootProfiles, bootQemu, checkBoot } = await import(dist('recovery'));

const spec = JSON.parse(process.argv[2] ?? '{}');

/**
 * The store of `repo`: a folder, or `s3://bucket/prefix` on the S3 endpoint and with the keys
 * of the AWS environment (the benchmark's Ceph cluster).
 * @param {string} repo
 */
async function openStore(repo) {
  if (!repo.startsWith('s3://')) return LocalStore.open(repo);
  const { S3Store } = await import(dist('store-s3'));
  const [bucket, ...prefix] = repo.slice('s3://'.length).split('/');
  return S3Store.open({ bucket, prefix: prefix.join('/'), endpoint: process.env.AWS_ENDPOINT_URL });
}

/**
 * The guest kernel's uptime when it powered off (its `[ seconds] reboot: Power down` line), in
 * ms: the time to the heartbeat minus this is what passed before the kernel ran (firmware and
 * bootloader reading the kernel and initramfs from the disk), the part of a boot the storage
 * path decides. Undefined when the line is missing.
 * @param {string} text the serial console
 */
function kernelMs(text) {
  const m = /\[\s*(\d+\.\d+)\]\s*reboot:/.exec(text);
  return m ? Math.round(Number(m[1]) * 1000) : undefined;
}

/**
 * A store adapter that delays every `get` and `has` by `ms`: the latency of a remote object
 * store, without its bandwidth limit.
 * @param {any} store
 * @param {number} ms
 */
function delayed(store, ms) {
  const wait = () => new Promise((resolve) => setTimeout(resolve, ms));
  return {
    get: async (...args) => {
      await wait();
      return store.get(...args);
    },
    has: async (...args) => {
      await wait();
      return store.has(...args);
    },
    put: (...args) => store.put(...args),
    list: (...args) => store.list(...args),
    delete: (...args) => store.delete(...args),
    close: () => store.close(),
  };
}

/**
 * Prints one boot's figures as a JSON line, with the kernel's time from its console, and the
 * console's tail under `name` when it did not boot.
 * @param {object} figures
 * @param {string} text the serial console
 * @param {boolean} ok
 * @param {string} name
 */
function print(figures, text, ok, name) {
  const tail = ok ? {} : { [name]: text.slice(-4000) };
  console.log(JSON.stringify({ ...figures, kernelMs: kernelMs(text), ...tail }));
}

if (spec.kind === 'qemu') {
  const run = await bootQemu(spec.drive, spec.accel, { timeoutMs: spec.timeoutMs });
  const { output, ...rest } = run;
  print(rest, output, run.heartbeat !== undefined, 'output');
} else if (spec.kind === 'ivmr') {
  const local = await openStore(spec.repo);
  const store = spec.latencyMs > 0 ? delayed(local, spec.latencyMs) : local;
  const repository = await Repository.open(store);
  try {
    const report = await checkBoot({
      repository,
      vm: spec.vm,
      accel: spec.accel,
      timeoutMs: spec.timeoutMs,
      portmap: 'embedded',
      minFreeBytes: 0,
      tmpDir: spec.tmpDir,
      ...(spec.profiles
        ? {
            profiles: new BootProfiles(spec.profiles),
            prefetch: spec.prefetch,
            record: spec.record === true,
          }
        : {}),
    });
    const { serial, ...rest } = report;
    print(rest, serial, report.booted, 'serial');
  } finally {
    await repository.close();
  }
} else {
  throw new Error(`unknown boot kind ${spec.kind}`);
}
