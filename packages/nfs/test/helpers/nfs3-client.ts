import { afterEach, beforeEach, expect } from 'vitest';
import type { ExportOptions } from '../../src/exports.js';
import type { NfsTime, SetAttributes } from '../../src/filesystem.js';
import { exportIdOf, HandleCodec } from '../../src/handles.js';
import { MOUNT_PROGRAM, MountProc } from '../../src/mount/mount-program.js';
import { Nfs3Proc } from '../../src/nfs3/constants.js';
import { NFS_PROGRAM } from '../../src/nfs3/nfs3-program.js';
import {
  type Fattr3,
  readFattr3,
  readNfsFh3,
  readNfstime3,
  readPostOpAttr,
  readPostOpFh3,
  readWccData,
  type WccData,
  writeDiropargs3,
  writeNfstime3,
  writeSattr3,
} from '../../src/nfs3/types.js';
import type { RpcCall } from '../../src/rpc/dispatcher.js';
import { NfsServer, type NfsServerOptions } from '../../src/server.js';
import type { XdrReader } from '../../src/xdr/reader.js';
import type { XdrWriter } from '../../src/xdr/writer.js';
import { MemoryFileSystem } from './memory-fs.js';
import { type RpcReply, RpcTestClient, type TestCred } from './rpc-client.js';

/** Thrown by {@link Nfs3Client} when a call is not answered with accept_stat SUCCESS. */
export class RpcReplyError extends Error {
  constructor(readonly reply: RpcReply) {
    super(
      reply.replyStat === 0
        ? `rpc accept_stat ${reply.acceptStat}`
        : `rpc denied: reject_stat ${reply.rejectStat}`,
    );
  }
}

/** Per-call options: credentials and a fixed xid (to test retransmissions). */
export interface CallOptions {
  readonly cred?: TestCred;
  readonly xid?: number;
}

export interface AttrRes {
  readonly status: number;
  readonly attrs?: Fattr3;
}
export interface WccRes {
  readonly status: number;
  readonly wcc: WccData;
}
export interface LookupRes {
  readonly status: number;
  readonly object?: Buffer;
  readonly objAttrs?: Fattr3;
  readonly dirAttrs?: Fattr3;
}
export interface AccessRes {
  readonly status: number;
  readonly attrs?: Fattr3;
  readonly access?: number;
}
export interface ReadlinkRes {
  readonly status: number;
  readonly attrs?: Fattr3;
  readonly data?: string;
}
export interface ReadRes {
  readonly status: number;
  readonly attrs?: Fattr3;
  readonly count?: number;
  readonly eof?: boolean;
  readonly data?: Buffer;
}
export interface WriteRes {
  readonly status: number;
  readonly wcc: WccData;
  readonly count?: number;
  readonly committed?: number;
  readonly verf?: Buffer;
}
/** CREATE, MKDIR, SYMLINK and MKNOD results. */
export interface CreateRes {
  readonly status: number;
  readonly object?: Buffer;
  readonly objAttrs?: Fattr3;
  readonly wcc: WccData;
}
export interface RenameRes {
  readonly status: number;
  readonly fromWcc: WccData;
  readonly toWcc: WccData;
}
export interface LinkRes {
  readonly status: number;
  readonly attrs?: Fattr3;
  readonly wcc: WccData;
}
export interface DirEntry {
  readonly fileId: bigint;
  readonly name: string;
  readonly cookie: bigint;
  /** READDIRPLUS only. */
  readonly attrs?: Fattr3;
  readonly handle?: Buffer;
}
export interface ReaddirRes {
  readonly status: number;
  /** Bytes of the result body, status included (what count / maxcount bound). */
  readonly bodySize: number;
  readonly dirAttrs?: Fattr3;
  readonly verf?: Buffer;
  readonly entries?: DirEntry[];
  readonly eof?: boolean;
}
export interface FsstatRes {
  readonly status: number;
  readonly attrs?: Fattr3;
  readonly tbytes?: bigint;
  readonly fbytes?: bigint;
  readonly abytes?: bigint;
  readonly tfiles?: bigint;
  readonly ffiles?: bigint;
  readonly afiles?: bigint;
  readonly invarsec?: number;
}
export interface FsinfoRes {
  readonly status: number;
  readonly attrs?: Fattr3;
  readonly rtmax?: number;
  readonly rtpref?: number;
  readonly rtmult?: number;
  readonly wtmax?: number;
  readonly wtpref?: number;
  readonly wtmult?: number;
  readonly dtpref?: number;
  readonly maxfilesize?: bigint;
  readonly timeDelta?: NfsTime;
  readonly properties?: number;
}
export interface PathconfRes {
  readonly status: number;
  readonly attrs?: Fattr3;
  readonly linkmax?: number;
  readonly nameMax?: number;
  readonly noTrunc?: boolean;
  readonly chownRestricted?: boolean;
  readonly caseInsensitive?: boolean;
  readonly casePreserving?: boolean;
}
export interface CommitRes {
  readonly status: number;
  readonly wcc: WccData;
  readonly verf?: Buffer;
}

