import { randomBytes } from 'node:crypto';
import { Socket } from 'node:net';
import { describe, expect, it } from 'vitest';
import { NfsStatus } from '../src/filesystem.js';
import { Nfs3Proc } from '../src/nfs3/constants.js';
import { NFS_PROGRAM } from '../src/nfs3/nfs3-program.js';
import { writeDiropargs3 } from '../src/nfs3/types.js';
import { AcceptStat } from '../src/rpc/message.js';
import type { MemoryFileSystem } from './helpers/memory-fs.js';
import { Nfs3Client, type RpcReplyError, useNfs3Fixture } from './helpers/nfs3-client.js';
import { RpcTestClient } from './helpers/rpc-client.js';

const KiB = 1024;
const MiB = 1024 * KiB;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Makes `fs`'s reads wait until `n` of them have started, then lets them all finish in one turn
 * of the event loop, in the order they came or in reverse.
 */
function finishReadsTogether(fs: MemoryFileSystem, n: number, order: 'in order' | 'reverse'): void {
  const pending: (() => void)[] = [];
  const read = fs.read.bind(fs);
  fs.read = async (id, offset, count) => {
    await new Promise<void>((resolve) => {
      pending.push(resolve);
      if (pending.length === n) {
        setImmediate(() => {
          for (const r of order === 'reverse' ? pending.reverse() : pending) r();
        });
      }
    });
    return read(id, offset, count);
  };
}

describe('duplicate request cache', () => {
  const f = useNfs3Fixture();

  const countRemoves = (delayMs = 0) => {
    const calls = { n: 0 };
    const remove = f.fs.remove.bind(f.fs);
    f.fs.remove = async (dirId, name) => {
      calls.n++;
      if (delayMs) await sleep(delayMs);
      return remove(dirId, name);
    };
    return calls;
  };

  const removeCall = (xid: number, name: string, rpc = f.client.rpc) =>
    rpc.call(NFS_PROGRAM, 3, Nfs3Proc.REMOVE, (w) => writeDiropargs3(w, f.root, name), {
      xid,
      cred: { flavor: 'sys' },
    });
  const bodyOf = (r: Awaited<ReturnType<typeof removeCall>>) =>
    Buffer.from(r.body.buf.subarray(r.body.pos));

  it('replays the reply of a retransmitted REMOVE instead of running it again', async () => {
    f.fs.writeFile('/victim');
    const calls = countRemoves();
    const first = bodyOf(await removeCall(4242, 'victim'));
    const again = bodyOf(await removeCall(4242, 'victim'));
    expect(first.readUInt32BE(0)).toBe(NfsStatus.OK);
    expect(again).toEqual(first);
    expect(calls.n).toBe(1);
    expect((await f.client.remove(f.root, 'victim')).status).toBe(NfsStatus.NOENT);
    expect(calls.n).toBe(2);
  });

  it('joins a retransmission that arrives while the first call still runs', async () => {
    f.fs.writeFile('/victim');
    const calls = countRemoves(50);
    // The retransmission comes over a new connection, as after a reconnect.
    const second = await RpcTestClient.connect(f.server.port);
    const [a, b] = await Promise.all([
      removeCall(777, 'victim'),
      sleep(10).then(() => removeCall(777, 'victim', second)),
    ]);
    await second.close();
    expect(bodyOf(b)).toEqual(bodyOf(a));
    expect(a.body.u32()).toBe(NfsStatus.OK);
    expect(calls.n).toBe(1);
  });

  it('replays CREATE GUARDED, so a retransmission does not answer EXIST', async () => {
    const call = () => f.client.create(f.root, 'lockfile', { mode: 'guarded' }, { xid: 999 });
    const first = await call();
    const again = await call();
    expect(first.status).toBe(NfsStatus.OK);
    expect(again.status).toBe(NfsStatus.OK);
    expect(again.object).toEqual(first.object);
    expect((await f.client.create(f.root, 'lockfile', { mode: 'guarded' })).status).toBe(
      NfsStatus.EXIST,
    );
  });
});

