import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { access, mkdir, mkdtemp, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCode, IvmrError, isIvmrError, type Repository } from '@ivmr/core';
import { NfsServer, type PortmapMode } from '@ivmr/nfs';
import { parseDescriptor, SECTOR } from '@ivmr/vmdk';
import { type BootProfiles, type PrefetchReport, profileBytes } from './boot-profile.js';
import { type BootPrefetchMode, RecoveryService } from './service.js';

/** How {@link bootQemu} (and {@link checkBoot}) run qemu. */
export interface QemuBootOptions {
  /** How long to wait for the heartbeat; default 120 s. */
  readonly timeoutMs?: number;
  /**
   * Matched against each whole line of the guest's serial console; the first match is the
   * heartbeat. Default: a line with `IVMR-HEARTBEAT` (what the test VM of scripts/test-vm prints).
   */
  readonly heartbeat?: RegExp;
  /** The qemu binary; default `qemu-system-x86_64`. */
  readonly qemu?: string;
  /** The qemu-img binary ({@link checkBoot} checks the VMDK descriptor with it); default `qemu-img`. */
  readonly qemuImg?: string;
  /** Guest memory; default 256 MiB. */
  readonly memoryMiB?: number;
  /** How the disk is attached: `virtio` (default) or `ide`. */
  readonly bus?: 'virtio' | 'ide';
}

/** Options of {@link checkBoot}. */
export interface BootCheckOptions extends QemuBootOptions {
  readonly repository: Repository;
  readonly vm: string;
  /** Restore point id or unique prefix; default the newest. */
  readonly point?: string;
  /**
   * `kvm`, `tcg`, or `auto` (default): KVM when /dev/kvm is usable, falling back to TCG when
   * the KVM run fails with a KVM error (some hosts start KVM guests that then stop).
   */
  readonly accel?: 'auto' | 'kvm' | 'tcg';
  /**
   * How qemu finds the server: qemu's nfs:// driver asks a portmapper on port 111, so the
   * default `auto` runs an embedded one there when it can bind it, else registers with the
   * system's rpcbind.
   */
  readonly portmap?: 'auto' | Exclude<PortmapMode, 'off'>;
  /** Free space the sandbox needs on the temporary cache's volume (see `RecoverySession`). */
  readonly minFreeBytes?: number;
  /** Where the sandbox lives (default a new temporary folder, removed afterwards). */
  readonly tmpDir?: string;
  /**
   * Boot profiles: a boot that reaches the heartbeat saves the order of its reads from the
   * backup here (replacing the VM's previous profile), and a VM that has one is prefetched
   * before power-on (see `prefetch`). The repository itself is never written.
   */
  readonly profiles?: BootProfiles;
  /**
   * With `profiles`: `wait` (default) loads the VM's profile into the read cache before qemu
   * starts, `background` starts both at once, `off` boots cold.
   */
  readonly prefetch?: BootPrefetchMode;
  /** With `profiles`: save this boot's profile (default true). */
  readonly record?: boolean;
  /** Read cache bytes of the sandbox's disks (default 2 GiB; 0: none, so no prefetch). */
  readonly readCacheBytes?: number;
}

/** What {@link checkBoot} found. */
export interface BootReport {
  readonly booted: boolean;
  readonly vm: string;
  readonly point: string;
  readonly accel: 'kvm' | 'tcg';
  /**
   * The first disk's VMDK descriptor as the datastore served it: fetched over NFS, parsed, and
   * opened by qemu's VMDK driver. The boot reads the extent it names. Absent when the check
   * failed (then `reason` says why and the VM was not started).
   */
  readonly descriptor?: DescriptorCheck;
  /** The heartbeat line, when seen. */
  readonly heartbeat?: string;
  /** From qemu's start to the heartbeat. */
  readonly timeToHeartbeatMs?: number;
  /** Bytes of backup reads served from the repository and from the read cache. */
  readonly bytesFromBackup: number;
  readonly bytesFromCache: number;
  /** Bytes the guest wrote (discarded with the sandbox). */
  readonly bytesWritten: number;
  /** The boot prefetch, when the VM had a profile: ended before qemu started with `wait`. */
  readonly prefetch?: PrefetchReport;
  /** The profile this boot recorded, when saved: where, how many ranges and bytes. */
  readonly profile?: { readonly path: string; readonly reads: number; readonly bytes: number };
  /** Why it did not boot. */
  readonly reason?: string;
  /** Failures the server answered with NFS3ERR_IO (a damaged block names its blob). */
  readonly errors: readonly { code: string; message: string; details: Record<string, unknown> }[];
  /** The guest's serial console (the last 64 KiB). */
  readonly serial: string;
}

