import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { ErrorCode, IvmrError, isIvmrError } from '../errors.js';
import type { StoreAdapter } from '../store/adapter.js';

/**
 * What a lock allows (FORMAT.md, "Locks and leases"):
 * - `read`: a lease of a reader (an open restore point, verify) on the block maps it resolves.
 *   It never conflicts; `prune` keeps every map it names and the blobs the reader may read.
 * - `write`: backup and forget of one VM: they add objects and replace that VM's point objects,
 *   and never delete maps, packs or index objects. Conflicts with a write of the same VM and with
 *   `exclusive`.
 * - `exclusive`: prune and repair, which delete and rewrite shared objects. Conflicts with every
 *   `write` and `exclusive`.
 */
export type LockMode = 'read' | 'write' | 'exclusive';

/** A lock object's content. */
interface LockRecord {
  /** Absent in locks of writers before leases: `exclusive` true means exclusive, else read. */
  readonly mode?: LockMode;
  /** Kept for readers of the first lock format: true for `exclusive`. */
  readonly exclusive: boolean;
  readonly operation: string;
  readonly host: string;
  readonly pid: number;
  /** ISO time of the last refresh. */
  readonly time: string;
  /** `write`: the VM whose points it changes. */
  readonly vm?: string;
  /** `read`: block maps (names) whose every blob the reader may need. */
  readonly maps?: readonly string[];
  /**
   * `read`: chains of block maps, each newest first down to a full map: the reader needs the
   * maps and the blobs the chain resolves to (not those later maps of the chain replace).
   */
  readonly chains?: readonly (readonly string[])[];
}

/** A lock not refreshed for this long is stale and is removed by the next locker. */
const STALE_MS = 30 * 60 * 1000;
const REFRESH_MS = 5 * 60 * 1000;
const RETRY_MS = 30 * 1000;

/** What to lock. */
export interface LockRequest {
  readonly mode: LockMode;
  /** Shown to whoever the lock blocks, e.g. `backup web01`. */
  readonly operation: string;
  /** `write`: the VM. */
  readonly vm?: string;
  /** `read`: block maps whose every blob the reader may need. */
  readonly maps?: readonly string[];
  /** How long to wait for conflicting locks to go before `IVMR_LOCKED` (ms, default 0). */
  readonly waitMs?: number;
}

/** What a reader's lease protects (see {@link LockRecord}). */
export interface LeaseScope {
  readonly maps?: readonly string[];
  readonly chains?: readonly (readonly string[])[];
}

/** A held repository lock. */
export interface HeldLock {
  /** Replaces what a read lease protects (atomically: a prune sees the old scope or the new). */
  update(scope: LeaseScope): Promise<void>;
  release(): Promise<void>;
}

/**
 * Takes a repository lock (see {@link LockMode}). A conflicting lock whose process is gone (same
 * host, pid not alive) or that was not refreshed for 30 minutes is stale and removed; any other
 * conflict waits up to `waitMs`, then rejects with `IVMR_LOCKED` naming the holder.
 */
export async function acquireLock(store: StoreAdapter, request: LockRequest): Promise<HeldLock> {
  const deadline = Date.now() + (request.waitMs ?? 0);
  for (let attempt = 0; ; attempt++) {
    try {
      return await tryLock(store, request);
    } catch (err) {
      if (!isIvmrError(err, ErrorCode.LOCKED) || Date.now() >= deadline) throw err;
      await sleep(Math.min(250 * 2 ** attempt, 5000, Math.max(1, deadline - Date.now())));
    }
  }
}

async function tryLock(store: StoreAdapter, request: LockRequest): Promise<HeldLock> {
  const { mode } = request;
  if (mode !== 'read') await checkConflicts(store, request, undefined);
  const name = `${Date.now().toString(36)}-${randomBytes(6).toString('hex')}`;
  let scope: LeaseScope = request.maps !== undefined ? { maps: [...request.maps] } : {};
  const record = (): LockRecord => ({
    mode,
    exclusive: mode === 'exclusive',
    operation: request.operation,
    host: hostname(),
    pid: process.pid,
    time: new Date().toISOString(),
    ...(request.vm !== undefined ? { vm: request.vm } : {}),
    ...scope,
  });
  await store.put('lock', name, Buffer.from(JSON.stringify(record())));
  if (mode !== 'read') {
    try {
      // Two lockers racing both see each other here and both back off: safe, and rare.
      await checkConflicts(store, request, name);
    } catch (err) {
      await store.delete('lock', name);
      throw err;
    }
  }
  // A refresh that fails (the store is away) is tried again every 30 s until one succeeds: the
  // lock must not go stale (30 minutes) while its holder lives.
  let released = false;
  let retry: NodeJS.Timeout | undefined;
  const refresh = () => {
    if (released || retry) return;
    store.put('lock', name, Buffer.from(JSON.stringify(record()))).catch(() => {
      retry = setTimeout(() => {
        retry = undefined;
        refresh();
      }, RETRY_MS);
      retry.unref();
    });
  };
  const timer = setInterval(refresh, REFRESH_MS);
  timer.unref();
  return {
    async update(next: LeaseScope) {
      scope = {
        ...(next.maps !== undefined ? { maps: [...next.maps] } : {}),
        ...(next.chains !== undefined ? { chains: next.chains.map((c) => [...c]) } : {}),
      };
      await store.put('lock', name, Buffer.from(JSON.stringify(record())));
    },
    async release() {
      if (released) return;
      released = true;
      clearInterval(timer);
      clearTimeout(retry);
      await store.delete('lock', name);
    },
  };
}