/** How CREATE makes the file (createhow3). */
export type CreateHow =
  | { readonly mode: 'unchecked' | 'guarded'; readonly attrs?: SetAttributes }
  | { readonly mode: 'exclusive'; readonly verf: Uint8Array };

/** A file name on the wire: a string, or raw bytes for names no string can carry. */
export type WireName = string | Uint8Array;

const copy = (b: Buffer): Buffer => Buffer.from(b);

/**
 * A typed NFSv3 client for tests, on top of {@link RpcTestClient}, using the server's own codecs.
 * Every method sends one call and decodes its result; a call not accepted with SUCCESS throws
 * {@link RpcReplyError}.
 */
export class Nfs3Client {
  readonly rpc: RpcTestClient;
  cred: TestCred;

  constructor(rpc: RpcTestClient, cred: TestCred = { flavor: 'sys', uid: 0, gid: 0 }) {
    this.rpc = rpc;
    this.cred = cred;
  }

  static async connect(port: number, cred?: TestCred): Promise<Nfs3Client> {
    return new Nfs3Client(await RpcTestClient.connect(port), cred);
  }

  close(): Promise<void> {
    return this.rpc.close();
  }

  /**
   * MOUNT v3 MNT of `path` on this client's connection (the test servers serve MOUNT on the NFS
   * port): the mount status and, when it is MNT3_OK, the handle.
   */
  async mnt(path: string): Promise<{ status: number; handle?: Buffer }> {
    const reply = await this.rpc.call(MOUNT_PROGRAM, 3, MountProc.MNT, (w) => w.string(path), {
      cred: this.cred,
    });
    if (reply.replyStat !== 0 || reply.acceptStat !== 0) throw new RpcReplyError(reply);
    const status = reply.body.u32();
    return status === 0 ? { status, handle: Buffer.from(reply.body.opaque(64)) } : { status };
  }

  /** Sends one NFSv3 call and decodes its result body. */
  async call<T>(
    proc: number,
    args: (w: XdrWriter) => void,
    decode: (r: XdrReader) => T,
    options: CallOptions = {},
  ): Promise<T> {
    const reply = await this.rpc.call(NFS_PROGRAM, 3, proc, args, {
      cred: options.cred ?? this.cred,
      xid: options.xid,
    });
    if (reply.replyStat !== 0 || reply.acceptStat !== 0) throw new RpcReplyError(reply);
    return decode(reply.body);
  }

  null(options?: CallOptions): Promise<void> {
    return this.call(
      Nfs3Proc.NULL,
      () => {},
      () => undefined,
      options,
    );
  }

