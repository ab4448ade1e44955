import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { ErrorCode, IvmrError, isIvmrError } from '../errors.js';
import type { StoreAdapter } from '../store/adapter.js';

/** A lock object's content (FORMAT.md, "Locks"). */
interface LockRecord {
  readonly exclusive: boolean;
  readonly operation: string;
  readonly host: string;
  readonly pid: number;
  /** ISO time of the last refresh. */
  readonly time: string;
}

/** A lock not refreshed for this long is stale and is removed by the next locker. */
const STALE_MS = 30 * 60 * 1000;
const REFRESH_MS = 5 * 60 * 1000;

/** A held repository lock. */
export interface HeldLock {
  release(): Promise<void>;
}

/**
 * Takes a repository lock. Exclusive locks (backup, forget) conflict with every other lock;
 * shared locks (reads) conflict only with exclusive ones. A lock whose process is gone (same
 * host, pid not alive) or that was not refreshed for 30 minutes is stale and removed. Locks held
 * by the calling process itself never conflict.
 * A conflict rejects with `IVMR_LOCKED` naming the holder.
 */
export async function acquireLock(
  store: StoreAdapter,
  exclusive: boolean,
  operation: string,
): Promise<HeldLock> {
  await checkConflicts(store, exclusive, undefined);
  const name = `${Date.now().toString(36)}-${randomBytes(6).toString('hex')}`;
  const record = (): LockRecord => ({
    exclusive,
    operation,
    host: hostname(),
    pid: process.pid,
    time: new Date().toISOString(),
  });
  await store.put('lock', name, Buffer.from(JSON.stringify(record())));
  try {
    // Two lockers racing both see each other here and both back off: safe, and rare.
    await checkConflicts(store, exclusive, name);
  } catch (err) {
    await store.delete('lock', name);
    throw err;
  }
  const timer = setInterval(() => {
    store.put('lock', name, Buffer.from(JSON.stringify(record()))).catch(() => {});
  }, REFRESH_MS);
  timer.unref();
  let released = false;
  return {
    async release() {
      if (released) return;
      released = true;
      clearInterval(timer);
      await store.delete('lock', name);
    },
  };
}

async function checkConflicts(
  store: StoreAdapter,
  exclusive: boolean,
  own: string | undefined,
): Promise<void> {
  for await (const { name } of store.list('lock')) {
    if (name === own) continue;
    let lock: LockRecord;
    try {
      lock = JSON.parse(Buffer.from(await store.get('lock', name)).toString('utf8')) as LockRecord;
    } catch (err) {
      if (isIvmrError(err, ErrorCode.NOT_FOUND)) continue;
      // An unreadable lock is treated as held: better to refuse than to corrupt.
      throw new IvmrError(
        ErrorCode.LOCKED,
        `repository ${store.location} has an unreadable lock ${name}; remove it if no ivmr process runs`,
        {
          cause: err,
          details: { lock: name },
        },
      );
    }
    if (isStale(lock)) {
      await store.delete('lock', name);
      continue;
    }
    // Locks of this very process never conflict: in-process callers coordinate themselves.
    if (lock.host === hostname() && lock.pid === process.pid) continue;
    if (exclusive || lock.exclusive) {
      throw new IvmrError(
        ErrorCode.LOCKED,
        `repository ${store.location} is locked by ${lock.operation} (pid ${lock.pid} on ${lock.host} since ${lock.time})`,
        { details: { lock: name, ...lock } },
      );
    }
  }
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
