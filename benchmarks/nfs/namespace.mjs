/**
 * A private network and mount namespace for the benchmark's servers and clients.
 *
 * ganesha.nfsd will not start unless it can register with rpcbind, which must listen on port 111
 * (and on /run/rpcbind.sock). On a shared machine port 111 may be taken (the system's rpcbind), or
 * must stay free (the nfs package's port-111 test). So the benchmark runs rpcbind, both servers
 * and fio inside a namespace of their own: its only interface is a fresh loopback, so every port
 * is free and nothing outside can connect; a tmpfs over /run keeps rpcbind's socket and lock file
 * private. Loopback inside it is the same kernel path as outside. Needs root (CAP_SYS_ADMIN).
 *
 * glibc's getaddrinfo with AI_ADDRCONFIG (ganesha's Bind_addr) finds no IPv4 address when
 * 127.0.0.1 is the only one, so the loopback also gets 10.255.255.1/32: still loopback only.
 */
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

const SETUP = [
  'set -e',
  'mount -t tmpfs -o size=16m,mode=755 ivmr-bench-run /run',
  'ip link set lo up',
  'ip addr add 10.255.255.1/32 dev lo',
  // TCP congestion control of the loopback routes ($1; empty: the machine's default). The
  // namespace cannot set the sysctl, but a route's congctl picks the algorithm for its sockets.
  'if [ -n "$1" ]; then for a in 127.0.0.0/8 127.0.0.1 10.255.255.1; do ip route replace local $a dev lo table local scope host src 127.0.0.1 congctl "$1"; done; fi',
  'echo ready',
  'exec sleep 2147483647',
].join('; ');

/**
 * The congestion control the benchmarks use on loopback unless told otherwise. Linux's default is
 * cubic; some machines (this workplace's among them) default to bbr, whose pacing on a
 * zero-latency loopback stalls 512 KiB reads of both servers by milliseconds (benchmarks/README.md,
 * "Congestion control").
 */
export const DEFAULT_CONGESTION_CONTROL = 'cubic';

/**
 * Enters a new namespace: a `sleep` holds it open until {@link Namespace.close}.
 * @param {{ congestionControl?: string }} [options] TCP congestion control of the namespace's
 *   loopback (`system`: the machine's default; default {@link DEFAULT_CONGESTION_CONTROL})
 * @returns {Promise<Namespace>}
 */
export async function openNamespace(options = {}) {
  const cc = options.congestionControl ?? DEFAULT_CONGESTION_CONTROL;
  if (!/^(system|[a-z0-9_]+)$/.test(cc)) throw new Error(`bad congestion control name: ${cc}`);
  for (const tool of ['unshare', 'nsenter', 'ip']) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) {
      throw new Error(`${tool} not found (util-linux / iproute2): the benchmark needs it`);
    }
  }
  const holder = spawn(
    'unshare',
    [
      '--net',
      '--mount',
      '--propagation',
      'private',
      'sh',
      '-c',
      SETUP,
      'setup',
      cc === 'system' ? '' : cc,
    ],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let stderr = '';
  holder.stderr.on('data', (d) => {
    stderr += d;
  });
  await new Promise((resolve, reject) => {
    holder.once('error', reject);
    holder.once('exit', (code) =>
      reject(
        new Error(
          `cannot create a private network namespace (unshare exited with ${code}: ${stderr.trim()}); ` +
            'run the benchmark as root',
        ),
      ),
    );
    holder.stdout.once('data', resolve);
  });
  holder.removeAllListeners('exit');
  const system = () => {
    try {
      return readFileSync('/proc/sys/net/ipv4/tcp_congestion_control', 'utf8').trim();
    } catch {
      return 'unknown';
    }
  };
  return new Namespace(holder, cc === 'system' ? system() : cc);
}

export class Namespace {
  /**
   * @param {import('node:child_process').ChildProcess} holder
   * @param {string} congestionControl the TCP congestion control its loopback uses
   */
  constructor(holder, congestionControl) {
    this.holder = holder;
    this.congestionControl = congestionControl;
  }

  /**
   * The command line that runs `argv` inside the namespace. nsenter execs it (no fork without a
   * PID namespace), so the spawned process is the command itself: its pid is the server's.
   * @param {string[]} argv
   */
  argv(argv) {
    return ['nsenter', '-t', String(this.holder.pid), '-n', '-m', '--', ...argv];
  }

  /**
   * Spawns `argv` inside the namespace.
   * @param {string[]} argv
   * @param {import('node:child_process').SpawnOptions} [options]
   */
  spawn(argv, options) {
    const [cmd, ...args] = this.argv(argv);
    return spawn(cmd, args, options);
  }

  /** Ends the holder; the namespace goes away with the last process in it. */
  close() {
    if (this.holder.exitCode === null && this.holder.signalCode === null)
      this.holder.kill('SIGKILL');
  }
}
