import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const SCRIPT = fileURLToPath(new URL('../../../scripts/ceph/cluster.sh', import.meta.url));

/** A running single-node Ceph cluster with its S3 gateway (scripts/ceph/cluster.sh). */
export interface Ceph {
  readonly endpoint: string;
  readonly credentials: { accessKeyId: string; secretAccessKey: string };
  readonly dir: string;
  stop(): Promise<void>;
}

/**
 * A TCP port on 127.0.0.1 that was free a moment ago (Ceph's monitor cannot take port 0). Drawn
 * at random from 20000–29999, below the ephemeral range, so that two test files starting clusters
 * at once (or any port-0 listener) hardly ever get the same one; cluster.sh checks that the
 * daemons answering are its own.
 */
async function freePort(): Promise<number> {
  for (;;) {
    const port = 20000 + Math.floor(Math.random() * 10000);
    const server = createServer();
    const ok = await new Promise<boolean>((resolve) => {
      server.once('error', () => resolve(false));
      server.listen(port, '127.0.0.1', () => resolve(true));
    });
    if (!ok) continue;
    await new Promise((resolve) => server.close(resolve));
    return port;
  }
}

/**
 * Puts the cluster's S3 keys into this process's environment, the AWS convention by which the
 * `ivmr` commands a test spawns find them (the endpoint is passed with `--s3-endpoint`).
 */
export function exportCredentials(ceph: Ceph): void {
  process.env.AWS_ACCESS_KEY_ID = ceph.credentials.accessKeyId;
  process.env.AWS_SECRET_ACCESS_KEY = ceph.credentials.secretAccessKey;
  process.env.AWS_REGION = 'us-east-1';
}

/**
 * Starts a cluster in `dir` on free loopback ports; `stop` ends only its own processes. A start
 * that fails is tried once more on other ports (a port taken between the check and the bind),
 * after printing why the first failed.
 */
export async function startCeph(dir: string): Promise<Ceph> {
  try {
    return await startOnce(dir);
  } catch (err) {
    console.error(
      `the Ceph cluster did not start; trying once more:\n${(err as { stderr?: string }).stderr ?? err}`,
    );
    return startOnce(dir);
  }
}

async function startOnce(dir: string): Promise<Ceph> {
  const env = {
    ...process.env,
    CEPH_MON_PORT: String(await freePort()),
    CEPH_RGW_PORT: String(await freePort()),
  };
  try {
    await promisify(execFile)('bash', [SCRIPT, 'start', dir], { env, timeout: 300_000 });
  } catch (err) {
    await promisify(execFile)('bash', [SCRIPT, 'stop', dir]).catch(() => {});
    throw err;
  }
  const vars = Object.fromEntries(
    (await readFile(join(dir, 's3.env'), 'utf8'))
      .trim()
      .split('\n')
      .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
  );
  return {
    endpoint: vars.AWS_ENDPOINT_URL!,
    credentials: {
      accessKeyId: vars.AWS_ACCESS_KEY_ID!,
      secretAccessKey: vars.AWS_SECRET_ACCESS_KEY!,
    },
    dir,
    stop: async () => {
      await promisify(execFile)('bash', [SCRIPT, 'stop', dir], { timeout: 60_000 });
    },
  };
}