/** What {@link checkBoot} found in a disk's VMDK descriptor. */
export interface DescriptorCheck {
  /** `nfs://` URL of the descriptor. */
  readonly url: string;
  /** Its `createType` (`vmfs` for the datastore's disks). */
  readonly createType: string;
  /** The extent file it names, in the same folder: what the VM boots from. */
  readonly extent: string;
  /** The disk's size as qemu's VMDK driver sees it through the descriptor. */
  readonly virtualSize: number;
}

const DEFAULT_HEARTBEAT = /IVMR-HEARTBEAT[^\r\n]*/;
const SERIAL_KEEP = 64 * 1024;

/**
 * Proves that a restore point boots (the SureBackup idea): serves the point in a sandbox
 * session (writes discarded) through a private NFS datastore on 127.0.0.1, boots its first disk
 * with qemu reading it through `nfs://`, and waits for the guest's heartbeat on the serial
 * console. The repository is never written. Resolves with a report whether or not it booted;
 * rejects only when the check itself cannot run (unknown VM, no qemu, no port 111).
 */
export async function checkBoot(options: BootCheckOptions): Promise<BootReport> {
  const dir = options.tmpDir ?? (await mkdtemp(join(tmpdir(), 'ivmr-boot-')));
  const cacheDir = join(dir, 'cache');
  const errors: { code: string; message: string; details: Record<string, unknown> }[] = [];
  let service: RecoveryService | undefined;
  let server: NfsServer | undefined;
  try {
    service = await RecoveryService.open({
      repository: options.repository,
      cacheDir,
      floorFraction: 0,
      ...(options.minFreeBytes === undefined ? {} : { minFreeBytes: options.minFreeBytes }),
      ...(options.readCacheBytes === undefined ? {} : { readCacheBytes: options.readCacheBytes }),
      ...(options.profiles ? { bootProfiles: options.profiles } : {}),
    });
    const record = options.profiles !== undefined && options.record !== false;
    const session = await service.start({
      vm: options.vm,
      ...(options.point === undefined ? {} : { point: options.point }),
      mode: 'sandbox',
      recordReads: record,
      bootPrefetch: options.prefetch ?? 'wait',
    });
    const disk = session.disks[0];
    if (!disk) throw new IvmrError(ErrorCode.INVALID_ARGUMENT, `${options.vm} has no disk`);
    server = await startServer(service, options.portmap ?? 'auto', (err) => {
      if (errors.length >= 100) return;
      errors.push(
        isIvmrError(err)
          ? { code: err.code, message: err.message, details: { ...err.details } }
          : { code: ErrorCode.IO, message: String(err), details: {} },
      );
    });
    let accel: 'kvm' | 'tcg' =
      options.accel === 'tcg'
        ? 'tcg'
        : options.accel === 'kvm' || (await kvmUsable())
          ? 'kvm'
          : 'tcg';
    const folder = `nfs://127.0.0.1/ivmr/${session.name}`;
    const size = disk.extent.size;
    let descriptor: DescriptorCheck;
    try {
      descriptor = await checkDescriptor(folder, disk.descriptorName, size, dir, options.qemuImg);
    } catch (err) {
      if (isIvmrError(err, ErrorCode.NOT_FOUND)) throw err;
      return {
        booted: false,
        vm: session.state.vm,
        point: session.state.point,
        accel,
        bytesFromBackup: 0,
        bytesFromCache: 0,
        bytesWritten: 0,
        reason: `the VMDK descriptor did not check out, so the VM was not started: ${err instanceof Error ? err.message : String(err)}`,
        errors,
        serial: '',
      };
    }
    // The extent the descriptor names, not the session's idea of it: the boot goes the way a
    // hypervisor's would.
    const url = `${folder}/${descriptor.extent}`;
    // Reads after the heartbeat are the guest's shutdown: not part of its boot profile.
    const stopRecording = () => session.bootProfile();
    const qemu = { ...options, onHeartbeat: stopRecording };
    let run = await bootQemu(url, accel, qemu);
    if (!run.heartbeat && accel === 'kvm' && options.accel !== 'kvm' && /KVM/i.test(run.output)) {
      accel = 'tcg';
      run = await bootQemu(url, accel, qemu);
    }
    let profile: BootReport['profile'];
    const recorded = session.bootProfile(run.heartbeat ? run.ms : undefined);
    if (run.heartbeat && record && recorded && options.profiles) {
      profile = {
        path: await options.profiles.save(recorded),
        reads: recorded.reads.length,
        bytes: profileBytes(recorded.reads),
      };
    }
    const prefetch = session.prefetchStatus();
    const stats = session.stats();
    const sum = (pick: (d: (typeof stats)[number]) => number) =>
      stats.reduce((n, d) => n + pick(d), 0);
    const report: BootReport = {
      booted: run.heartbeat !== undefined,
      vm: session.state.vm,
      point: session.state.point,
      accel,
      descriptor,
      ...(run.heartbeat ? { heartbeat: run.heartbeat, timeToHeartbeatMs: run.ms } : {}),
      bytesFromBackup: sum((d) => d.bytesFromBase),
      bytesFromCache: sum((d) => d.bytesFromCache),
      bytesWritten: session.disks.reduce((n, d) => n + d.overlay.stats().bytesWritten, 0),
      ...(prefetch ? { prefetch } : {}),
      ...(profile ? { profile } : {}),
      ...(run.heartbeat ? {} : { reason: whyNot(run, errors, options.timeoutMs ?? 120_000) }),
      errors,
      serial: run.output.slice(-SERIAL_KEEP),
    };
    return report;
  } finally {
    await server?.stop();
    await service?.close();
    if (options.tmpDir === undefined) await rm(dir, { recursive: true, force: true });
    else await rm(cacheDir, { recursive: true, force: true });
  }
}