  getattr(fh: Uint8Array, options?: CallOptions): Promise<AttrRes> {
    return this.call(
      Nfs3Proc.GETATTR,
      (w) => w.opaque(fh),
      (r) => {
        const status = r.u32();
        return status === 0 ? { status, attrs: readFattr3(r) } : { status };
      },
      options,
    );
  }

  setattr(
    fh: Uint8Array,
    attrs: SetAttributes,
    guard?: NfsTime,
    options?: CallOptions,
  ): Promise<WccRes> {
    return this.call(
      Nfs3Proc.SETATTR,
      (w) => {
        w.opaque(fh);
        writeSattr3(w, attrs);
        if (guard === undefined) w.bool(false);
        else {
          w.bool(true);
          writeNfstime3(w, guard);
        }
      },
      (r) => ({ status: r.u32(), wcc: readWccData(r) }),
      options,
    );
  }

  lookup(dir: Uint8Array, name: WireName, options?: CallOptions): Promise<LookupRes> {
    return this.call(
      Nfs3Proc.LOOKUP,
      (w) => writeDiropargs3(w, dir, name),
      (r) => {
        const status = r.u32();
        if (status !== 0) return { status, dirAttrs: readPostOpAttr(r) };
        const object = copy(readNfsFh3(r));
        return { status, object, objAttrs: readPostOpAttr(r), dirAttrs: readPostOpAttr(r) };
      },
      options,
    );
  }

  access(fh: Uint8Array, mask: number, options?: CallOptions): Promise<AccessRes> {
    return this.call(
      Nfs3Proc.ACCESS,
      (w) => w.opaque(fh).u32(mask),
      (r) => {
        const status = r.u32();
        const attrs = readPostOpAttr(r);
        return status === 0 ? { status, attrs, access: r.u32() } : { status, attrs };
      },
      options,
    );
  }

  readlink(fh: Uint8Array, options?: CallOptions): Promise<ReadlinkRes> {
    return this.call(
      Nfs3Proc.READLINK,
      (w) => w.opaque(fh),
      (r) => {
        const status = r.u32();
        const attrs = readPostOpAttr(r);
        return status === 0 ? { status, attrs, data: r.string(4096) } : { status, attrs };
      },
      options,
    );
  }

  read(fh: Uint8Array, offset: number, count: number, options?: CallOptions): Promise<ReadRes> {
    return this.call(
      Nfs3Proc.READ,
      (w) => w.opaque(fh).u64n(offset).u32(count),
      (r) => {
        const status = r.u32();
        const attrs = readPostOpAttr(r);
        if (status !== 0) return { status, attrs };
        const n = r.u32();
        const eof = r.bool();
        return { status, attrs, count: n, eof, data: copy(r.opaque(64 * 1024 * 1024)) };
      },
      options,
    );
  }

  /** WRITE; `count` defaults to the data's length (a smaller one tests short writes). */
  write(
    fh: Uint8Array,
    offset: number,
    data: Uint8Array,
    stable: 0 | 1 | 2 = 2,
    options?: CallOptions & { count?: number },
  ): Promise<WriteRes> {
    return this.call(
      Nfs3Proc.WRITE,
      (w) =>
        w
          .opaque(fh)
          .u64n(offset)
          .u32(options?.count ?? data.length)
          .u32(stable)
          .opaque(data),
      (r) => {
        const status = r.u32();
        const wcc = readWccData(r);
        if (status !== 0) return { status, wcc };
        return { status, wcc, count: r.u32(), committed: r.u32(), verf: copy(r.fixed(8)) };
      },
      options,
    );
  }

  create(
    dir: Uint8Array,
    name: WireName,
    how: CreateHow,
    options?: CallOptions,
  ): Promise<CreateRes> {
    return this.call(
      Nfs3Proc.CREATE,
      (w) => {
        writeDiropargs3(w, dir, name);
        if (how.mode === 'exclusive') w.u32(2).fixed(how.verf);
        else {
          w.u32(how.mode === 'guarded' ? 1 : 0);
          writeSattr3(w, how.attrs ?? {});
        }
      },
      decodeCreate,
      options,
    );
  }

