import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { access, mkdir, open, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { ErrorCode, IvmrError, type RestoreDisk } from '@ivmr/core';
import type { Command } from 'commander';
import { type CliIo, writeJson, writeLine } from '../io.js';
import { startProgress } from '../progress.js';
import { REPO_HELP, S3_ENDPOINT_HELP, withRepository } from '../repository.js';

/** Flags of `ivmr restore`. */
export interface RestoreFlags {
  readonly repo: string;
  readonly s3Endpoint?: string;
  readonly vm: string;
  readonly point?: string;
  readonly out: string;
  readonly force?: boolean;
  readonly json?: boolean;
}

/** One restored disk in the `--json` summary. */
export interface RestoredDisk {
  readonly name: string;
  readonly path: string;
  readonly size: number;
  /** Bytes written to the image; the rest of it is holes (zeros). */
  readonly writtenBytes: number;
}

/** Written and skipped in pieces of this size; an all-zero piece stays a hole. */
const CHUNK = 1024 * 1024;
const ZEROS = Buffer.alloc(CHUNK);

/** Declares `ivmr restore`. */
export function defineRestore(program: Command): Command {
  return program
    .command('restore')
    .summary('write every disk of a restore point as a raw image')
    .description(
      'Restore a whole VM: each disk of the restore point becomes <out>/<disk>.raw, a sparse raw ' +
        'image. Images appear only when every disk is complete.',
    )
    .requiredOption('--repo <dir>', REPO_HELP)
    .option('--s3-endpoint <url>', S3_ENDPOINT_HELP)
    .requiredOption('--vm <name>', 'VM name')
    .option('--point <id>', 'restore point id or unique prefix (default: the newest)')
    .requiredOption('--out <dir>', 'directory for the images (created when missing)')
    .option('--force', 'overwrite existing images')
    .option('--json', 'print a summary as JSON');
}

/** Runs `ivmr restore`; returns the exit code. */
export async function runRestore(flags: RestoreFlags, io: CliIo): Promise<number> {
  const summary = await withRepository(flags, {}, async (repo) => {
    const point = await repo.openPoint(flags.vm, flags.point);
    const temps: string[] = [];
    try {
      const targets = point.disks.map((d) => join(flags.out, `${d.name}.raw`));
      if (!flags.force) {
        for (const t of targets) {
          if (await exists(t)) {
            throw new IvmrError(ErrorCode.EXISTS, `${t} exists already: use --force to overwrite`, {
              details: { path: t },
            });
          }
        }
      }
      await mkdir(flags.out, { recursive: true });
      const disks = point.disks.map((d) => point.disk(d.name));
      const total = disks.reduce((a, d) => a + d.allocatedBytes, 0);
      const progress = startProgress(io, 'restore', total);
      const restored: RestoredDisk[] = [];
      try {
        let done = 0;
        for (let i = 0; i < disks.length; i++) {
          const disk = disks[i]!;
          const temp = join(
            flags.out,
            `.${disk.name}.raw.${randomBytes(4).toString('hex')}.partial`,
          );
          temps.push(temp);
          const writtenBytes = await writeImage(disk, temp, (n) => {
            done += n;
            progress.update(done, disk.name);
          });
          restored.push({ name: disk.name, path: targets[i]!, size: disk.size, writtenBytes });
        }
      } finally {
        progress.stop();
      }
      // Only now, with every disk complete, do the images get their real names.
      for (let i = 0; i < temps.length; i++) await rename(temps[i]!, targets[i]!);
      temps.length = 0;
      await syncDir(flags.out);
      return { vm: point.info.vm, point: point.info.id, time: point.info.time, disks: restored };
    } finally {
      await point.close();
      for (const t of temps) await unlink(t).catch(() => {});
    }
  });
  if (flags.json) writeJson(io.stdout, summary);
  else for (const d of summary.disks) writeLine(io.stdout, d.path);
  return 0;
}

/**
 * Writes `disk` to a new file at `path`: sized with ftruncate, then only its allocated ranges,
 * minus all-zero 1 MiB pieces, so zeros stay holes. Fsyncs before returning the bytes written.
 */
async function writeImage(
  disk: RestoreDisk,
  path: string,
  onProgress: (bytes: number) => void,
): Promise<number> {
  const fh = await open(path, 'wx');
  try {
    await fh.truncate(disk.size);
    const buf = Buffer.allocUnsafe(CHUNK);
    let written = 0;
    for (const range of disk.allocatedRanges()) {
      const end = range.offset + range.length;
      for (let pos = range.offset; pos < end; ) {
        // Pieces end on 1 MiB boundaries of the disk, so a zero piece is an aligned hole.
        const next = Math.min(end, (Math.floor(pos / CHUNK) + 1) * CHUNK);
        const n = next - pos;
        const bytes = await disk.read(pos, n, buf);
        if (!ZEROS.subarray(0, n).equals(bytes)) {
          await writeFully(fh, bytes, pos);
          written += n;
        }
        onProgress(n);
        pos = next;
      }
    }
    await fh.sync();
    return written;
  } finally {
    await fh.close();
  }
}

async function writeFully(
  fh: Awaited<ReturnType<typeof open>>,
  bytes: Uint8Array,
  position: number,
): Promise<void> {
  let done = 0;
  while (done < bytes.length) {
    const { bytesWritten } = await fh.write(bytes, done, bytes.length - done, position + done);
    done += bytesWritten;
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path, constants.F_OK);
    return true;
  } catch {
    return false;
  }
}

/** Makes the renames durable (fsync of the directory). */
async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
