import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ReadCache } from '@ivmr/cache';
import { type BlockSource, ErrorCode, IvmrError, isIvmrError } from '@ivmr/core';
import { writeDurably } from './durable.js';

/** One read of a recorded boot: the disk's index in {@link BootProfile.disks}, offset, length. */
export type BootRead = readonly [disk: number, offset: number, length: number];

/**
 * What a VM read from its backup while it booted, in the order it first read it: the first
 * verified boot records it, and later instant recoveries of the VM load those blocks into the
 * read cache before (or while) the VM powers on.
 */
export interface BootProfile {
  readonly version: 1;
  /** Id of the repository the recorded point is in. */
  readonly repository: string;
  readonly vm: string;
  /** The restore point whose boot was recorded. */
  readonly point: string;
  /** When it was recorded (ISO 8601). */
  readonly recorded: string;
  /** Reads were recorded in whole granules of this many bytes, aligned. */
  readonly granule: number;
  readonly disks: readonly { readonly name: string; readonly size: number }[];
  /** Byte ranges, each granule once, in the order the boot first read them. */
  readonly reads: readonly BootRead[];
  /** Time from power-on to the heartbeat of the recorded boot. */
  readonly bootMs?: number;
}

/** Figures of a boot prefetch (`RecoverySession.prefetch`), live while it runs. */
export interface PrefetchReport {
  /** `running`, `done`, `stopped` (the session closed) or `failed` (no block could be loaded). */
  readonly state: 'running' | 'done' | 'stopped' | 'failed';
  /** The point whose boot was recorded (may differ from the point served). */
  readonly profilePoint: string;
  /** Bytes the profile names, and bytes loaded from the backup into the read cache so far. */
  readonly profileBytes: number;
  readonly bytesLoaded: number;
  /** Bytes of the profile left out: past a read cache's budget, or of disks it does not have. */
  readonly bytesSkipped: number;
  /** Ranges that failed to load (a damaged block); the first error's message. */
  readonly failures: number;
  readonly firstError?: string;
  /** Milliseconds since the prefetch began (until it ended, once ended). */
  readonly ms: number;
}

const GRANULE = 64 * 1024;
/** Most granules one recording keeps (64 GiB of reads at 64 KiB): a boot reads far less. */
const MAX_GRANULES = 1 << 20;

/**
 * Records the order in which a VM's disks are first read, granule by granule. Wrap each disk's
 * source with {@link wrap}; {@link profile} gives what was recorded.
 */
export class BootRecorder {
  readonly granule: number;
  readonly #seen: Set<number>[] = [];
  readonly #reads: [number, number, number][] = [];
  #granules = 0;
  #stopped = false;

  constructor(granule = GRANULE) {
    if (!Number.isSafeInteger(granule) || granule < 512 || (granule & (granule - 1)) !== 0) {
      throw new IvmrError(
        ErrorCode.INVALID_ARGUMENT,
        `boot recording granule must be a power of two >= 512, got ${granule}`,
      );
    }
    this.granule = granule;
  }

  /** A source that reads `source` and records each read as disk `disk`. */
  wrap(disk: number, source: BlockSource): BlockSource {
    this.#seen[disk] ??= new Set();
    return {
      size: source.size,
      read: (offset, length, into) => {
        if (!this.#stopped && length > 0) this.#note(disk, offset, length);
        return source.read(offset, length, into);
      },
    };
  }

  /** Stops recording (reads after the heartbeat are the guest's shutdown). */
  stop(): void {
    this.#stopped = true;
  }

  /** The ranges recorded so far, in first-read order, neighbours in time and space merged. */
  get reads(): readonly BootRead[] {
    return this.#reads;
  }

  #note(disk: number, offset: number, length: number): void {
    const g = this.granule;
    const seen = this.#seen[disk]!;
    const last = Math.floor((offset + length - 1) / g);
    for (let i = Math.floor(offset / g); i <= last; i++) {
      if (seen.has(i)) continue;
      if (this.#granules >= MAX_GRANULES) {
        this.#stopped = true;
        return;
      }
      seen.add(i);
      this.#granules++;
      const tail = this.#reads.at(-1);
      if (tail && tail[0] === disk && tail[1] + tail[2] === i * g) tail[2] += g;
      else this.#reads.push([disk, i * g, g]);
    }
  }
}

/** Sum of the lengths of `reads`. */
export function profileBytes(reads: readonly BootRead[]): number {
  return reads.reduce((n, r) => n + r[2], 0);
}

/**
 * Boot profiles kept in a folder, one per repository and VM (`<dir>/<repository>/<vm>.json`): a
 * verified boot saves its profile there, and a recovery service that is given the same folder
 * prefetches from it. Each save replaces the VM's profile atomically.
 */
export class BootProfiles {
  readonly dir: string;

  constructor(dir: string) {
    this.dir = dir;
  }

  /** Where the profile of `vm` in `repository` lives. */
  pathOf(repository: string, vm: string): string {
    return join(this.dir, encodeURIComponent(repository), `${encodeURIComponent(vm)}.json`);
  }

  /**
   * The profile of `vm` in `repository`, or undefined when none was recorded. `IVMR_FORMAT`
   * when the file is not a valid profile (it is never half-written, so something else wrote it).
   */
  async load(repository: string, vm: string): Promise<BootProfile | undefined> {
    const path = this.pathOf(repository, vm);
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (err) {
      if ((err as { code?: string }).code === 'ENOENT') return undefined;
      throw err;
    }
    let profile: unknown;
    try {
      profile = JSON.parse(text);
    } catch {
      profile = undefined;
    }
    const why = invalid(profile);
    if (why !== undefined) {
      throw new IvmrError(ErrorCode.FORMAT, `boot profile ${path} is not valid: ${why}`, {
        details: { path },
      });
    }
    const p = profile as BootProfile;
    if (p.repository !== repository || p.vm !== vm) {
      throw new IvmrError(
        ErrorCode.FORMAT,
        `boot profile ${path} is of ${p.vm} in ${p.repository}`,
        {
          details: { path },
        },
      );
    }
    return p;
  }

