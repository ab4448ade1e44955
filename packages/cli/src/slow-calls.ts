import { type CallEvent, type CallInFlight, describeCall } from '@ivmr/nfs';

/** The part of a pino logger the watch uses. */
export interface WarnLog {
  warn(fields: object, message: string): void;
}

/** Warns of NFS calls that take `afterMs` or longer; see {@link watchSlowCalls}. */
export interface SlowCallWatch {
  /** Pass every call event (the server's `onCall`): warns of a slow one when it is answered. */
  onCall(event: CallEvent): void;
  /** Starts checking `server`'s calls in flight (see {@link watchSlowCalls}). */
  watch(server: { callsInFlight(): CallInFlight[] }): void;
  stop(): void;
}

/**
 * Warns of NFS calls that take `afterMs` or longer: once while a call is still unanswered (the
 * calls in flight are checked every `afterMs / 2`, at least once a second), and once when it is
 * answered, with how long it took. A hypervisor gives up on a datastore whose calls go
 * unanswered (ESXi: all paths down after 140 s), so such a warning is the first sign of a stuck
 * block store or cache volume. `afterMs` 0 warns of nothing.
 */
export function watchSlowCalls(log: WarnLog, afterMs: number): SlowCallWatch {
  let timer: NodeJS.Timeout | undefined;
  /** Slow calls in flight at the last check (all warned of), by client and xid. */
  let warned = new Set<string>();
  const key = (c: CallInFlight) => `${c.remote.address}:${c.remote.port}:${c.xid}`;
  const fields = (c: CallInFlight | CallEvent, ms: number) => {
    const { program, procedure } = describeCall(c);
    return {
      client: c.remote.address,
      port: c.remote.port,
      program,
      procedure,
      ms: Math.round(ms),
    };
  };
  return {
    onCall(event) {
      if (afterMs > 0 && event.durationMs >= afterMs) {
        log.warn(fields(event, event.durationMs), 'slow NFS call answered');
      }
    },
    watch(server) {
      if (afterMs <= 0 || timer) return;
      const check = () => {
        const slow = new Set<string>();
        for (const c of server.callsInFlight()) {
          if (c.ageMs < afterMs) continue;
          const k = key(c);
          slow.add(k);
          if (!warned.has(k)) log.warn(fields(c, c.ageMs), 'NFS call unanswered');
        }
        // Each is warned of once: the slow calls still in flight are the ones warned of.
        warned = slow;
      };
      timer = setInterval(check, Math.min(1000, Math.max(1, afterMs / 2)));
      timer.unref();
    },
    stop() {
      clearInterval(timer);
      timer = undefined;
    },
  };
}