describe('many calls on one connection', () => {
  const f = useNfs3Fixture();

  it('answers 200 pipelined READs correctly', async () => {
    const data = randomBytes(200 * 4 * KiB);
    const fh = f.server.handle('/memfs', f.fs.writeFile('/f', data));
    const replies = await Promise.all(
      Array.from({ length: 200 }, (_, i) => f.client.read(fh, i * 4 * KiB, 4 * KiB)),
    );
    replies.forEach((r, i) => {
      expect(r.status).toBe(NfsStatus.OK);
      expect(r.eof).toBe(i === 199);
      expect(r.data?.equals(data.subarray(i * 4 * KiB, (i + 1) * 4 * KiB)), `read ${i}`).toBe(true);
    });
  });

  it('sends replies in completion order when the adapter finishes reads in reverse', async () => {
    const n = 32;
    finishReadsTogether(f.fs, n, 'reverse');
    const data = randomBytes(n * 512);
    const fh = f.server.handle('/memfs', f.fs.writeFile('/f', data));
    const order: number[] = [];
    const replies = await Promise.all(
      Array.from({ length: n }, (_, i) =>
        f.client.read(fh, i * 512, 512).then((r) => {
          order.push(i);
          return r;
        }),
      ),
    );
    expect(order).toEqual(Array.from({ length: n }, (_, i) => n - 1 - i));
    replies.forEach((r, i) => {
      expect(r.data?.equals(data.subarray(i * 512, (i + 1) * 512))).toBe(true);
    });
  });
});

describe('replies finished together', () => {
  const f = useNfs3Fixture();

  /**
   * Runs `n` READs of `count` bytes each whose adapter reads all finish in the same turn of the
   * event loop, checks their data, and returns how many socket writes the server made for them.
   */
  async function readTogether(n: number, count: number): Promise<number> {
    finishReadsTogether(f.fs, n, 'in order');
    const data = randomBytes(n * count);
    const fh = f.server.handle('/memfs', f.fs.writeFile('/f', data));
    const client = f.client.rpc.socket;
    let writes = 0;
    // Node gives a socket's buffered chunks to the system with _writev (one writev call), a
    // lone chunk with _write.
    type Write = (this: Socket, ...args: unknown[]) => unknown;
    const proto = Socket.prototype as unknown as { _write: Write; _writev: Write };
    const original = { _write: proto._write, _writev: proto._writev };
    for (const m of ['_write', '_writev'] as const) {
      proto[m] = function (this: Socket, ...args: unknown[]) {
        if (this !== client) writes++;
        return original[m].apply(this, args);
      };
    }
    try {
      const replies = await Promise.all(
        Array.from({ length: n }, (_, i) => f.client.read(fh, i * count, count)),
      );
      replies.forEach((r, i) => {
        expect(r.data?.equals(data.subarray(i * count, (i + 1) * count)), `read ${i}`).toBe(true);
      });
    } finally {
      proto._write = original._write;
      proto._writev = original._writev;
    }
    return writes;
  }

  it('small ones share socket writes, up to 64 KiB each', async () => {
    // 32 replies of about 4.1 KiB: 15 fit in 64 KiB, so three writes.
    const writes = await readTogether(32, 4 * KiB);
    expect(writes).toBeGreaterThanOrEqual(3);
    expect(writes).toBeLessThanOrEqual(4);
  });

  it('large ones each go out with their own write', async () => {
    expect(await readTogether(4, 128 * KiB)).toBe(4);
  });
});

