import type { NfsFileSystem, NfsRequestContext } from '../filesystem.js';

/**
 * The request context of every call the conformance suite makes: root over AUTH_SYS, from
 * loopback, through the export `/conformance`.
 */
export const CONFORMANCE_CONTEXT: NfsRequestContext = Object.freeze({
  user: Object.freeze({ uid: 0, gid: 0, gids: Object.freeze([0]) }),
  clientAddress: '127.0.0.1',
  exportPath: '/conformance',
});

/** One entry of a {@link ConformanceTree}: a directory, or a regular file with its bytes. */
export type ConformanceEntry =
  | {
      readonly type: 'directory';
      /** Relative to the root, `/`-separated. */
      readonly path: string;
    }
  | {
      readonly type: 'file';
      /** Relative to the root, `/`-separated. */
      readonly path: string;
      /** The file's content. */
      readonly data: Uint8Array;
    };

/**
 * Files and directories an adapter under test serves, parents before their children. Paths are
 * relative to the root directory and `/`-separated (`dir/sub/deep.txt`).
 */
export type ConformanceTree = readonly ConformanceEntry[];

const text = (s: string): Uint8Array => new TextEncoder().encode(s);

/** `n` bytes of a fixed pseudo-random pattern (xorshift32), the same on every call. */
export function patternBytes(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
}

/**
 * The tree every adapter serves to the suite (a fresh copy on each call):
 *
 * ```
 * hello.txt          "hello, conformance\n"
 * data.bin           200,003 pseudo-random bytes (odd length, more than three 64 KiB blocks)
 * empty.txt          no bytes
 * dir/a.txt          "a"
 * dir/b.txt          "bb"
 * dir/sub/deep.txt   "deep down\n"
 * empty/             an empty directory
 * many/entry-00..39  40 small files (READDIR order)
 * ```
 */
export function conformanceTree(): ConformanceTree {
  const many = Array.from({ length: 40 }, (_, i): ConformanceEntry => {
    const name = `entry-${String(i).padStart(2, '0')}`;
    return { type: 'file', path: `many/${name}`, data: text(`${name}\n`) };
  });
  return [
    { type: 'file', path: 'hello.txt', data: text('hello, conformance\n') },
    { type: 'file', path: 'data.bin', data: patternBytes(200_003, 0x1f2e3d4c) },
    { type: 'file', path: 'empty.txt', data: new Uint8Array(0) },
    { type: 'directory', path: 'dir' },
    { type: 'file', path: 'dir/a.txt', data: text('a') },
    { type: 'file', path: 'dir/b.txt', data: text('bb') },
    { type: 'directory', path: 'dir/sub' },
    { type: 'file', path: 'dir/sub/deep.txt', data: text('deep down\n') },
    { type: 'directory', path: 'empty' },
    { type: 'directory', path: 'many' },
    ...many,
  ];
}

/** The directory part and the last name of a tree path (`''` is the root directory). */
export function splitPath(path: string): { dir: string; name: string } {
  const at = path.lastIndexOf('/');
  return at < 0 ? { dir: '', name: path } : { dir: path.slice(0, at), name: path.slice(at + 1) };
}

/**
 * Builds `tree` in a writable adapter through its own `mkdir`, `create` (guarded) and `write`
 * (`file_sync`): the easy way for a writable adapter's factory to serve the suite's tree. A
 * read-only adapter has to be given the tree some other way (from files on disk, say).
 */
export async function writeTree(
  fs: NfsFileSystem,
  tree: ConformanceTree = conformanceTree(),
  ctx: NfsRequestContext = CONFORMANCE_CONTEXT,
): Promise<void> {
  if (!fs.mkdir || !fs.create || !fs.write) {
    throw new Error('writeTree needs an adapter with mkdir, create and write');
  }
  const ids = new Map<string, bigint>([['', fs.rootId]]);
  for (const entry of tree) {
    const { dir, name } = splitPath(entry.path);
    const dirId = ids.get(dir);
    if (dirId === undefined) throw new Error(`${entry.path} comes before its directory`);
    if (entry.type === 'directory') {
      ids.set(entry.path, await fs.mkdir(dirId, name, { mode: 0o755 }, ctx));
      continue;
    }
    const id = await fs.create(dirId, name, 'guarded', { mode: 0o644 }, undefined, ctx);
    if (entry.data.length > 0) await fs.write(id, 0, entry.data, 'file_sync', ctx);
  }
}
