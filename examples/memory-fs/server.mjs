// An in-memory, writable filesystem served over NFSv3 with @ivmr/nfs. See README.md here.
import { constants } from 'node:buffer';
import { parseArgs } from 'node:util';
import { NfsServer, NfsStatusError } from '@ivmr/nfs';

const now = (t = Date.now()) => ({ seconds: Math.floor(t / 1e3), nanoseconds: (t % 1e3) * 1e6 });
const fail = (status) => {
  throw NfsStatusError.of(status);
};

const touch = (n, t = now()) => Object.assign(n, { mtime: t, ctime: t });
const BASE = { nlink: 1, uid: 0, gid: 0, size: 0, used: 0 };

/** A node has every field of FileAttributes, plus `entries` (a directory) or `data` (a file). */
function node(fileId, type, mode = type === 'file' ? 0o644 : 0o755) {
  const kind = type === 'file' ? { data: Buffer.alloc(0) } : { entries: new Map() };
  return touch({ ...BASE, fileId, type, mode, atime: now(), ...kind });
}

/** Grows a file (doubling: sequential writes copy little) or shrinks it; new bytes read as 0. */
function resize(f, size) {
  if (size > constants.MAX_LENGTH) fail('FBIG');
  if (size > f.data.length) {
    const data = Buffer.alloc(Math.min(constants.MAX_LENGTH, Math.max(size, f.data.length * 2)));
    f.data.copy(data, 0, 0, f.size);
    f.data = data;
  } else if (size < f.size) f.data.fill(0, size, f.size);
  f.size = f.used = size;
}

/** The NfsFileSystem adapter: the server calls it with file ids (bigints) that it chooses. */
function memoryFs() {
  const nodes = new Map([[1n, node(1n, 'directory')]]);
  let nextId = 2n;
  const get = (id) => nodes.get(id) ?? fail('STALE');
  const dir = (id) => get(id).entries ?? fail('NOTDIR');
  const file = (id) => (get(id).data ? get(id) : fail('ISDIR'));
  const lookup = async (dirId, name) => dir(dirId).get(name) ?? fail('NOENT');
  const add = (dirId, name, type, mode) => {
    if (dir(dirId).has(name)) fail('EXIST');
    const n = node(nextId++, type, mode);
    nodes.set(n.fileId, n);
    touch(get(dirId)).entries.set(name, n.fileId);
    return n.fileId;
  };
  const unlink = async (dirId, name, isDir) => {
    const id = await lookup(dirId, name);
    if (!(isDir ? dir(id).size === 0 : file(id))) fail('NOTEMPTY'); // dir(), file(): NOTDIR, ISDIR
    nodes.delete(id);
    touch(get(dirId)).entries.delete(name);
  };
  return {
    rootId: 1n,
    getattr: async (id) => get(id),
    lookup,
    readdir: async (dirId) => [...dir(dirId)].map(([name, fileId]) => ({ name, fileId })),
    read: async (id, offset, count) =>
      Buffer.from(file(id).data.subarray(offset, Math.min(offset + count, file(id).size))),
    write: async (id, offset, bytes) => {
      const f = file(id);
      if (offset + bytes.length > f.size) resize(f, offset + bytes.length);
      touch(f).data.set(bytes, offset);
      return 'file_sync'; // memory is as stable as this filesystem gets
    },
    create: async (dirId, name, how, attrs) => {
      const id = dir(dirId).get(name);
      if (id === undefined) return add(dirId, name, 'file', attrs.mode);
      if (how !== 'unchecked') fail('EXIST'); // a complete adapter keeps EXCLUSIVE's verifier
      if (attrs.size === 0) resize(file(id), 0);
      return id;
    },
    mkdir: async (dirId, name, attrs) => add(dirId, name, 'directory', attrs.mode),
    remove: (dirId, name) => unlink(dirId, name, false),
    rmdir: (dirId, name) => unlink(dirId, name, true),
    rename: async (fromDirId, fromName, toDirId, toName) => {
      const id = await lookup(fromDirId, fromName);
      const replaced = dir(toDirId).get(toName);
      if (replaced !== undefined && replaced !== id) nodes.delete(replaced);
      dir(fromDirId).delete(fromName);
      dir(toDirId).set(toName, id);
      for (const d of [fromDirId, toDirId]) touch(get(d));
    },
    setattr: async (id, attrs) => {
      if (attrs.size !== undefined) resize(file(id), attrs.size);
      const n = touch(get(id));
      for (const k of ['mode', 'uid', 'gid']) n[k] = attrs[k] ?? n[k];
      for (const k of ['atime', 'mtime']) n[k] = attrs[k] === 'server' ? now() : (attrs[k] ?? n[k]);
    },
  };
}

const flags = ['nfs-port', 'mount-port', 'portmap'];
const { values: o } = parseArgs({
  options: Object.fromEntries(flags.map((f) => [f, { type: 'string' }])),
});
const server = new NfsServer({
  exports: [{ path: '/memfs', fs: memoryFs() }],
  nfsPort: Number(o['nfs-port'] ?? 2049),
  mountPort: o['mount-port'] && Number(o['mount-port']),
  portmap: o.portmap ?? 'off',
});
const a = await server.start();
const url = `nfs://${a.host}/memfs?nfsport=${a.nfsPort}&mountport=${a.mountPort}&version=3`;
console.log(`ready nfs=${a.nfsPort} mount=${a.mountPort} portmap=${o.portmap ?? 'off'} url=${url}`);
for (const signal of ['SIGINT', 'SIGTERM']) process.once(signal, () => server.stop());