  mkdir(
    dir: Uint8Array,
    name: WireName,
    attrs: SetAttributes = {},
    options?: CallOptions,
  ): Promise<CreateRes> {
    return this.call(
      Nfs3Proc.MKDIR,
      (w) => {
        writeDiropargs3(w, dir, name);
        writeSattr3(w, attrs);
      },
      decodeCreate,
      options,
    );
  }

  symlink(
    dir: Uint8Array,
    name: WireName,
    target: string,
    attrs: SetAttributes = {},
    options?: CallOptions,
  ): Promise<CreateRes> {
    return this.call(
      Nfs3Proc.SYMLINK,
      (w) => {
        writeDiropargs3(w, dir, name);
        writeSattr3(w, attrs);
        w.string(target);
      },
      decodeCreate,
      options,
    );
  }

  /** MKNOD of `type` (ftype3); devices get major/minor 1/3. */
  mknod(dir: Uint8Array, name: WireName, type: number, options?: CallOptions): Promise<CreateRes> {
    return this.call(
      Nfs3Proc.MKNOD,
      (w) => {
        writeDiropargs3(w, dir, name);
        w.u32(type);
        if (type === 3 || type === 4) {
          writeSattr3(w, {});
          w.u32(1).u32(3);
        } else if (type === 6 || type === 7) writeSattr3(w, {});
      },
      decodeCreate,
      options,
    );
  }

  remove(dir: Uint8Array, name: WireName, options?: CallOptions): Promise<WccRes> {
    return this.call(
      Nfs3Proc.REMOVE,
      (w) => writeDiropargs3(w, dir, name),
      (r) => ({ status: r.u32(), wcc: readWccData(r) }),
      options,
    );
  }

  rmdir(dir: Uint8Array, name: WireName, options?: CallOptions): Promise<WccRes> {
    return this.call(
      Nfs3Proc.RMDIR,
      (w) => writeDiropargs3(w, dir, name),
      (r) => ({ status: r.u32(), wcc: readWccData(r) }),
      options,
    );
  }

  rename(
    fromDir: Uint8Array,
    fromName: WireName,
    toDir: Uint8Array,
    toName: WireName,
    options?: CallOptions,
  ): Promise<RenameRes> {
    return this.call(
      Nfs3Proc.RENAME,
      (w) => {
        writeDiropargs3(w, fromDir, fromName);
        writeDiropargs3(w, toDir, toName);
      },
      (r) => ({ status: r.u32(), fromWcc: readWccData(r), toWcc: readWccData(r) }),
      options,
    );
  }

  link(file: Uint8Array, dir: Uint8Array, name: WireName, options?: CallOptions): Promise<LinkRes> {
    return this.call(
      Nfs3Proc.LINK,
      (w) => {
        w.opaque(file);
        writeDiropargs3(w, dir, name);
      },
      (r) => ({ status: r.u32(), attrs: readPostOpAttr(r), wcc: readWccData(r) }),
      options,
    );
  }

  readdir(
    dir: Uint8Array,
    cookie: bigint,
    verf: Uint8Array,
    count: number,
    options?: CallOptions,
  ): Promise<ReaddirRes> {
    return this.call(
      Nfs3Proc.READDIR,
      (w) => w.opaque(dir).u64(cookie).fixed(verf).u32(count),
      (r) => decodeDirList(r, false),
      options,
    );
  }

  readdirplus(
    dir: Uint8Array,
    cookie: bigint,
    verf: Uint8Array,
    dircount: number,
    maxcount: number,
    options?: CallOptions,
  ): Promise<ReaddirRes> {
    return this.call(
      Nfs3Proc.READDIRPLUS,
      (w) => w.opaque(dir).u64(cookie).fixed(verf).u32(dircount).u32(maxcount),
      (r) => decodeDirList(r, true),
      options,
    );
  }

