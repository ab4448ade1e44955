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

const SETUP = [
  'set -e',
  'mount -t tmpfs -o size=16m,mode=755 ivmr-bench-run /run',
  'ip link set lo up',
  'ip addr add 10.255.255.1/32 dev lo',
  'echo ready',
  'exec sleep 2147483647',
].join('; ');

/**
 * Enters a new namespace: a `sleep` holds it open until {@link Namespace.close}.
 * @returns {Promise<Namespace>}
 */
export async function openNamespace() {
  for (const tool of ['unshare', 'nsenter', 'ip']) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) {
      throw new Error(`${tool} not found (util-linux / iproute2): the benchmark needs it`);
    }
  }
  const holder = spawn(
    'unshare',
    ['--net', '--mount', '--propagation', 'private', 'sh', '-c', SETUP],
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
  return new Namespace(holder);
}

export class Namespace {
  /** @param {import('node:child_process').ChildProcess} holder */
  constructor(holder) {
    this.holder = holder;
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
