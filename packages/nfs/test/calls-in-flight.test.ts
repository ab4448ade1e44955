import { describe, expect, it } from 'vitest';
import { describeCall } from '../src/call-names.js';
import { Nfs3Proc } from '../src/nfs3/constants.js';
import { NFS_PROGRAM } from '../src/nfs3/nfs3-program.js';
import { useNfs3Fixture } from './helpers/nfs3-client.js';

describe('NfsServer.callsInFlight', () => {
  let release: () => void = () => {};
  let entered: () => void = () => {};
  const f = useNfs3Fixture((fs) => {
    // READs wait until the test releases them.
    const read = fs.read.bind(fs);
    fs.read = async (...args) => {
      entered();
      await new Promise<void>((r) => {
        release = r;
      });
      return read(...args);
    };
    return {};
  });

  it('lists a call held by its adapter, with its age, until it is answered', async () => {
    const fh = f.server.handle('/memfs', f.fs.writeFile('/file', Buffer.from('held')));
    expect(f.server.server.callsInFlight()).toEqual([]);
    const inAdapter = new Promise<void>((r) => {
      entered = r;
    });
    const reply = f.client.read(fh, 0, 4);
    await inAdapter;
    await new Promise((r) => setTimeout(r, 30));
    // A call that comes and goes meanwhile is not left behind.
    await f.client.getattr(f.root);

    const held = f.server.server.callsInFlight();
    expect(held).toHaveLength(1);
    const [call] = held;
    expect(call).toMatchObject({ prog: NFS_PROGRAM, vers: 3, proc: Nfs3Proc.READ });
    expect(call!.remote.address).toBe('127.0.0.1');
    expect(call!.ageMs).toBeGreaterThanOrEqual(25);
    expect(describeCall(call!).procedure).toBe('READ');

    release();
    expect((await reply).data?.toString()).toBe('held');
    expect(f.server.server.callsInFlight()).toEqual([]);
  });

  it('lists calls oldest first, and drops one answered between others', async () => {
    const fh = f.server.handle('/memfs', f.fs.writeFile('/file', Buffer.from('held')));
    const releases: (() => void)[] = [];
    const replies = [];
    for (let i = 0; i < 3; i++) {
      const inAdapter = new Promise<void>((r) => {
        entered = r;
      });
      replies.push(f.client.read(fh, i, 1));
      await inAdapter;
      releases.push(release);
      await new Promise((r) => setTimeout(r, 20));
    }
    const held = f.server.server.callsInFlight();
    expect(held).toHaveLength(3);
    expect(held[0]!.ageMs).toBeGreaterThan(held[1]!.ageMs);
    expect(held[1]!.ageMs).toBeGreaterThan(held[2]!.ageMs);
    expect(new Set(held.map((c) => c.xid)).size).toBe(3);

    releases[1]!();
    expect((await replies[1])?.data?.toString()).toBe('e');
    expect(f.server.server.callsInFlight().map((c) => c.xid)).toEqual([held[0]!.xid, held[2]!.xid]);
    releases[0]!();
    releases[2]!();
    await Promise.all(replies);
    expect(f.server.server.callsInFlight()).toEqual([]);
  });
});
