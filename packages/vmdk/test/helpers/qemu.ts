import { execFile } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/**
 * Fails (never skips) when qemu-img or qemu-io is missing: a green run must mean the real
 * tools checked the files. scripts/setup.sh installs them (Debian package qemu-utils).
 */
export function requireQemu(): void {
  const dirs = (process.env.PATH ?? '').split(delimiter);
  for (const tool of ['qemu-img', 'qemu-io']) {
    const found = dirs.some((d) => {
      try {
        accessSync(join(d, tool), constants.X_OK);
        return true;
      } catch {
        return false;
      }
    });
    if (!found)
      throw new Error(
        `${tool} is missing: install the Debian package qemu-utils (scripts/setup.sh)`,
      );
  }
}

/** Runs qemu-img; rejects with its stderr on a non-zero exit. */
export async function qemuImg(...args: string[]): Promise<string> {
  const { stdout } = await run('qemu-img', args, { maxBuffer: 16 * 1024 * 1024 });
  return stdout;
}

/** Runs qemu-img and returns its exit code and output, whatever the code. */
export async function qemuImgStatus(
  ...args: string[]
): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run('qemu-img', args, { maxBuffer: 16 * 1024 * 1024 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return {
      code: typeof e.code === 'number' ? e.code : -1,
      stdout: e.stdout ?? '',
      stderr: e.stderr ?? '',
    };
  }
}

/** Runs qemu-io with `-c` commands on an image (read-write); returns stdout. */
export async function qemuIo(
  image: string,
  format: string,
  ...commands: string[]
): Promise<string> {
  const args = ['-f', format];
  for (const c of commands) args.push('-c', c);
  const { stdout } = await run('qemu-io', [...args, image], { maxBuffer: 16 * 1024 * 1024 });
  return stdout;
}

/** A fresh temp directory and its removal. */
export async function tempDir(
  prefix: string,
): Promise<{ dir: string; remove: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), `ivmr-vmdk-${prefix}-`));
  return { dir, remove: () => rm(dir, { recursive: true, force: true }) };
}

/** Writes a sparse raw file of `size` bytes holding `chunks` (everything else is holes). */
export async function writeSparseRaw(
  path: string,
  size: number,
  chunks: readonly { offset: number; bytes: Uint8Array }[],
): Promise<void> {
  const fh = await open(path, 'w');
  try {
    await fh.truncate(size);
    for (const c of chunks) await fh.write(c.bytes, 0, c.bytes.length, c.offset);
  } finally {
    await fh.close();
  }
}
