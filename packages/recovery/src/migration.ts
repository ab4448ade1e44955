import { copyFile, mkdir, open, rename, stat } from 'node:fs/promises';
import { join } from 'node:path';
import {
  type Hydration,
  type HydrationPhase,
  type HydrationProgress,
  startHydration,
  type WriteOverlay,
} from '@ivmr/cache';
import { ErrorCode, IvmrError } from '@ivmr/core';

/**
 * What a migration writes into its target folder:
 * - `flat-vmdk`: `<disk>-flat.vmdk` per disk, and at the switch-over the descriptors and the
 *   `.vmx` as the hypervisor last wrote them, so the folder is a complete VM;
 * - `raw`: `<disk>.raw` per disk.
 */
export type MigrationFormat = 'flat-vmdk' | 'raw';

/** What a session records of its migration (in `session.json`). */
export interface MigrationState {
  /** Target folder. */
  readonly to: string;
  readonly format: MigrationFormat;
  /** When the switch-over completed (ISO time); the session is read-only from then on. */
  readonly switched?: string;
}

/** Progress of one disk of a migration. */
export interface DiskMigrationProgress extends HydrationProgress {
  readonly disk: string;
  /** The target file. */
  readonly target: string;
}

/** Progress of a whole migration. */
export interface MigrationProgress {
  /**
   * `copying` until every disk's first pass is done, then `mirroring` (the targets follow the
   * VM's writes), `switching`, `done`; `stopped` or `failed` when it ended otherwise.
   */
  readonly phase: HydrationPhase;
  readonly to: string;
  readonly format: MigrationFormat;
  readonly totalBytes: number;
  readonly copiedBytes: number;
  readonly disks: readonly DiskMigrationProgress[];
}

/** One disk to migrate. */
export interface MigrationDisk {
  readonly name: string;
  /** Name of the flat extent in the VM folder. */
  readonly flatName: string;
  /** Size the flat extent has in the datastore (the disk's size rounded up to 512). */
  readonly flatSize: number;
  readonly overlay: WriteOverlay;
}

/** Options of {@link Migration.start}. */
export interface MigrationStartOptions {
  readonly to: string;
  readonly format: MigrationFormat;
  readonly disks: readonly MigrationDisk[];
  /** The session's folder of real files, where the `.vmx` and descriptors are. */
  readonly filesDir: string;
  /** Files copied into the target folder at the switch-over (flat-vmdk only). */
  readonly vmFiles: readonly string[];
  /** Bytes per second per disk; 0 or absent: no limit. */
  readonly rateBytesPerSec?: number;
  /** Chunk size of the copy (default 1 MiB). */
  readonly chunkSize?: number;
  /** Called after every chunk and phase change. */
  readonly onProgress?: (progress: MigrationProgress) => void;
}

/**
 * Migration of a running session's disks to production storage: one background hydration per
 * disk (see `startHydration` of `@ivmr/cache`) that copies the backup plus every write so far,
 * then keeps the target in sync with the VM's writes until {@link switchOver}. It resumes from
 * its saved progress when started again on the same target folder (after a restart).
 */
export class Migration {
  readonly to: string;
  readonly format: MigrationFormat;
  readonly #hydrations: Hydration[];
  readonly #options: MigrationStartOptions;
  readonly #targets: string[];
  #phase: HydrationPhase = 'copying';
  /** Resolves when every disk's first pass is done; rejects when one fails or stops first. */
  readonly synced: Promise<void>;