/**
 * Checks the VMDK descriptor `name` in the datastore folder `folder` (an `nfs://` URL) the way a
 * hypervisor meets it: fetches it over NFS (qemu's nfs driver), parses it, and opens it with
 * qemu's VMDK driver. qemu 7.2 cannot follow a relative extent over nfs:// (it takes the
 * descriptor's path for its folder), so its VMDK driver opens the served descriptor next to a
 * sparse stand-in of the extent, which shows that qemu reads it as a disk of the right size; the
 * boot then reads the extent the descriptor names over nfs://. Throws `IVMR_FORMAT` (or qemu-img's
 * message) for a descriptor a hypervisor would not boot from. Internal (not exported by the
 * package); exported from this module for its tests.
 */
export async function checkDescriptor(
  folder: string,
  name: string,
  size: number,
  dir: string,
  qemuImg = 'qemu-img',
): Promise<DescriptorCheck> {
  const url = `${folder}/${name}`;
  const check = join(dir, 'descriptor');
  await mkdir(check, { recursive: true });
  const local = join(check, name);
  await run(qemuImg, ['convert', '-f', 'raw', '-O', 'raw', url, local]);
  const parsed = parseDescriptor(await readFile(local), { name: url });
  const [extent, ...more] = parsed.extents;
  const fail = (why: string) =>
    new IvmrError(ErrorCode.FORMAT, `${url}: ${why}`, { details: { url } });
  if (!extent || more.length > 0) {
    throw fail(`${parsed.extents.length} extents; the boot check needs one`);
  }
  const file = extent.fileName;
  if (
    (extent.type !== 'VMFS' && extent.type !== 'FLAT') ||
    !file ||
    file.includes('/') ||
    file === name ||
    (extent.offset ?? 0) !== 0
  ) {
    throw fail(
      `its extent (${extent.type} "${file ?? ''}" at sector ${extent.offset ?? 0}) is not a flat file of its folder`,
    );
  }
  if (extent.access !== 'RW') throw fail(`its extent is ${extent.access}, not RW`);
  if (extent.sectors * SECTOR !== size) {
    throw fail(`its extent has ${extent.sectors} sectors, the disk ${size / SECTOR}`);
  }
  // A sparse stand-in: costs no space, whatever the disk's size.
  await writeFile(join(check, file), '');
  await truncate(join(check, file), size);
  const info = JSON.parse(await run(qemuImg, ['info', '--output=json', '-f', 'vmdk', local])) as {
    'virtual-size'?: number;
  };
  if (info['virtual-size'] !== size) {
    throw fail(`qemu's VMDK driver sees ${info['virtual-size']} bytes, the disk has ${size}`);
  }
  await rm(check, { recursive: true, force: true });
  return { url, createType: parsed.createType, extent: file, virtualSize: info['virtual-size'] };
}

/** Runs a tool and resolves with its stdout; its stderr in the error when it fails. */
function run(tool: string, args: readonly string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(tool, args, { maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (!err) return resolve(stdout);
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        return reject(new IvmrError(ErrorCode.NOT_FOUND, `cannot run ${tool}: ${err.message}`));
      }
      reject(new Error(stderr.trim() || err.message));
    });
  });
}

function whyNot(
  run: { exitCode: number | null; timedOut: boolean; output: string },
  errors: readonly { message: string }[],
  timeoutMs: number,
): string {
  const first = errors[0]
    ? `; the datastore failed ${errors.length} call(s): ${errors[0].message}`
    : '';
  if (run.timedOut) return `no heartbeat within ${Math.round(timeoutMs / 1000)} s${first}`;
  const last = run.output.trim().split('\n').at(-1) ?? '';
  return `qemu exited with ${run.exitCode} before the heartbeat${first}${last ? ` (last output: ${last.slice(0, 200)})` : ''}`;
}

