import { statfs } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { DecodePool } from '@ivmr/core';
import { type CallEvent, type CallInFlight, describeCall } from '@ivmr/nfs';
import type { RecoveryService } from '@ivmr/recovery';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';

/** The Prometheus metrics of `ivmr serve`. */
export interface ServeMetrics {
  readonly registry: Registry;
  /** Pass as the NFS server's `onCall`. */
  onCall(event: CallEvent): void;
}

/**
 * Builds the metrics of a served cache folder: NFS calls and their latency by procedure and
 * status, and, read at each scrape, the calls in flight (`callsInFlight`: the server's) and the
 * age of the oldest, per session the bytes read from the backup and from the read cache, the
 * overlay's dirty and held bytes, the cache volume's free space, and the work of the decode
 * pool's threads.
 */
export function createServeMetrics(
  service: RecoveryService,
  cacheDir: string,
  decodePool?: DecodePool,
  callsInFlight: () => CallInFlight[] = () => [],
): ServeMetrics {
  const registry = new Registry();
  const calls = new Counter({
    name: 'ivmr_nfs_requests_total',
    help: 'RPC calls answered, by program, procedure and status',
    labelNames: ['program', 'procedure', 'status'],
    registers: [registry],
  });
  const latency = new Histogram({
    name: 'ivmr_nfs_request_duration_seconds',
    help: 'Time from a call arriving to its reply being encoded, by procedure',
    labelNames: ['program', 'procedure'],
    buckets: [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5],
    registers: [registry],
  });
  const bytes = new Counter({
    name: 'ivmr_nfs_bytes_total',
    help: 'RPC message bytes, by direction (in: calls, out: replies)',
    labelNames: ['direction'],
    registers: [registry],
  });
  const perSession = (name: string, help: string, pick: (d: DiskFigures) => number) =>
    new Gauge({
      name,
      help,
      labelNames: ['session'],
      registers: [registry],
      collect() {
        this.reset();
        for (const s of service.sessions) {
          this.set(
            { session: s.name },
            s.stats().reduce((n, d) => n + pick(d), 0),
          );
        }
      },
    });
  perSession(
    'ivmr_backup_read_bytes',
    'Bytes read from the backup repository since the session opened',
    (d) => d.bytesFromBase,
  );
  perSession(
    'ivmr_read_cache_hit_bytes',
    'Bytes of backup reads served by the local read cache since the session opened',
    (d) => d.bytesFromCache,
  );
  perSession(
    'ivmr_overlay_dirty_bytes',
    'Bytes written and not yet flushed (what a crash now could lose)',
    (d) => d.dirtyBytes,
  );
  perSession('ivmr_overlay_bytes', 'Bytes of writes the overlay holds', (d) => d.overlayBytes);
  perSession(
    'ivmr_read_cache_bytes',
    'Bytes of backup blocks in the read cache',
    (d) => d.cachedBytes,
  );
  new Gauge({
    name: 'ivmr_nfs_requests_in_flight',
    help: 'RPC calls that arrived and are not answered yet',
    registers: [registry],
    collect() {
      this.set(callsInFlight().length);
    },
  });
  new Gauge({
    name: 'ivmr_nfs_oldest_request_seconds',
    help: 'Age of the oldest unanswered RPC call (0: none); ESXi gives up on a datastore after 140 s',
    registers: [registry],
    collect() {
      this.set((callsInFlight()[0]?.ageMs ?? 0) / 1000);
    },
  });
  new Gauge({
    name: 'ivmr_sessions',
    help: 'Sessions served',
    registers: [registry],
    collect() {
      this.set(service.sessions.length);
    },
  });
  new Gauge({
    name: 'ivmr_decode_workers',
    help: 'Decode worker threads running (0: reads decode on the serving thread)',
    registers: [registry],
    collect() {
      this.set(decodePool?.stats.threads ?? 0);
    },
  });
  new Gauge({
    name: 'ivmr_decode_worker_bytes',
    help: 'Bytes of backup blocks that decode worker threads decoded since the server started',
    registers: [registry],
    collect() {
      this.set(decodePool?.stats.bytes ?? 0);
    },
  });
  new Gauge({
    name: 'ivmr_cache_free_bytes',
    help: 'Free bytes of the cache volume',
    registers: [registry],
    async collect() {
      const s = await statfs(cacheDir);
      this.set(s.bavail * s.bsize);
    },
  });
  return {
    registry,
    onCall(event) {
      const { program, procedure, status } = describeCall(event);
      calls.inc({ program, procedure, status });
      latency.observe({ program, procedure }, event.durationMs / 1000);
      bytes.inc({ direction: 'in' }, event.bytesIn);
      bytes.inc({ direction: 'out' }, event.bytesOut);
    },
  };
}

type DiskFigures = ReturnType<RecoveryService['sessions'][number]['stats']>[number];

/** Serves `GET /metrics` of `registry` on `host:port`; resolves with the bound port. */
export async function serveMetrics(
  registry: Registry,
  host: string,
  port: number,
): Promise<{ server: Server; port: number }> {
  const server = createServer((req, res) => {
    if (req.method !== 'GET' || (req.url ?? '/').split('?')[0] !== '/metrics') {
      res.writeHead(404).end('not found: GET /metrics\n');
      return;
    }
    registry.metrics().then(
      (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text),
      (err: unknown) => res.writeHead(500).end(`${String(err)}\n`),
    );
  });
  await new Promise<void>((ok, fail) => {
    server.once('error', fail);
    server.listen(port, host, () => {
      server.off('error', fail);
      ok();
    });
  });
  const address = server.address();
  return { server, port: typeof address === 'object' && address ? address.port : port };
}