/** A lock as read back from the store, with its effective mode. */
interface ListedLock extends LockRecord {
  readonly name: string;
  readonly mode: LockMode;
}

/**
 * The live locks of the repository, stale ones deleted on the way. An unreadable lock is
 * `IVMR_LOCKED`: better to refuse than to delete what it might protect.
 */
async function liveLocks(store: StoreAdapter, own: string | undefined): Promise<ListedLock[]> {
  const locks: ListedLock[] = [];
  for await (const { name } of store.list('lock')) {
    if (name === own) continue;
    let lock: LockRecord;
    try {
      lock = JSON.parse(Buffer.from(await store.get('lock', name)).toString('utf8')) as LockRecord;
      if (typeof lock !== 'object' || lock === null || typeof lock.time !== 'string') {
        throw new Error('not a lock record');
      }
    } catch (err) {
      if (isIvmrError(err, ErrorCode.NOT_FOUND)) continue;
      throw new IvmrError(
        ErrorCode.LOCKED,
        `repository ${store.location} has an unreadable lock ${name}; remove it if no ivmr process runs`,
        { cause: err, details: { lock: name } },
      );
    }
    if (isStale(lock)) {
      await store.delete('lock', name);
      continue;
    }
    locks.push({ ...lock, name, mode: lock.mode ?? (lock.exclusive ? 'exclusive' : 'read') });
  }
  return locks;
}

async function checkConflicts(
  store: StoreAdapter,
  request: LockRequest,
  own: string | undefined,
): Promise<void> {
  for (const lock of await liveLocks(store, own)) {
    if (!conflicts(request, lock)) continue;
    const { name, ...holder } = lock;
    throw new IvmrError(
      ErrorCode.LOCKED,
      `repository ${store.location} is locked by ${lock.operation} (pid ${lock.pid} on ${lock.host} since ${lock.time})`,
      { details: { lock: name, ...holder } },
    );
  }
}

function conflicts(request: LockRequest, held: ListedLock): boolean {
  if (held.mode === 'read') {
    // A reader of the first lock format names no maps: only holding prune off protects it.
    return request.mode === 'exclusive' && held.maps === undefined && held.chains === undefined;
  }
  if (request.mode === 'exclusive' || held.mode === 'exclusive') return true;
  // Two writes: of the same VM only (a write lock without a VM is of every VM).
  return held.vm === undefined || request.vm === undefined || held.vm === request.vm;
}

/** What the live read leases of a repository protect, together. */
export interface Leases {
  /** Maps whose every blob is needed. */
  readonly maps: Set<string>;
  /** Map chains (newest first) whose resolved blobs are needed. */
  readonly chains: string[][];
}

/**
 * What live read leases protect (stale leases are deleted on the way). Rejects with
 * `IVMR_LOCKED` when a lock is unreadable.
 */
export async function readLeases(store: StoreAdapter): Promise<Leases> {
  const leases: Leases = { maps: new Set(), chains: [] };
  for (const lock of await liveLocks(store, undefined)) {
    if (lock.mode !== 'read') continue;
    for (const m of lock.maps ?? []) leases.maps.add(m);
    for (const c of lock.chains ?? []) leases.chains.push([...c]);
  }
  return leases;
}

function isStale(lock: LockRecord): boolean {
  const age = Date.now() - Date.parse(lock.time);
  if (!(age < STALE_MS)) return true;
  if (lock.host !== hostname()) return false;
  if (lock.pid === process.pid) return false;
  try {
    process.kill(lock.pid, 0);
    return false;
  } catch (err) {
    return (err as { code?: string }).code === 'ESRCH';
  }
}