async function startServer(
  service: RecoveryService,
  portmap: 'auto' | 'embedded' | 'system',
  onError: (err: unknown) => void,
): Promise<NfsServer> {
  const modes: ('embedded' | 'system')[] = portmap === 'auto' ? ['embedded', 'system'] : [portmap];
  let last: unknown;
  for (const mode of modes) {
    const s = new NfsServer({
      exports: [{ path: '/ivmr', fs: service.datastore }],
      host: '127.0.0.1',
      nfsPort: 0,
      portmap: mode,
      handleKey: randomBytes(32),
      onError,
    });
    try {
      await s.start();
      return s;
    } catch (err) {
      last = err;
    }
  }
  throw last;
}

async function kvmUsable(): Promise<boolean> {
  try {
    await access('/dev/kvm', constants.R_OK | constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

/** What one {@link bootQemu} run saw. */
export interface QemuBootRun {
  /**
   * The first disk's VMDK descriptor as the datastore served it: fetched over NFS, parsed, and
   * opened by qemu's VMDK driver. The boot reads the extent it names. Absent when the check
   * failed (then `reason` says why and the VM was not started).
   */
  readonly descriptor?: DescriptorCheck;
  /** The heartbeat line, when seen. */
  readonly heartbeat?: string;
  /** From qemu's start to the heartbeat (0 without one). */
  readonly ms: number;
  /** qemu's exit code (null when it was killed: after the heartbeat, or at the timeout). */
  readonly exitCode: number | null;
  readonly timedOut: boolean;
  /** The serial console and qemu's own messages (the tail, of at least 128 KiB when longer). */
  readonly output: string;
}

/**
 * Boots a raw disk image (a file or a `nfs://` URL qemu's nfs driver reads) once with qemu, its
 * serial console on stdio, and resolves at the heartbeat (qemu is killed 2 s later, when the
 * guest has not powered off by itself), at qemu's exit, or at the timeout. The same qemu command
 * line as {@link checkBoot}, so boots from other sources compare with its figures.
 * `IVMR_NOT_FOUND` when qemu cannot be run.
 */
export function bootQemu(
  drive: string,
  accel: 'kvm' | 'tcg',
  options: QemuBootOptions & { onHeartbeat?: () => void } = {},
): Promise<QemuBootRun> {
  const heartbeat = options.heartbeat ?? DEFAULT_HEARTBEAT;
  const timeoutMs = options.timeoutMs ?? 120_000;
  const bus = options.bus ?? 'virtio';
  const args = [
    '-accel',
    accel,
    '-m',
    String(options.memoryMiB ?? 256),
    '-display',
    'none',
    '-monitor',
    'none',
    '-serial',
    'stdio',
    '-nic',
    'none',
    '-no-reboot',
    '-drive',
    // qemu's option syntax escapes a comma in a value by doubling it.
    `file=${drive.replaceAll(',', ',,')},format=raw,if=${bus},cache=writeback`,
  ];
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn(options.qemu ?? 'qemu-system-x86_64', args, {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    let seen: string | undefined;
    let ms = 0;
    let timedOut = false;
    let line = '';
    const onData = (b: Buffer) => {
      const text = b.toString('latin1');
      output += text;
      if (output.length > 4 * SERIAL_KEEP) output = output.slice(-2 * SERIAL_KEEP);
      if (seen !== undefined) return;
      // Only whole lines are matched, so a heartbeat is never cut where a read ended.
      const parts = (line + text).split(/\r?\n/);
      line = parts.pop() ?? '';
      if (line.length > SERIAL_KEEP) line = line.slice(-SERIAL_KEEP);
      for (const l of parts) {
        const m = heartbeat.exec(l);
        if (!m) continue;
        seen = m[0].trim();
        ms = Math.round(performance.now() - started);
        options.onHeartbeat?.();
        // The guest may power off by itself; give it a moment, then stop qemu.
        setTimeout(() => child.kill('SIGKILL'), 2000).unref();
        break;
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(
        new IvmrError(
          ErrorCode.NOT_FOUND,
          `cannot run ${options.qemu ?? 'qemu-system-x86_64'}: ${err.message}`,
          {
            cause: err,
          },
        ),
      );
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({
        ...(seen ? { heartbeat: seen } : {}),
        ms,
        exitCode: code,
        timedOut: timedOut && seen === undefined,
        output,
      });
    });
  });
}
