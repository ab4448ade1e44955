/** Child processes of the benchmark: their CPU time, their output, and stopping them for sure. */
import { readFileSync } from 'node:fs';

/** USER_HZ: /proc reports CPU time in ticks of 1/100 s on Linux. */
const TICKS = 100;

/**
 * User + system CPU seconds of a process, all its threads (Linux /proc/<pid>/stat); null once it
 * is gone.
 * @param {number} pid
 * @returns {number | null}
 */
export function cpuSecondsOf(pid) {
  let stat;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
  } catch {
    return null;
  }
  // Fields after the command name, which may hold spaces and parentheses.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / TICKS;
}

/**
 * CPU seconds of this process's children that have exited and been reaped (Linux
 * /proc/self/stat cutime + cstime): node reaps each child as it exits, so the change across a
 * child's run is that child's CPU time, as long as no other child exits meanwhile.
 */
export function reapedChildrenCpuSeconds() {
  const stat = readFileSync('/proc/self/stat', 'latin1');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[13]) + Number(fields[14])) / TICKS;
}

/**
 * A child process that is expected to keep running: collects the tail of its stderr (and
 * stdout), notices an early exit, and stops with SIGTERM, then SIGKILL.
 */
export class Child {
  /**
   * @param {string} name
   * @param {import('node:child_process').ChildProcess} proc
   */
  constructor(name, proc) {
    this.name = name;
    this.proc = proc;
    this.output = '';
    /** @type {Promise<void>} */
    this.exited = new Promise((resolve) => {
      proc.once('exit', () => resolve());
      proc.once('error', (err) => {
        this.output += `\n${err.message}`;
        resolve();
      });
    });
    const keep = (d) => {
      this.output = (this.output + d).slice(-8192);
    };
    proc.stderr?.on('data', keep);
  }

  get pid() {
    return /** @type {number} */ (this.proc.pid);
  }

  get running() {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }

  /** CPU seconds so far. */
  cpuSeconds() {
    return cpuSecondsOf(this.pid) ?? Number.NaN;
  }

  /** Throws with the child's output when it has exited. */
  assertRunning() {
    if (!this.running) {
      throw new Error(
        `${this.name} exited (${this.proc.exitCode ?? this.proc.signalCode}):\n${this.output.trim()}`,
      );
    }
  }

  /**
   * SIGTERM, then SIGKILL after `graceMs`.
   * @param {number} [graceMs]
   */
  async stop(graceMs = 5000) {
    if (!this.running) return;
    this.proc.kill('SIGTERM');
    let timer;
    const killed = new Promise((resolve) => {
      timer = setTimeout(() => {
        if (this.running) this.proc.kill('SIGKILL');
        resolve(undefined);
      }, graceMs);
    });
    await Promise.race([this.exited, killed]);
    clearTimeout(timer);
    await this.exited;
  }
}

/**
 * Resolves when `check()` returns a truthy value; rejects after `ms`, or as soon as `child`
 * exits.
 * @template T
 * @param {Child} child
 * @param {() => T} check
 * @param {number} ms
 * @param {string} what
 * @returns {Promise<T>}
 */
export async function waitFor(child, check, ms, what) {
  const deadline = performance.now() + ms;
  for (;;) {
    const v = check();
    if (v) return v;
    child.assertRunning();
    if (performance.now() > deadline) {
      throw new Error(`${child.name}: ${what} not within ${ms} ms:\n${child.output.trim()}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}
