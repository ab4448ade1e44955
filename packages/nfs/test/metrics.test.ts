import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { NfsStatus } from '../src/filesystem.js';
import { Nfs3Proc } from '../src/nfs3/constants.js';
import { NFS_PROGRAM } from '../src/nfs3/nfs3-program.js';
import { writeDiropargs3 } from '../src/nfs3/types.js';
import type { CallEvent } from '../src/rpc/dispatcher.js';
import { AcceptStat } from '../src/rpc/message.js';
import type { XdrWriter } from '../src/xdr/writer.js';
import { useNfs3Fixture } from './helpers/nfs3-client.js';

const KiB = 1024;

// Reply sizes (RFC 5531 §9, RFC 1813): the accepted reply header is xid, REPLY, MSG_ACCEPTED,
// an empty AUTH_NONE verifier and accept_stat; a fattr3 is 84 bytes, a post_op_attr 88.
const REPLY_HEADER = 24;
const FATTR3 = 84;
const POST_OP_ATTR = 4 + FATTR3;

describe('onCall metrics', () => {
  const events: CallEvent[] = [];
  const f = useNfs3Fixture(() => {
    events.length = 0;
    return { onCall: (e) => events.push(e) };
  });
  /** Size of a CALL message the test client sends (what the server reports as `bytesIn`). */
  const callSize = (proc: number, args: (w: XdrWriter) => void) =>
    f.client.rpc.encodeCall(NFS_PROGRAM, 3, proc, args, { xid: 1, cred: f.client.cred }).bytes
      .length;

  it('counts calls by procedure, with bytes in and out, also of a 100 KiB READ', async () => {
    const data = randomBytes(100 * KiB);
    const fh = f.server.handle('/memfs', f.fs.writeFile('/big', data));
    await f.client.null();
    await f.client.getattr(f.root);
    await f.client.getattr(fh);
    const read = await f.client.read(fh, 0, data.length);
    expect(read.data?.equals(data)).toBe(true);

    const calls = new Map<number, number>();
    for (const e of events) calls.set(e.proc, (calls.get(e.proc) ?? 0) + 1);
    expect(Object.fromEntries(calls)).toEqual({
      [Nfs3Proc.NULL]: 1,
      [Nfs3Proc.GETATTR]: 2,
      [Nfs3Proc.READ]: 1,
    });
    for (const e of events) {
      expect(e).toMatchObject({ prog: NFS_PROGRAM, vers: 3, acceptStat: 0, replayed: false });
      expect(e.durationMs).toBeGreaterThanOrEqual(0);
      expect(e.remote.address).toBe('127.0.0.1');
    }
    const [nul, getattr, , readEvent] = events;
    expect(nul).toMatchObject({
      status: undefined,
      bytesIn: callSize(Nfs3Proc.NULL, () => {}),
      bytesOut: REPLY_HEADER,
    });
    expect(getattr).toMatchObject({
      status: NfsStatus.OK,
      bytesIn: callSize(Nfs3Proc.GETATTR, (w) => w.opaque(f.root)),
      bytesOut: REPLY_HEADER + 4 + FATTR3,
    });
    // status, post_op_attr, count, eof, then the data as opaque<>: length and bytes.
    expect(readEvent).toMatchObject({
      status: NfsStatus.OK,
      bytesIn: callSize(Nfs3Proc.READ, (w) => w.opaque(fh).u64n(0).u32(data.length)),
      bytesOut: REPLY_HEADER + 4 + POST_OP_ATTR + 4 + 4 + 4 + data.length,
    });
    expect(readEvent!.bytesOut).toBeGreaterThanOrEqual(100 * KiB);
  });

  it('reports the NFS status of a failed procedure and the accept_stat of an RPC error', async () => {
    await f.client.lookup(f.root, 'missing');
    await f.client.rpc.call(NFS_PROGRAM, 3, 99, () => {}, { cred: f.client.cred });
    expect(events.map((e) => [e.proc, e.acceptStat, e.status])).toEqual([
      [Nfs3Proc.LOOKUP, AcceptStat.SUCCESS, NfsStatus.NOENT],
      [99, AcceptStat.PROC_UNAVAIL, undefined],
    ]);
    expect(events[1]!.bytesOut).toBe(REPLY_HEADER);
  });

  it('marks a reply replayed from the duplicate request cache, with the same size', async () => {
    f.fs.writeFile('/victim');
    const remove = () =>
      f.client.rpc.call(
        NFS_PROGRAM,
        3,
        Nfs3Proc.REMOVE,
        (w) => writeDiropargs3(w, f.root, 'victim'),
        {
          xid: 4242,
          cred: f.client.cred,
        },
      );
    await remove();
    await remove();
    expect(events.map((e) => [e.proc, e.status, e.replayed])).toEqual([
      [Nfs3Proc.REMOVE, NfsStatus.OK, false],
      [Nfs3Proc.REMOVE, NfsStatus.OK, true],
    ]);
    expect(events[1]!.bytesOut).toBe(events[0]!.bytesOut);
    expect(events[1]!.bytesIn).toBe(events[0]!.bytesIn);
  });
});

describe('without onCall', () => {
  const f = useNfs3Fixture();

  it('serves NULL, GETATTR and READ as usual', async () => {
    const data = randomBytes(100 * KiB);
    const fh = f.server.handle('/memfs', f.fs.writeFile('/big', data));
    await f.client.null();
    expect((await f.client.getattr(fh)).attrs?.size).toBe(data.length);
    const read = await f.client.read(fh, 0, data.length);
    expect(read).toMatchObject({ status: NfsStatus.OK, count: data.length, eof: true });
    expect(read.data?.equals(data)).toBe(true);
    await expect(f.client.lookup(f.root, 'missing')).resolves.toMatchObject({
      status: NfsStatus.NOENT,
    });
  });
});