  fsstat(fh: Uint8Array, options?: CallOptions): Promise<FsstatRes> {
    return this.call(
      Nfs3Proc.FSSTAT,
      (w) => w.opaque(fh),
      (r) => {
        const status = r.u32();
        const attrs = readPostOpAttr(r);
        if (status !== 0) return { status, attrs };
        return {
          status,
          attrs,
          tbytes: r.u64(),
          fbytes: r.u64(),
          abytes: r.u64(),
          tfiles: r.u64(),
          ffiles: r.u64(),
          afiles: r.u64(),
          invarsec: r.u32(),
        };
      },
      options,
    );
  }

  fsinfo(fh: Uint8Array, options?: CallOptions): Promise<FsinfoRes> {
    return this.call(
      Nfs3Proc.FSINFO,
      (w) => w.opaque(fh),
      (r) => {
        const status = r.u32();
        const attrs = readPostOpAttr(r);
        if (status !== 0) return { status, attrs };
        return {
          status,
          attrs,
          rtmax: r.u32(),
          rtpref: r.u32(),
          rtmult: r.u32(),
          wtmax: r.u32(),
          wtpref: r.u32(),
          wtmult: r.u32(),
          dtpref: r.u32(),
          maxfilesize: r.u64(),
          timeDelta: readNfstime3(r),
          properties: r.u32(),
        };
      },
      options,
    );
  }

  pathconf(fh: Uint8Array, options?: CallOptions): Promise<PathconfRes> {
    return this.call(
      Nfs3Proc.PATHCONF,
      (w) => w.opaque(fh),
      (r) => {
        const status = r.u32();
        const attrs = readPostOpAttr(r);
        if (status !== 0) return { status, attrs };
        return {
          status,
          attrs,
          linkmax: r.u32(),
          nameMax: r.u32(),
          noTrunc: r.bool(),
          chownRestricted: r.bool(),
          caseInsensitive: r.bool(),
          casePreserving: r.bool(),
        };
      },
      options,
    );
  }

  commit(fh: Uint8Array, offset = 0, count = 0, options?: CallOptions): Promise<CommitRes> {
    return this.call(
      Nfs3Proc.COMMIT,
      (w) => w.opaque(fh).u64n(offset).u32(count),
      (r) => {
        const status = r.u32();
        const wcc = readWccData(r);
        return status === 0 ? { status, wcc, verf: copy(r.fixed(8)) } : { status, wcc };
      },
      options,
    );
  }

  /** Reads a whole directory with READDIR in pages of `count` bytes. */
  async readdirAll(dir: Uint8Array, count = 8192): Promise<DirEntry[]> {
    const all: DirEntry[] = [];
    let cookie = 0n;
    let verf: Uint8Array = new Uint8Array(8);
    for (;;) {
      const res = await this.readdir(dir, cookie, verf, count);
      if (res.status !== 0) throw new Error(`READDIR failed with status ${res.status}`);
      all.push(...res.entries!);
      if (res.eof) return all;
      cookie = res.entries!.at(-1)!.cookie;
      verf = res.verf!;
    }
  }
}

function decodeCreate(r: XdrReader): CreateRes {
  const status = r.u32();
  if (status !== 0) return { status, wcc: readWccData(r) };
  const fh = readPostOpFh3(r);
  const object = fh ? Buffer.from(fh) : undefined;
  return { status, object, objAttrs: readPostOpAttr(r), wcc: readWccData(r) };
}

function decodeDirList(r: XdrReader, plus: boolean): ReaddirRes {
  const bodySize = r.remaining;
  const status = r.u32();
  const dirAttrs = readPostOpAttr(r);
  if (status !== 0) return { status, bodySize, dirAttrs };
  const verf = copy(r.fixed(8));
  const entries: DirEntry[] = [];
  while (r.bool()) {
    const fileId = r.u64();
    const name = r.string(4096);
    const cookie = r.u64();
    if (plus) {
      const attrs = readPostOpAttr(r);
      const fh = readPostOpFh3(r);
      entries.push({ fileId, name, cookie, attrs, handle: fh ? copy(fh) : undefined });
    } else entries.push({ fileId, name, cookie });
  }
  return { status, bodySize, dirAttrs, verf, entries, eof: r.bool() };
}