  private constructor(options: MigrationStartOptions, hydrations: Hydration[], targets: string[]) {
    this.to = options.to;
    this.format = options.format;
    this.#options = options;
    this.#hydrations = hydrations;
    this.#targets = targets;
    this.synced = Promise.all(hydrations.map((h) => h.done)).then(() => {
      if (this.#phase === 'copying') this.#phase = 'mirroring';
      this.report();
    });
    this.synced.catch((err: unknown) => {
      if (this.#phase === 'copying' || this.#phase === 'mirroring') {
        this.#phase = isStopped(err) ? 'stopped' : 'failed';
      }
    });
  }

  /** Target file of each disk in `to`. */
  static targetName(disk: { name: string; flatName: string }, format: MigrationFormat): string {
    return format === 'raw' ? `${disk.name}.raw` : disk.flatName;
  }

  /** Starts (or resumes) copying every disk. */
  static async start(options: MigrationStartOptions): Promise<Migration> {
    await mkdir(options.to, { recursive: true });
    const targets = options.disks.map((d) =>
      join(options.to, Migration.targetName(d, options.format)),
    );
    const hydrations: Hydration[] = [];
    let self: Migration | undefined;
    try {
      for (const [i, d] of options.disks.entries()) {
        hydrations.push(
          await startHydration(d.overlay, targets[i]!, {
            ...(options.rateBytesPerSec ? { rateBytesPerSec: options.rateBytesPerSec } : {}),
            ...(options.chunkSize ? { chunkSize: options.chunkSize } : {}),
            onProgress: () => self?.report(),
          }),
        );
      }
    } catch (err) {
      await Promise.allSettled(hydrations.map((h) => h.stop()));
      throw err;
    }
    self = new Migration(options, hydrations, targets);
    return self;
  }

  /** Current progress over all disks. */
  progress(): MigrationProgress {
    const disks = this.#hydrations.map((h, i) => ({
      ...h.progress(),
      disk: this.#options.disks[i]!.name,
      target: this.#targets[i]!,
    }));
    return {
      phase: this.#phase,
      to: this.to,
      format: this.format,
      totalBytes: disks.reduce((n, d) => n + d.totalBytes, 0),
      copiedBytes: disks.reduce((n, d) => n + d.copiedBytes, 0),
      disks,
    };
  }

  /**
   * Completes the migration: waits for every first pass, then switches the disks over one
   * inside the other, so that at the end every disk's writes are paused together; `onSwitched`
   * runs there (the session seals its overlays in it). The targets then equal the disks, and for
   * `flat-vmdk` the target folder also holds the VM's `.vmx` and descriptors.
   */
  async switchOver(onSwitched: () => Promise<void>): Promise<void> {
    if (this.#phase === 'done') return;
    if (this.#phase === 'switching')
      throw new IvmrError(ErrorCode.INVALID_ARGUMENT, 'a switch-over is running');
    await this.synced;
    this.#phase = 'switching';
    this.report();
    const nest = async (i: number): Promise<void> => {
      if (i === this.#hydrations.length) {
        await this.#finishTargets();
        await onSwitched();
        return;
      }
      await this.#hydrations[i]!.switchOver(() => nest(i + 1));
    };
    try {
      await nest(0);
    } catch (err) {
      this.#phase = 'failed';
      throw err;
    }
    this.#phase = 'done';
    this.report();
  }

  /** Stops copying and saves progress, so that starting again resumes. */
  async stop(): Promise<void> {
    await Promise.allSettled(this.#hydrations.map((h) => h.stop()));
    if (this.#phase !== 'done') this.#phase = 'stopped';
  }

  /** Pads flat targets to the flat extent's size and copies the VM's text files. */
  async #finishTargets(): Promise<void> {
    if (this.format !== 'flat-vmdk') return;
    for (const [i, d] of this.#options.disks.entries()) {
      const target = this.#targets[i]!;
      if ((await stat(target)).size < d.flatSize) {
        const fh = await open(target, 'r+');
        try {
          await fh.truncate(d.flatSize);
          await fh.sync();
        } finally {
          await fh.close();
        }
      }
    }
    for (const name of this.#options.vmFiles) {
      const tmp = join(this.to, `${name}.tmp`);
      await copyFile(join(this.#options.filesDir, name), tmp);
      const fh = await open(tmp, 'r');
      await fh.sync();
      await fh.close();
      await rename(tmp, join(this.to, name));
    }
  }

  /** Tells `onProgress` the current progress. */
  private report(): void {
    this.#options.onProgress?.(this.progress());
  }
}

function isStopped(err: unknown): boolean {
  return (err as { code?: string })?.code === ErrorCode.ABORTED;
}
