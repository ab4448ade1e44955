import { read as readCallback, readSync } from 'node:fs';
import {
  constants,
  type FileHandle,
  mkdir,
  open,
  rename,
  stat,
  statfs,
  unlink,
} from 'node:fs/promises';
import { fromSystemError } from '../errors.js';
import type { CacheFile, CacheFileSystem, VolumeSpace } from './cache-file-system.js';

/**
 * `fs.read` on a descriptor: the callback API costs about half of what `FileHandle.read` does per
 * call (no promise-based handle bookkeeping), and a read cache hit is mostly this call.
 */
function readAt(
  fd: number,
  into: Uint8Array,
  offset: number,
  length: number,
  position: number,
): Promise<number> {
  return new Promise((resolve, reject) => {
    readCallback(fd, into, offset, length, position, (err, n) => (err ? reject(err) : resolve(n)));
  });
}

function badDescriptor(): NodeJS.ErrnoException {
  return Object.assign(new Error('file is closed'), { code: 'EBADF' });
}

class NodeCacheFile implements CacheFile {
  readonly #fh: FileHandle;
  readonly #path: string;
  #closed = false;
  #reading = 0;
  #drained: (() => void) | undefined;

  constructor(fh: FileHandle, path: string) {
    this.#fh = fh;
    this.#path = path;
  }

  async read(into: Uint8Array, position: number): Promise<number> {
    // Reads use the raw descriptor, which FileHandle.close does not wait for: close waits for them.
    if (this.#closed) throw fromSystemError(badDescriptor(), `read of ${this.#path}`);
    this.#reading++;
    let done = 0;
    try {
      while (done < into.length) {
        const bytesRead = await readAt(
          this.#fh.fd,
          into,
          done,
          into.length - done,
          position + done,
        );
        if (bytesRead === 0) break;
        done += bytesRead;
      }
    } catch (err) {
      throw fromSystemError(err, `read of ${this.#path}`, { path: this.#path, position });
    } finally {
      if (--this.#reading === 0) this.#drained?.();
    }
    return done;
  }

  readNow(into: Uint8Array, position: number): number {
    if (this.#closed) throw fromSystemError(badDescriptor(), `read of ${this.#path}`);
    let done = 0;
    try {
      while (done < into.length) {
        const n = readSync(this.#fh.fd, into, done, into.length - done, position + done);
        if (n === 0) break;
        done += n;
      }
    } catch (err) {
      throw fromSystemError(err, `read of ${this.#path}`, { path: this.#path, position });
    }
    return done;
  }

  async write(data: Uint8Array, position: number): Promise<void> {
    let done = 0;
    try {
      while (done < data.length) {
        const { bytesWritten } = await this.#fh.write(
          data,
          done,
          data.length - done,
          position + done,
        );
        done += bytesWritten;
      }
    } catch (err) {
      throw fromSystemError(err, `write to ${this.#path}`, { path: this.#path, position });
    }
  }

  async writev(buffers: readonly Uint8Array[], position: number): Promise<void> {
    let rest = buffers;
    let at = position;
    try {
      while (rest.length > 0) {
        const { bytesWritten } = await this.#fh.writev(rest as Uint8Array[], at);
        if (bytesWritten === 0) throw Object.assign(new Error('wrote nothing'), { code: 'EIO' });
        at += bytesWritten;
        // A short write: go on after the bytes written.
        let n = bytesWritten;
        let i = 0;
        while (i < rest.length && n >= rest[i]!.length) n -= rest[i++]!.length;
        rest = i < rest.length ? [rest[i]!.subarray(n), ...rest.slice(i + 1)] : [];
      }
    } catch (err) {
      throw fromSystemError(err, `write to ${this.#path}`, { path: this.#path, position: at });
    }
  }

  async sync(): Promise<void> {
    try {
      await this.#fh.datasync();
    } catch (err) {
      throw fromSystemError(err, `fsync of ${this.#path}`, { path: this.#path });
    }
  }

  async truncate(size: number): Promise<void> {
    try {
      await this.#fh.truncate(size);
    } catch (err) {
      throw fromSystemError(err, `truncate of ${this.#path}`, { path: this.#path, size });
    }
  }

  async size(): Promise<number> {
    return (await this.#fh.stat()).size;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#reading > 0) {
      await new Promise<void>((resolve) => {
        this.#drained = resolve;
      });
    }
    await this.#fh.close();
  }
}

const FLAGS = {
  read: constants.O_RDONLY,
  write: constants.O_RDWR,
  create: constants.O_RDWR | constants.O_CREAT,
} as const;

/** Space of the volume holding `path`, from `fs.statfs`. */
export async function nodeStatFs(path: string): Promise<VolumeSpace> {
  try {
    const s = await statfs(path);
    return { totalBytes: s.blocks * s.bsize, freeBytes: s.bavail * s.bsize };
  } catch (err) {
    throw fromSystemError(err, `statfs of ${path}`, { path });
  }
}

/** The real file system (`node:fs/promises`), with errors mapped to `IvmrError`s. */
export const nodeFileSystem: CacheFileSystem = {
  async open(path, flags) {
    try {
      return new NodeCacheFile(await open(path, FLAGS[flags], 0o644), path);
    } catch (err) {
      throw fromSystemError(err, `open of ${path}`, { path });
    }
  },
  async exists(path) {
    try {
      await stat(path);
      return true;
    } catch (err) {
      if ((err as { code?: unknown }).code === 'ENOENT') return false;
      throw fromSystemError(err, `stat of ${path}`, { path });
    }
  },
  async rename(from, to) {
    try {
      await rename(from, to);
    } catch (err) {
      throw fromSystemError(err, `rename of ${from}`, { path: from, to });
    }
  },
  async unlink(path) {
    try {
      await unlink(path);
    } catch (err) {
      if ((err as { code?: unknown }).code === 'ENOENT') return;
      throw fromSystemError(err, `unlink of ${path}`, { path });
    }
  },
  async mkdir(path) {
    try {
      await mkdir(path, { recursive: true });
    } catch (err) {
      throw fromSystemError(err, `mkdir of ${path}`, { path });
    }
  },
  async syncDir(path) {
    let fh: FileHandle | undefined;
    try {
      fh = await open(path, constants.O_RDONLY);
      await fh.sync();
    } catch (err) {
      throw fromSystemError(err, `fsync of folder ${path}`, { path });
    } finally {
      await fh?.close();
    }
  },
  statfs: nodeStatFs,
};
