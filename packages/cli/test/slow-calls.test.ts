import type { CallEvent, CallInFlight } from '@ivmr/nfs';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { watchSlowCalls } from '../src/slow-calls.js';

const NFS = 100003;
const READ = 6;
const remote = { address: '127.0.0.1', port: 900, family: 'IPv4', localAddress: '127.0.0.1' };
const inFlight = (xid: number, ageMs: number): CallInFlight => ({
  xid,
  prog: NFS,
  vers: 3,
  proc: READ,
  remote,
  ageMs,
});

describe('watchSlowCalls', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('warns once of each call unanswered for the time given, and not of the others', () => {
    const warnings: [object, string][] = [];
    const watch = watchSlowCalls({ warn: (f, m) => warnings.push([f, m]) }, 10_000);
    let calls: CallInFlight[] = [];
    watch.watch({ callsInFlight: () => calls });

    calls = [inFlight(1, 9_000), inFlight(2, 500)];
    vi.advanceTimersByTime(1000);
    expect(warnings).toEqual([]);

    calls = [inFlight(1, 10_000), inFlight(2, 1_500)];
    vi.advanceTimersByTime(1000);
    calls = [inFlight(1, 11_000), inFlight(2, 2_500)];
    vi.advanceTimersByTime(1000);
    expect(warnings).toEqual([
      [
        { client: '127.0.0.1', port: 900, program: 'nfs', procedure: 'READ', ms: 10_000 },
        'NFS call unanswered',
      ],
    ]);

    // Answered, then the same xid arrives again and is slow again: a new call, a new warning.
    calls = [];
    vi.advanceTimersByTime(1000);
    calls = [inFlight(1, 12_000)];
    vi.advanceTimersByTime(1000);
    expect(warnings).toHaveLength(2);
    watch.stop();
    vi.advanceTimersByTime(10_000);
    expect(warnings).toHaveLength(2);
  });

  it('warns of a slow call when it is answered, with how long it took', () => {
    const warnings: [object, string][] = [];
    const watch = watchSlowCalls({ warn: (f, m) => warnings.push([f, m]) }, 10_000);
    const event = (durationMs: number) =>
      ({ prog: NFS, vers: 3, proc: READ, durationMs, remote }) as CallEvent;
    watch.onCall(event(9_999));
    watch.onCall(event(12_345.6));
    expect(warnings).toEqual([
      [
        { client: '127.0.0.1', port: 900, program: 'nfs', procedure: 'READ', ms: 12_346 },
        'slow NFS call answered',
      ],
    ]);
  });

  it('warns of nothing when the time is 0', () => {
    const warnings: unknown[] = [];
    const watch = watchSlowCalls({ warn: (f, m) => warnings.push([f, m]) }, 0);
    watch.watch({ callsInFlight: () => [inFlight(1, 1e9)] });
    watch.onCall({ prog: NFS, vers: 3, proc: READ, durationMs: 1e9, remote } as CallEvent);
    vi.advanceTimersByTime(5000);
    expect(warnings).toEqual([]);
  });
});
