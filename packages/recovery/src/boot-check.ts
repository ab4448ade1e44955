import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { access, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCode, IvmrError, isIvmrError, type Repository } from '@ivmr/core';
import { NfsServer, type PortmapMode } from '@ivmr/nfs';
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
    const url = `nfs://127.0.0.1/ivmr/${session.name}/${disk.flatName}`;
    let accel: 'kvm' | 'tcg' =
      options.accel === 'tcg'
        ? 'tcg'
        : options.accel === 'kvm' || (await kvmUsable())
          ? 'kvm'
          : 'tcg';
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
