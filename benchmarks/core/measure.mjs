/** Timing helpers shared by the benchmark's parts. */
import { readFileSync } from 'node:fs';

/**
 * Wall and CPU time of a timed part. `cpuSeconds` is this process's user + system time (main
 * thread and libuv's pool), so CPU ÷ wall near 0 means waiting and up to 2 means both cores
 * busy. `othersCpuSeconds` is the CPU time everything else on the machine took meanwhile (other
 * processes, and time the hypervisor stole), from /proc/stat; null where there is none.
 * @typedef {{ seconds: number, cpuSeconds: number, othersCpuSeconds: number | null }} Timing
 */

/**
 * Times `fn`.
 * @param {() => Promise<void>} fn
 * @returns {Promise<Timing>}
 */
export async function timed(fn) {
  const busy = machineBusySeconds();
  const cpu = process.cpuUsage();
  const start = performance.now();
  await fn();
  const seconds = (performance.now() - start) / 1000;
  const used = process.cpuUsage(cpu);
  const busyAfter = machineBusySeconds();
  const cpuSeconds = (used.user + used.system) / 1e6;
  const othersCpuSeconds =
    busy === null || busyAfter === null ? null : Math.max(0, busyAfter - busy - cpuSeconds);
  return { seconds, cpuSeconds, othersCpuSeconds };
}

/** Adds timings of parts of one measurement. */
export function addTimings(/** @type {Timing[]} */ ...parts) {
  const others = parts.map((p) => p.othersCpuSeconds);
  return {
    seconds: parts.reduce((a, p) => a + p.seconds, 0),
    cpuSeconds: parts.reduce((a, p) => a + p.cpuSeconds, 0),
    othersCpuSeconds: others.includes(null) ? null : others.reduce((a, x) => a + x, 0),
  };
}

/**
 * CPU seconds all CPUs spent not idle since boot, stolen time included (Linux /proc/stat, in
 * USER_HZ = 100 ticks); null elsewhere.
 * @returns {number | null}
 */
export function machineBusySeconds() {
  let line;
  try {
    line = readFileSync('/proc/stat', 'latin1').slice(0, 200).split('\n')[0];
  } catch {
    return null;
  }
  const [, user, nice, system, , , irq, softirq, steal] = line.split(/\s+/).map(Number);
  return (user + nice + system + irq + softirq + steal) / 100;
}

/**
 * @typedef {object} Rate
 * @property {number} best fastest pass, in units (bytes or reads) per second: what the machine
 *   showed it can do; neighbours' load only ever slows a pass down
 * @property {number} median median pass
 * @property {number[]} passes rate of each pass
 */

/**
 * Runs `pass` (which processes `units` bytes or reads) once to warm up, then until `minMs` have
 * passed and at least 3 passes ran.
 * @param {number} units
 * @param {number} minMs
 * @param {() => void | Promise<void>} pass
 * @returns {Promise<Rate>}
 */
export async function rate(units, minMs, pass) {
  await pass();
  const passes = [];
  const start = performance.now();
  while (passes.length < 3 || performance.now() - start < minMs) {
    const t = performance.now();
    await pass();
    passes.push(units / ((performance.now() - t) / 1000));
  }
  return { best: Math.max(...passes), median: median(passes), passes };
}

/** @param {number[]} xs */
export function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/**
 * Runs `task(0..count-1)` with at most `depth` in flight (queue depth), in index order.
 * @param {number} count
 * @param {number} depth
 * @param {(i: number) => Promise<void>} task
 */
export async function runQueue(count, depth, task) {
  if (depth === 1) {
    for (let i = 0; i < count; i++) await task(i);
    return;
  }
  let next = 0;
  const worker = async () => {
    while (next < count) await task(next++);
  };
  await Promise.all(Array.from({ length: Math.min(depth, count) }, worker));
}
