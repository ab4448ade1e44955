import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ErrorCode, MemoryBlockSource, openLocalRepository, type Repository } from '@ivmr/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from '../../nfs/test/real-clients/harness.js';
import { BootRecorder } from '../src/boot-profile.js';
import {
  type BootProfile,
  BootProfiles,
  type RecoveryLog,
  RecoveryService,
  type RecoveryServiceOptions,
} from '../src/index.js';
import { bytes } from './support/bytes.js';

const K = 64 * 1024;
const MIB = 1024 * 1024;

describe('BootRecorder', () => {
  it('records each granule once, in first-read order, merging neighbours of the same disk', async () => {
    const rec = new BootRecorder(K);
    const a = rec.wrap(0, new MemoryBlockSource(bytes(16 * K, 1)));
    const b = rec.wrap(1, new MemoryBlockSource(bytes(16 * K, 2)));
    await a.read(100, 10); // granule 0
    await a.read(3 * K + 5, 2 * K); // granules 3, 4, 5 (ends inside 5)
    await b.read(0, 1); // disk 1, granule 0
    await a.read(K, 10); // granule 1: after disk 1's read, so a new range
    await a.read(0, 2 * K); // granules 0 and 1 again: nothing new
    await a.read(2 * K, 1); // granule 2 follows granule 1
    await a.read(9 * K, 0); // an empty read records nothing
    expect(rec.reads).toEqual([
      [0, 0, K],
      [0, 3 * K, 3 * K],
      [1, 0, K],
      [0, K, 2 * K],
    ]);
    rec.stop();
    await a.read(12 * K, 1);
    expect(rec.reads).toHaveLength(4);
  });

  it('refuses a granule that is not a power of two', () => {
    expect(() => new BootRecorder(3000)).toThrow(
      expect.objectContaining({ code: ErrorCode.INVALID_ARGUMENT }),
    );
  });
});

describe('BootProfiles', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>;
  beforeAll(async () => {
    tmp = await tempDir();
  });
  afterAll(async () => {
    await tmp?.remove();
  });

  const profile = (vm: string): BootProfile => ({
    version: 1,
    repository: 'repo-1',
    vm,
    point: 'abc',
    recorded: new Date(0).toISOString(),
    granule: K,
    disks: [{ name: 'disk0', size: 8 * K }],
    reads: [
      [0, 2 * K, K],
      [0, 0, K],
    ],
    bootMs: 1234,
  });

  it('saves and loads a profile per repository and VM; none is undefined', async () => {
    const store = new BootProfiles(join(tmp.path, 'p1'));
    expect(await store.load('repo-1', 'web/01')).toBeUndefined();
    const path = await store.save(profile('web/01'));
    expect(path).toBe(join(tmp.path, 'p1', 'repo-1', 'web%2F01.json'));
    expect(await store.load('repo-1', 'web/01')).toEqual(profile('web/01'));
    expect(await store.load('repo-2', 'web/01')).toBeUndefined();
    // A second save replaces the first.
    await store.save({ ...profile('web/01'), point: 'def' });
    expect((await store.load('repo-1', 'web/01'))?.point).toBe('def');
  });

  it('names a damaged or foreign profile file with IVMR_FORMAT, and refuses to save a bad one', async () => {
    const store = new BootProfiles(join(tmp.path, 'p2'));
    await mkdir(join(tmp.path, 'p2', 'repo-1'), { recursive: true });
    await writeFile(store.pathOf('repo-1', 'a'), '{"version":1,"reads":');
    await expect(store.load('repo-1', 'a')).rejects.toMatchObject({ code: ErrorCode.FORMAT });
    await writeFile(
      store.pathOf('repo-1', 'b'),
      JSON.stringify({ ...profile('b'), reads: [[1, 0, K]] }),
    );
    await expect(store.load('repo-1', 'b')).rejects.toThrow(/bad read \[1,0,65536\]/);
    await writeFile(store.pathOf('repo-1', 'c'), JSON.stringify(profile('other')));
    await expect(store.load('repo-1', 'c')).rejects.toThrow(/is of other in repo-1/);
    await expect(store.save({ ...profile('d'), granule: 0 })).rejects.toMatchObject({
      code: ErrorCode.INVALID_ARGUMENT,
    });
  });
});

