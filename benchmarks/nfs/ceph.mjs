/**
 * A single-node Ceph cluster with its S3 gateway (scripts/ceph/cluster.sh) inside a benchmark's
 * network namespace, for the S3 variants of the serve and boot benchmarks (issue #8). The
 * namespace's loopback is private, so the default ports (6789, 7480) are free there.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const CLUSTER = fileURLToPath(new URL('../../scripts/ceph/cluster.sh', import.meta.url));

/**
 * Runs `cluster.sh COMMAND dir` in `ns`; rejects with its output unless it exits with 0.
 * @param {Pick<import('./namespace.mjs').Namespace, 'spawn'>} ns
 * @param {string} command
 * @param {string} dir
 */
function cluster(ns, command, dir) {
  return new Promise((resolve, reject) => {
    const p = ns.spawn(['bash', CLUSTER, command, dir], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout?.on('data', (d) => {
      out += d;
    });
    p.stderr?.on('data', (d) => {
      out = (out + d).slice(-8192);
    });
    p.once('error', reject);
    p.once('close', (code) =>
      code === 0
        ? resolve(out)
        : reject(new Error(`cluster.sh ${command} exited with ${code}: ${out}`)),
    );
  });
}

/**
 * Starts the cluster in `ns` with its folder `dir`, and puts its endpoint and keys into this
 * process's environment (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, ...), which the ivmr commands
 * the benchmark spawns inherit. Resolves with the endpoint and a `stop`.
 * @param {Pick<import('./namespace.mjs').Namespace, 'spawn'>} ns
 * @param {string} dir
 * @returns {Promise<{ endpoint: string, stop: () => Promise<void> }>}
 */
export async function startCeph(ns, dir) {
  try {
    await cluster(ns, 'start', dir);
  } catch (err) {
    // Ceph's own start-up races are rare but real: once more, from scratch.
    process.stderr.write(`the Ceph cluster did not start; trying once more: ${err}\n`);
    await cluster(ns, 'stop', dir).catch(() => {});
    await cluster(ns, 'start', dir);
  }
  const env = Object.fromEntries(
    (await readFile(join(dir, 's3.env'), 'utf8'))
      .trim()
      .split('\n')
      .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
  );
  Object.assign(process.env, env, {
    AWS_REGION: 'us-east-1',
    AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
  });
  return {
    endpoint: env.AWS_ENDPOINT_URL,
    stop: async () => {
      await cluster(ns, 'stop', dir);
    },
  };
}