  /** Saves `profile` (replacing the VM's previous one) durably; returns its path. */
  async save(profile: BootProfile): Promise<string> {
    const why = invalid(profile);
    if (why !== undefined) {
      throw new IvmrError(ErrorCode.INVALID_ARGUMENT, `not a valid boot profile: ${why}`);
    }
    const path = this.pathOf(profile.repository, profile.vm);
    await mkdir(join(path, '..'), { recursive: true });
    await writeDurably(path, `${JSON.stringify(profile)}\n`);
    return path;
  }
}

/** Why `p` is not a {@link BootProfile}, or undefined when it is one. */
function invalid(p: unknown): string | undefined {
  if (typeof p !== 'object' || p === null) return 'not a JSON object';
  const o = p as Partial<BootProfile>;
  if (o.version !== 1) return `unknown version ${String(o.version)}`;
  for (const k of ['repository', 'vm', 'point', 'recorded'] as const) {
    if (typeof o[k] !== 'string' || o[k] === '') return `${k} is missing`;
  }
  if (!Number.isSafeInteger(o.granule) || (o.granule as number) <= 0) return 'bad granule';
  if (!Array.isArray(o.disks)) return 'disks is missing';
  for (const d of o.disks) {
    if (typeof d?.name !== 'string' || !Number.isSafeInteger(d.size) || d.size < 0) {
      return 'bad disk entry';
    }
  }
  if (!Array.isArray(o.reads)) return 'reads is missing';
  for (const r of o.reads) {
    if (
      !Array.isArray(r) ||
      r.length !== 3 ||
      !r.every((x) => Number.isSafeInteger(x) && x >= 0) ||
      r[0] >= o.disks.length ||
      r[2] === 0
    ) {
      return `bad read ${JSON.stringify(r)}`;
    }
  }
  return undefined;
}

/** A disk a profile is prefetched into. */
export interface PrefetchTarget {
  readonly name: string;
  readonly size: number;
  /** No read cache: nothing to prefetch into. */
  readonly readCache: ReadCache | undefined;
}

/** Options of a boot prefetch (`RecoverySession.prefetch`). */
export interface PrefetchOptions {
  /** Ranges loading at once (each at most `chunk` bytes); default 8. */
  readonly parallel?: number;
  /** Largest single load in bytes; default 2 MiB. */
  readonly chunk?: number;
  /**
   * Share of each disk's read cache the prefetch may fill (default 0.5): a boot profile larger
   * than the cache would otherwise evict its own first blocks.
   */
  readonly cacheShare?: number;
  /** Called with the live figures after every load. */
  readonly onProgress?: (report: PrefetchReport) => void;
}

/**
 * Loads the ranges of `profile` into the disks' read caches, in the profile's order, matching
 * disks by name. Never rejects: a damaged block is counted and skipped, a closed cache stops it.
 */
export async function prefetchProfile(
  profile: BootProfile,
  disks: readonly PrefetchTarget[],
  options: PrefetchOptions = {},
): Promise<PrefetchReport> {
  const started = performance.now();
  const parallel = Math.max(1, options.parallel ?? 8);
  const chunk = Math.max(GRANULE, options.chunk ?? 2 * 1024 * 1024);
  const share = options.cacheShare ?? 0.5;
  const targets = profile.disks.map((d) => disks.find((t) => t.name === d.name));
  const budget = targets.map((t) => (t?.readCache ? t.readCache.stats().maxBytes * share : 0));
  const total = profileBytes(profile.reads);
  let loaded = 0;
  let skipped = 0;
  let failures = 0;
  let firstError: string | undefined;
  let stopped = false;
  const report = (state: PrefetchReport['state']): PrefetchReport => ({
    state,
    profilePoint: profile.point,
    profileBytes: total,
    bytesLoaded: loaded,
    bytesSkipped: skipped,
    failures,
    ...(firstError === undefined ? {} : { firstError }),
    ms: Math.round(performance.now() - started),
  });
  const running = new Set<Promise<void>>();
  for (const [d, offset, length] of profile.reads) {
    const cache = targets[d]?.readCache;
    const size = targets[d]?.size ?? 0;
    const end = Math.min(offset + length, size);
    if (!cache || end <= offset || budget[d]! <= 0) {
      skipped += length;
      continue;
    }
    skipped += offset + length - end;
    for (let at = offset; at < end; at += chunk) {
      // The last load a budget allows is cut to what is left of it.
      const n = Math.min(chunk, end - at, Math.max(budget[d]!, 0));
      if (n === 0 || stopped) {
        skipped += Math.min(chunk, end - at);
        continue;
      }
      skipped += Math.min(chunk, end - at) - n;
      budget[d]! -= n;
      const p: Promise<void> = cache
        .prefetch(at, n, { parallel: 1 })
        .then(
          (bytes) => {
            loaded += bytes;
          },
          (err: unknown) => {
            if (isIvmrError(err, ErrorCode.CLOSED)) {
              stopped = true;
              return;
            }
            failures++;
            firstError ??= err instanceof Error ? err.message : String(err);
          },
        )
        .finally(() => {
          running.delete(p);
          options.onProgress?.(report('running'));
        });
      running.add(p);
      if (running.size >= parallel) await Promise.race(running);
    }
  }
  await Promise.all(running);
  return report(stopped ? 'stopped' : failures > 0 && loaded === 0 ? 'failed' : 'done');
}
