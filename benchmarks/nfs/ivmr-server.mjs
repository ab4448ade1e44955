/**
 * The ivmr side of the NFS benchmark, run as a child process so that its CPU time is its own: an
 * `NfsServer` of the built `@ivmr/nfs` exporting `/export`, a memory-backed filesystem of two
 * files: `read.bin` (the benchmark's content, generated from the seed) and `write.bin` (zeros,
 * writable). Listens on 127.0.0.1 with free ports and no portmapper, prints one JSON line
 * `{ "nfsPort", "mountPort", "pid" }` when ready, and stops on SIGTERM or SIGINT.
 *
 * Usage: node nfs/ivmr-server.mjs --size BYTES --write-size BYTES --seed N
 */
import { parseArgs } from 'node:util';
import { NfsServer, NfsStatusError } from '@ivmr/nfs';
import { contentBuffer } from './content.mjs';

const { values: o } = parseArgs({
  options: {
    size: { type: 'string' },
    'write-size': { type: 'string' },
    seed: { type: 'string', default: '1' },
  },
});
const size = Number(o.size);
const writeSize = Number(o['write-size']);
if (!(size > 0 && writeSize > 0)) throw new Error('--size and --write-size are required');

const ROOT = 1n;
const t = { seconds: Math.floor(Date.now() / 1000), nanoseconds: 0 };
const attrs = (fileId, type, mode, bytes) => ({
  fileId,
  type,
  mode,
  nlink: type === 'directory' ? 2 : 1,
  uid: 0,
  gid: 0,
  size: bytes,
  used: bytes,
  atime: t,
  mtime: t,
  ctime: t,
});
const files = new Map([
  [2n, { name: 'read.bin', data: contentBuffer(size, Number(o.seed)), attrs: null }],
  [3n, { name: 'write.bin', data: Buffer.alloc(writeSize), attrs: null }],
]);
for (const [id, f] of files) f.attrs = attrs(id, 'file', 0o644, f.data.length);
const names = new Map([...files].map(([id, f]) => [f.name, id]));
const rootAttrs = attrs(ROOT, 'directory', 0o755, 4096);

const fail = (status) => {
  throw NfsStatusError.of(status);
};
const file = (id) => files.get(id) ?? fail(id === ROOT ? 'ISDIR' : 'STALE');

/** @type {import('@ivmr/nfs').NfsFileSystem} */
const fs = {
  rootId: ROOT,
  async getattr(id) {
    return id === ROOT ? rootAttrs : file(id).attrs;
  },
  async lookup(dirId, name) {
    if (dirId !== ROOT) fail('NOTDIR');
    return names.get(name) ?? fail('NOENT');
  },
  async readdir(dirId) {
    if (dirId !== ROOT) fail('NOTDIR');
    return [...names].map(([name, fileId]) => ({ name, fileId }));
  },
  // A view of the file's memory: the server sends it without a copy.
  async read(id, offset, count) {
    const { data } = file(id);
    return data.subarray(Math.min(offset, data.length), Math.min(offset + count, data.length));
  },
  // fio's nfs engine opens a file for a sequential write with O_CREAT: libnfs sends an UNCHECKED
  // CREATE, which keeps the existing file. New files are not needed.
  async create(dirId, name, mode, attrs) {
    if (dirId !== ROOT) fail('NOTDIR');
    const id = names.get(name);
    if (id === undefined) fail('NOSPC');
    if (mode !== 'unchecked') fail('EXIST');
    if (attrs.size === 0) file(id).data.fill(0);
    return id;
  },
  // Fixed size: the benchmark writes inside the file only.
  async write(id, offset, bytes) {
    const f = file(id);
    if (offset + bytes.length > f.data.length) fail('FBIG');
    f.data.set(bytes, offset);
    return 'file_sync';
  },
};

const server = new NfsServer({
  exports: [{ path: '/export', fs }],
  host: '127.0.0.1',
  nfsPort: 0,
  mountPort: 0,
  portmap: 'off',
  onError: (err) => process.stderr.write(`ivmr-server: ${err?.stack ?? err}\n`),
});
const address = await server.start();
process.stdout.write(
  `${JSON.stringify({ nfsPort: address.nfsPort, mountPort: address.mountPort, pid: process.pid })}\n`,
);
const stop = async () => {
  await server.stop(1000);
  // A normal exit, so that --cpu-prof writes its profile.
  process.exit(0);
};
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
