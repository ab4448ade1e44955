import { describe, expect, it } from 'vitest';
import { SpaceGuard } from '../src/read-cache/space-guard.js';

const MiB = 1024 * 1024;

/** A volume whose free space drops only when a write "lands", as a real statfs would see. */
function volume(free: number) {
  const v = {
    free,
    statfs: async () => ({ totalBytes: 100 * MiB, freeBytes: v.free }),
  };
  return v;
}

describe('SpaceGuard', () => {
  it('keeps the floor when the volume is asked again while allowed writes are in flight', async () => {
    const v = volume(10 * MiB);
    const guard = new SpaceGuard('/x', v.statfs, { minFreeBytes: 2 * MiB }, 0);
    // recheckMs 0: every allow asks the volume again, which does not yet see the writes.
    let allowed = 0;
    while (allowed < 20 && (await guard.allow(MiB))) allowed++;
    expect(allowed).toBe(8);
    // All eight land: the volume is at its floor and nothing more is allowed.
    v.free -= 8 * MiB;
    for (let i = 0; i < 8; i++) guard.landed(MiB);
    expect(await guard.allow(1)).toBe(false);
  });

  it('returns refunded bytes to the budget and to the volume', async () => {
    const v = volume(4 * MiB);
    const guard = new SpaceGuard('/x', v.statfs, { minFreeBytes: 2 * MiB }, 0);
    expect(await guard.allow(2 * MiB)).toBe(true);
    expect(await guard.allow(1)).toBe(false);
    guard.refund(2 * MiB);
    expect(await guard.allow(2 * MiB)).toBe(true);
  });
});