describe('boot prefetch in a recovery service', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>;
  let repo: Repository;
  let n = 0;
  const sys = bytes(3 * MIB + 512, 7);
  const data = bytes(MIB, 8);
  const options = (extra: Partial<RecoveryServiceOptions> = {}): RecoveryServiceOptions => ({
    repository: repo,
    cacheDir: join(tmp.path, `cache${++n}`),
    minFreeBytes: 0,
    floorFraction: 0,
    ...extra,
  });

  beforeAll(async () => {
    tmp = await tempDir();
    repo = await openLocalRepository(join(tmp.path, 'repo'), { create: true });
    await repo.backup({
      vm: 'vm1',
      disks: [
        { name: 'sys', source: new MemoryBlockSource(sys) },
        { name: 'data', source: new MemoryBlockSource(data) },
      ],
      vmConfig: { memoryMB: 512 },
    });
  });

  afterAll(async () => {
    await repo?.close();
    await tmp?.remove();
  });

  /** Boots "vm1" by reading like a guest would, and returns the recorded profile. */
  async function record(): Promise<BootProfile> {
    const service = await RecoveryService.open(options());
    try {
      const s = await service.start({ vm: 'vm1', mode: 'sandbox', recordReads: true });
      const [sysDisk, dataDisk] = s.disks;
      await sysDisk!.extent.read(0, 512); // MBR
      await sysDisk!.extent.read(MIB, 300 * 1024); // kernel: granules 16..20
      // The guest writes a whole granule and reads it back: its own write, not the backup.
      await sysDisk!.extent.write(2 * MIB, bytes(K, 9));
      await sysDisk!.extent.read(2 * MIB, K);
      await dataDisk!.extent.read(5 * K, 10);
      await sysDisk!.extent.read(MIB - 10, 20); // granules 15 and 16 (16 seen already)
      const profile = s.bootProfile(4321)!;
      // Reads after the profile was taken are not part of it.
      await sysDisk!.extent.read(3 * MIB, 100);
      expect(s.bootProfile()!.reads).toEqual(profile.reads);
      return profile;
    } finally {
      await service.close();
    }
  }

  it('records what a VM read from its backup, and prefetches it into a later session', async () => {
    const profile = await record();
    expect(profile).toMatchObject({
      vm: 'vm1',
      repository: repo.config.id,
      granule: K,
      bootMs: 4321,
      disks: [
        { name: 'sys', size: sys.length },
        { name: 'data', size: data.length },
      ],
    });
    expect(profile.reads).toEqual([
      [0, 0, K],
      [0, 16 * K, 5 * K],
      [1, 5 * K, K],
      [0, 15 * K, K],
    ]);
    const profiles = new BootProfiles(join(tmp.path, 'profiles'));
    await profiles.save(profile);

    const service = await RecoveryService.open(
      options({ bootProfiles: profiles, bootPrefetch: 'wait' }),
    );
    try {
      const s = await service.start({ vm: 'vm1' });
      const status = s.prefetchStatus();
      expect(status).toMatchObject({
        state: 'done',
        profilePoint: profile.point,
        profileBytes: 8 * K,
        bytesLoaded: 8 * K,
        bytesSkipped: 0,
        failures: 0,
      });
      expect((await service.list())[0]?.prefetch).toEqual(status);
      const [sysDisk, dataDisk] = s.disks;
      const misses = () => sysDisk!.readCache!.stats().misses + dataDisk!.readCache!.stats().misses;
      const before = misses();
      // The recorded reads are now read-cache hits, with the backup's bytes.
      expect(Buffer.from(await sysDisk!.extent.read(16 * K, 5 * K))).toEqual(
        sys.subarray(16 * K, 21 * K),
      );
      expect(Buffer.from(await sysDisk!.extent.read(15 * K, K))).toEqual(
        sys.subarray(15 * K, 16 * K),
      );
      expect(Buffer.from(await dataDisk!.extent.read(5 * K, K))).toEqual(
        data.subarray(5 * K, 6 * K),
      );
      expect(misses()).toBe(before);
      // A block the boot did not read is still a miss.
      await sysDisk!.extent.read(40 * K, 10);
      expect(misses()).toBe(before + 1);
    } finally {
      await service.close();
    }
  });

  it('fills at most half of a small read cache, and skips disks the point does not have', async () => {
    const profiles = new BootProfiles(join(tmp.path, 'profiles-big'));
    await profiles.save({
      version: 1,
      repository: repo.config.id,
      vm: 'vm1',
      point: 'older',
      recorded: new Date().toISOString(),
      granule: K,
      disks: [
        { name: 'gone', size: MIB },
        { name: 'sys', size: sys.length },
      ],
      reads: [
        [0, 0, 4 * K],
        [1, 0, 3 * MIB],
      ],
    });
    const service = await RecoveryService.open(
      options({ bootProfiles: profiles, bootPrefetch: 'wait', readCacheBytes: MIB }),
    );
    try {
      const s = await service.start({ vm: 'vm1' });
      expect(s.prefetchStatus()).toMatchObject({
        state: 'done',
        profilePoint: 'older',
        profileBytes: 4 * K + 3 * MIB,
        bytesLoaded: MIB / 2,
        bytesSkipped: 4 * K + 3 * MIB - MIB / 2,
      });
      await s.disks[0]!.readCache!.settle();
      expect(s.disks[0]!.readCache!.stats().cachedBytes).toBe(MIB / 2);
    } finally {
      await service.close();
    }
  });

  it('starts without a prefetch when the profile is damaged, or prefetch is off', async () => {
    const profiles = new BootProfiles(join(tmp.path, 'profiles-bad'));
    await mkdir(join(profiles.dir, repo.config.id), { recursive: true });
    await writeFile(profiles.pathOf(repo.config.id, 'vm1'), 'not json');
    const warnings: string[] = [];
    const log: RecoveryLog = {
      info: () => {},
      warn: (_o, msg) => warnings.push(msg),
      error: () => {},
    };
    const service = await RecoveryService.open(options({ bootProfiles: profiles, log }));
    try {
      const s = await service.start({ vm: 'vm1' });
      expect(s.prefetchStatus()).toBeUndefined();
      expect(warnings).toEqual(['boot profile not used']);
    } finally {
      await service.close();
    }
    const good = new BootProfiles(join(tmp.path, 'profiles'));
    const off = await RecoveryService.open(options({ bootProfiles: good, bootPrefetch: 'off' }));
    try {
      const s = await off.start({ vm: 'vm1' });
      expect(s.prefetchStatus()).toBeUndefined();
      expect(s.disks[0]!.readCache!.stats().sourceReads).toBe(0);
    } finally {
      await off.close();
    }
  });

  it('a background prefetch runs after start returns, and a closing session stops it', async () => {
    const profiles = new BootProfiles(join(tmp.path, 'profiles'));
    const service = await RecoveryService.open(options({ bootProfiles: profiles }));
    const s = await service.start({ vm: 'vm1' });
    expect(s.prefetchStatus()?.state).toBe('running');
    await service.close();
    expect(['done', 'stopped']).toContain(s.prefetchStatus()?.state);
  });
});