/** The handle key test servers use unless told otherwise. */
export const TEST_HANDLE_KEY = Buffer.from('ivmr-nfs3-test-handle-key-000001');

/** Options of {@link startTestServer}: NfsServer options without the ports. */
export interface TestServerOptions
  extends Partial<Omit<NfsServerOptions, 'nfsPort' | 'mountPort'>> {
  readonly exports: readonly ExportOptions[];
}

/** A started in-process server and what tests need to talk to it. */
export interface TestServer {
  readonly server: NfsServer;
  readonly port: number;
  /** A codec with the server's key: handles the server accepts. */
  readonly handles: HandleCodec;
  /** Errors passed to `onError`, with their calls. */
  readonly errors: { error: unknown; call: RpcCall | undefined }[];
  /** The handle of file `id` (default: the root) of the export at `path`. */
  handle(path: string, id?: bigint): Buffer;
  stop(): Promise<void>;
}

/** Starts an {@link NfsServer} on 127.0.0.1, NFS and MOUNT on one free port, no portmapper. */
export async function startTestServer(options: TestServerOptions): Promise<TestServer> {
  const key = options.handleKey ?? TEST_HANDLE_KEY;
  const errors: TestServer['errors'] = [];
  const server = new NfsServer({
    ...options,
    handleKey: key,
    nfsPort: 0,
    portmap: 'off',
    onError: (error, call) => {
      errors.push({ error, call });
      options.onError?.(error, call);
    },
  });
  const { nfsPort } = await server.start();
  const handles = new HandleCodec(key);
  const roots = new Map(options.exports.map((e) => [e.path, e.fs.rootId]));
  return {
    server,
    port: nfsPort,
    handles,
    errors,
    handle(path, id) {
      const root = roots.get(path);
      if (root === undefined) throw new Error(`no export ${path}`);
      return handles.encode(exportIdOf(path), id ?? root);
    },
    stop: () => server.stop(),
  };
}

/** What {@link useNfs3Fixture} sets up before each test. */
export interface Nfs3Fixture {
  /** The filesystem of the export `/memfs`. */
  fs: MemoryFileSystem;
  server: TestServer;
  client: Nfs3Client;
  /** Root handle of `/memfs`. */
  root: Buffer;
}

/**
 * Before each test: a fresh {@link MemoryFileSystem} exported as `/memfs` (plus whatever
 * `configure` adds), a server on a free port and a connected client. After each test: closes
 * both and fails if a TCP handle is left open.
 */
export function useNfs3Fixture(
  configure: (fs: MemoryFileSystem) => Partial<TestServerOptions> = () => ({}),
): Nfs3Fixture {
  const f = {} as Nfs3Fixture;
  beforeEach(async () => {
    f.fs = new MemoryFileSystem();
    const extra = configure(f.fs);
    f.server = await startTestServer({
      ...extra,
      exports: extra.exports ?? [{ path: '/memfs', fs: f.fs }],
    });
    f.client = await Nfs3Client.connect(f.server.port);
    f.root = f.server.handle('/memfs');
  });
  afterEach(async () => {
    await f.client.close();
    await f.server.stop();
    await expectNoOpenSockets();
  });
  return f;
}

/** Fails when a TCP socket or server is still open (a test leaked one). */
export async function expectNoOpenSockets(): Promise<void> {
  const open = () => process.getActiveResourcesInfo().filter((r) => r.startsWith('TCP'));
  for (let i = 0; i < 50 && open().length > 0; i++) await new Promise((r) => setTimeout(r, 10));
  expect(open()).toEqual([]);
}
