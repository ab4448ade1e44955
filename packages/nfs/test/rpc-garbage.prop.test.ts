import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NfsError } from '../src/errors.js';
import { NfsStatus } from '../src/filesystem.js';
import { NFS_PROGRAM } from '../src/nfs3/nfs3-program.js';
import { frameRecord } from '../src/rpc/record-decoder.js';
import { XdrWriter } from '../src/xdr/writer.js';
import { MemoryFileSystem } from './helpers/memory-fs.js';
import {
  expectNoOpenSockets,
  Nfs3Client,
  startTestServer,
  type TestServer,
} from './helpers/nfs3-client.js';
import { RpcTestClient } from './helpers/rpc-client.js';

/** A short run locally, a longer one in CI. */
const numRuns = (local: number, ci: number) => (process.env.CI ? ci : local);

const PROBE_XID = 0x7eed_beef;

let server: TestServer;
let observer: Nfs3Client;
let root: Buffer;

beforeAll(async () => {
  const fs = new MemoryFileSystem();
  fs.writeFile('/dir/file', 'some data');
  fs.writeFile('/big', 'x', { size: 10 * 1024 ** 3 });
  server = await startTestServer({
    exports: [{ path: '/memfs', fs }],
    rtmax: 64 * 1024,
    wtmax: 64 * 1024,
  });
  observer = await Nfs3Client.connect(server.port);
  root = server.handle('/memfs');
});

afterAll(async () => {
  await observer.close();
  await server.stop();
  await expectNoOpenSockets();
});

/** A CALL message with AUTH_SYS root credentials and the given argument bytes. */
function callRecord(
  xid: number,
  prog: number,
  vers: number,
  proc: number,
  args: (w: XdrWriter) => void,
): Buffer {
  const cred = new XdrWriter().u32(0).string('fuzz').u32(0).u32(0).u32(0);
  const w = new XdrWriter();
  w.u32(xid).u32(0).u32(2).u32(prog).u32(vers).u32(proc).u32(1).opaque(cred.view()).u32(0).u32(0);
  args(w);
  return Buffer.from(w.view());
}

/** Garbage shaped more and more like real calls, so it reaches deeper into the server. */
function garbageRecord(): fc.Arbitrary<Buffer> {
  const bytes = fc.uint8Array({ maxLength: 300 });
  const header = (prog: number, vers: number, proc: number, args: (w: XdrWriter) => void) =>
    callRecord(1, prog, vers, proc, args);
  return fc.oneof(
    bytes.map((b) => Buffer.from(b)),
    fc
      .record({
        prog: fc.constantFrom(NFS_PROGRAM, 100005, 100000, 100227, 7),
        vers: fc.nat({ max: 5 }),
        proc: fc.nat({ max: 25 }),
        body: bytes,
      })
      .map(({ prog, vers, proc, body }) => header(prog, vers, proc, (w) => w.fixed(body))),
    fc
      .record({ proc: fc.nat({ max: 21 }), body: bytes, cut: fc.nat({ max: 64 }) })
      .map(({ proc, body, cut }) =>
        header(NFS_PROGRAM, 3, proc, (w) => {
          w.opaque(root);
          w.fixed(body);
        }).subarray(0, -cut || undefined),
      ),
    fc
      .record({
        proc: fc.nat({ max: 21 }),
        words: fc.array(fc.oneof(fc.nat({ max: 3 }), fc.nat()), { maxLength: 40 }),
      })
      .map(({ proc, words }) =>
        header(NFS_PROGRAM, 3, proc, (w) => {
          w.opaque(root);
          for (const x of words) w.u32(x);
        }),
      ),
  );
}

describe('garbage on the wire', () => {
  it('is answered or ends its own connection, and other clients keep being served', async () => {
    await fc.assert(
      fc.asyncProperty(garbageRecord(), async (record) => {
        if (record.length >= 4 && record.readUInt32BE(0) === PROBE_XID) record.writeUInt32BE(1, 0);
        const c = await RpcTestClient.connect(server.port);
        try {
          c.sendRaw(frameRecord(record));
          const probe = c.encodeCall(NFS_PROGRAM, 3, 0, undefined, { xid: PROBE_XID });
          const answered = c.expect(PROBE_XID);
          c.sendRaw(frameRecord(probe.bytes));
          const outcome = await Promise.race([
            answered.then(() => 'answered'),
            c.whenClosed().then(() => 'closed'),
          ]);
          answered.catch(() => {});
          expect(['answered', 'closed']).toContain(outcome);
        } finally {
          await c.close();
        }
        expect((await observer.getattr(root)).status).toBe(NfsStatus.OK);
      }),
      { numRuns: numRuns(150, 1500) },
    );
    // Only malformed input was reported, never an exception from a procedure.
    for (const { error } of server.errors) expect(error).toBeInstanceOf(NfsError);
  });

  it('never crashes the server on an unframed random byte stream', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.uint8Array({ minLength: 1, maxLength: 200 }), { maxLength: 5 }),
        async (parts) => {
          const c = await RpcTestClient.connect(server.port);
          for (const p of parts) c.sendRaw(p);
          await new Promise((r) => setTimeout(r, 2));
          await c.close();
          expect((await observer.getattr(root)).status).toBe(NfsStatus.OK);
        },
      ),
      { numRuns: numRuns(50, 500) },
    );
    for (const { error } of server.errors) expect(error).toBeInstanceOf(NfsError);
  });
});
