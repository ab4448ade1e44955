/** Wall time, this process's CPU time, and the CPU time the rest of the machine used. */
import { readFileSync } from 'node:fs';

/** CPU seconds all CPUs spent busy since boot (Linux /proc/stat), or null. */
function machineBusySeconds() {
  try {
    const line = readFileSync('/proc/stat', 'latin1').split('\n')[0];
    const [, user, nice, system, , , irq, softirq, steal] = line.split(/\s+/).map(Number);
    return (user + nice + system + irq + softirq + steal) / 100;
  } catch {
    return null;
  }
}

/**
 * Times `fn`: `{ seconds, cpuPerWall, othersCores }`, the last being how many cores the rest of
 * the machine kept busy meanwhile (null where unknown).
 */
export async function timed(fn) {
  const busy = machineBusySeconds();
  const cpu = process.cpuUsage();
  const t0 = performance.now();
  const value = await fn();
  const seconds = (performance.now() - t0) / 1000;
  const used = process.cpuUsage(cpu);
  const cpuSeconds = (used.user + used.system) / 1e6;
  const after = machineBusySeconds();
  const othersCores =
    busy === null || after === null ? null : Math.max(0, after - busy - cpuSeconds) / seconds;
  return { value, seconds, cpuPerWall: cpuSeconds / seconds, othersCores };
}