describe('adapter errors', () => {
  const f = useNfs3Fixture();

  it('answers IO for a plain Error, with attributes, and reports it to onError', async () => {
    const fh = f.server.handle('/memfs', f.fs.writeFile('/f', 'abc'));
    const boom = new Error('disk on fire');
    f.fs.read = async () => {
      throw boom;
    };
    const res = await f.client.read(fh, 0, 10);
    expect(res.status).toBe(NfsStatus.IO);
    expect(res.attrs?.size).toBe(3);
    expect(f.server.errors).toHaveLength(1);
    expect(f.server.errors[0]!.error).toBe(boom);
    expect(f.server.errors[0]!.call).toMatchObject({
      prog: NFS_PROGRAM,
      vers: 3,
      proc: Nfs3Proc.READ,
    });
    // The connection is fine afterwards.
    expect((await f.client.getattr(fh)).status).toBe(NfsStatus.OK);
  });

  it('maps Node.js system errors and NfsStatusError without reporting them', async () => {
    const fh = f.server.handle('/memfs', f.fs.writeFile('/f', 'abc'));
    f.fs.write = async () => {
      throw Object.assign(new Error('no space'), { code: 'ENOSPC' });
    };
    const res = await f.client.write(fh, 0, Buffer.from('x'));
    expect(res.status).toBe(NfsStatus.NOSPC);
    expect(res.wcc.before?.size).toBe(3);
    expect(res.wcc.after?.size).toBe(3);
    expect(f.server.errors).toHaveLength(0);
  });

  it('answers GARBAGE_ARGS to truncated arguments', async () => {
    const err = await f.client
      .call(
        Nfs3Proc.READ,
        (w) => w.opaque(f.root).u32(0),
        () => 0,
      )
      .catch((e: unknown) => e);
    expect((err as RpcReplyError).reply.acceptStat).toBe(AcceptStat.GARBAGE_ARGS);
  });
});

describe('hostile record marks', () => {
  const f = useNfs3Fixture();

  it('closes a connection that claims a 2 GiB record, without allocating it', async () => {
    const raw = await RpcTestClient.connect(f.server.port);
    const before = process.memoryUsage().arrayBuffers;
    raw.sendRaw(Buffer.from([0xff, 0xff, 0xff, 0xff]));
    await raw.whenClosed();
    expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(64 * MiB);
    // A non-last fragment of 2 GiB - 1 is refused the same way.
    const frag = await RpcTestClient.connect(f.server.port);
    frag.sendRaw(Buffer.from([0x7f, 0xff, 0xff, 0xff, 1, 2, 3]));
    await frag.whenClosed();
    expect((await f.client.getattr(f.root)).status).toBe(NfsStatus.OK);
  });

  it('closes a connection whose fragments add up to more than the limit', async () => {
    const raw = await RpcTestClient.connect(f.server.port);
    const fragment = Buffer.alloc(4 + 700 * KiB);
    fragment.writeUInt32BE(700 * KiB, 0); // not the last fragment
    raw.sendRaw(fragment);
    raw.sendRaw(fragment);
    await raw.whenClosed();
    expect((await f.client.getattr(f.root)).status).toBe(NfsStatus.OK);
  });

  it('serves a call split into many fragments', async () => {
    const fh = f.server.handle('/memfs', f.fs.writeFile('/f', 'fragmented'));
    const raw = await RpcTestClient.connect(f.server.port);
    const { xid, bytes } = raw.encodeCall(NFS_PROGRAM, 3, Nfs3Proc.READ, (w) =>
      w.opaque(fh).u64n(0).u32(100),
    );
    const reply = raw.expect(xid);
    for (let at = 0; at < bytes.length; at += 7) {
      const part = bytes.subarray(at, at + 7);
      const mark = Buffer.alloc(4);
      mark.writeUInt32BE((at + 7 >= bytes.length ? 0x8000_0000 : 0) + part.length, 0);
      raw.sendRaw(Buffer.concat([mark, part]));
    }
    const r = await reply;
    expect(r.acceptStat).toBe(AcceptStat.SUCCESS);
    expect(r.body.u32()).toBe(NfsStatus.OK);
    await raw.close();
  });
});

describe('a second client', () => {
  const f = useNfs3Fixture();

  it('is served while another connection misbehaves', async () => {
    const other = await Nfs3Client.connect(f.server.port);
    const bad = await RpcTestClient.connect(f.server.port);
    // A record too short for a call header: undecodable, so the server drops the connection.
    bad.sendRaw(Buffer.from([0x80, 0, 0, 6, 1, 2, 3, 4, 0, 0]));
    await bad.whenClosed();
    expect((await other.getattr(f.root)).status).toBe(NfsStatus.OK);
    await other.close();
  });
});
