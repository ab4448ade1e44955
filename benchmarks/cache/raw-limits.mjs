/**
 * The raw file-system speed of the disk the cache lives on, measured in the same run: fio with
 * the psync engine (one synchronous call at a time, like the overlay at queue depth 1) on a plain
 * file, or, where fio is not installed, the same pattern from a node `FileHandle` loop.
 */
import { execFile } from 'node:child_process';
import { open } from 'node:fs/promises';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** True when `fio` runs here. */
export async function hasFio() {
  try {
    await run('fio', ['--version']);
    return true;
  } catch {
    return false;
  }
}

/**
 * One fio job on `file` (`size` bytes, laid out by fio first): `rw` is `randwrite` or
 * `randread`, `bs` the block size, `syncEvery` > 0 adds an fdatasync every so many writes.
 * Reads come from the page cache (`invalidate=0`), as cache hits do.
 * @returns {Promise<{ iops: number, bytesPerSec: number, tool: string }>}
 */
export async function fioJob({ file, size, rw, bs, seconds, syncEvery = 0 }) {
  const args = [
    '--name=raw',
    `--filename=${file}`,
    `--size=${size}`,
    `--bs=${bs}`,
    `--rw=${rw}`,
    '--ioengine=psync',
    '--iodepth=1',
    '--invalidate=0',
    '--randrepeat=0',
    `--runtime=${Math.max(1, Math.round(seconds))}`,
    '--time_based',
    '--output-format=json',
  ];
  if (syncEvery > 0) args.push(`--fdatasync=${syncEvery}`);
  const { stdout } = await run('fio', args, { maxBuffer: 16 << 20 });
  const job = JSON.parse(stdout.slice(stdout.indexOf('{'))).jobs[0];
  const side = rw.includes('write') ? job.write : job.read;
  return { iops: side.iops, bytesPerSec: side.bw_bytes, tool: `fio ${rw} bs=${bs} psync` };
}

/**
 * The same pattern without fio: random aligned `bs` writes (fdatasync every `syncEvery`) or
 * reads of `file` with a node FileHandle, one at a time, for `seconds`.
 */
export async function nodeJob({ file, size, rw, bs, seconds, syncEvery = 0, rng }) {
  const fh = await open(file, 'r+');
  try {
    if ((await fh.stat()).size < size) await fh.truncate(size);
    const buf = new Uint8Array(bs).fill(0x5a);
    const slots = Math.floor(size / bs);
    let n = 0;
    const end = performance.now() + seconds * 1000;
    const t0 = performance.now();
    while (performance.now() < end) {
      const pos = rng.int(0, slots - 1) * bs;
      if (rw === 'randwrite') await fh.write(buf, 0, bs, pos);
      else await fh.read(buf, 0, bs, pos);
      n++;
      if (rw === 'randwrite' && syncEvery > 0 && n % syncEvery === 0) await fh.datasync();
    }
    const secs = (performance.now() - t0) / 1000;
    return { iops: n / secs, bytesPerSec: (n * bs) / secs, tool: `node FileHandle ${rw} bs=${bs}` };
  } finally {
    await fh.close();
  }
}
