/**
 * Turns a run's figures into benchmarks/results/core.json (every number, machine-readable) and
 * core.md (the tables the README quotes).
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { microTable } from './micro.mjs';

/**
 * One reported speed. `limit` is the physical limit named for it (the choice of
 * denominator); `bound` is what this machine could at best do for exactly the work the figure
 * needs, summed over its steps on one core (see README, "Ratios").
 * @typedef {object} Row
 * @property {string} id stable key for tools
 * @property {string} figure
 * @property {'MB/s' | 'reads/s'} unit MB = 10^6 bytes
 * @property {number} value
 * @property {number} seconds wall time of the timed part
 * @property {number} cpuSeconds process CPU time (user + system, all threads) in it
 * @property {number | null} othersCpuSeconds CPU time the rest of the machine used meanwhile
 * @property {{ name: string, value: number }} limit in `unit`
 * @property {number} ratio value / limit.value
 * @property {{ value: number, ratio: number } | null} bound in `unit`
 */

/**
 * @param {string} id
 * @param {string} figure
 * @param {'MB/s' | 'reads/s'} unit
 * @param {number} value
 * @param {import('./measure.mjs').Timing} timing
 * @param {string} limitName
 * @param {number} limit
 * @param {number | null} bound
 * @returns {Row}
 */
export function row(id, figure, unit, value, timing, limitName, limit, bound) {
  return {
    id,
    figure,
    unit,
    value,
    seconds: timing.seconds,
    cpuSeconds: timing.cpuSeconds,
    othersCpuSeconds: timing.othersCpuSeconds,
    limit: { name: limitName, value: limit },
    ratio: value / limit,
    bound: bound === null ? null : { value: bound, ratio: value / bound },
  };
}

/** @param {number} bytesPerSec */
export const mb = (bytesPerSec) => bytesPerSec / 1e6;

/** @param {number} n */
function num(n) {
  if (n >= 100) return Math.round(n).toLocaleString('en-US');
  return n >= 10 ? n.toFixed(1) : n.toFixed(2);
}

/** @param {number} bytes */
export function size(bytes) {
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let v = bytes;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${Number.isInteger(v) ? v : v.toFixed(1)} ${units[u]}`;
}

/**
 * The markdown report.
 * @param {any} r the results object written to core.json
 */
export function markdown(r) {
  const out = [];
  out.push(
    `Command: \`${r.command}\`  `,
    `${r.date} · node ${r.node} · ${r.cpu.model} × ${r.cpu.count} · ${size(r.memory)} RAM · ${r.seconds.toFixed(0)} s`,
    '',
  );
  const load = r.load;
  if (load && load.othersCpuSeconds !== null) {
    out.push(
      `Load: during the run the rest of the machine (other processes, hypervisor steal) kept ${(load.othersCpuSeconds / load.seconds).toFixed(2)} of the ${r.cpu.count} cores busy on average; this benchmark used ${(load.cpuSeconds / load.seconds).toFixed(2)}.`,
      '',
    );
  }
  if (r.rows.length > 0) {
    const img = r.image;
    out.push(
      `Image: ${size(img.size)}, seed ${r.options.seed}: ${pct(img.bytes.zero / img.size)} zero regions, ${pct(img.bytes.text / img.size)} compressible, ${pct(img.bytes.random / img.size)} random; ${img.zeroBlocks} of ${img.blocks} 1 MiB blocks all zero, ${img.dupBlocks} duplicate blocks. Increment: ${img.changedBlocks} blocks (${pct(img.changedBlocks / img.blocks)}) changed.`,
      '',
      '| Figure | Result | Limit | Limit value | ÷ limit | Work bound | ÷ bound | CPU ÷ wall | Others, cores |',
      '| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |',
    );
    for (const x of r.rows) {
      const bound = x.bound ? `${num(x.bound.value)} ${x.unit}` : '';
      const bratio = x.bound ? x.bound.ratio.toFixed(2) : '';
      out.push(
        `| ${x.figure} | ${num(x.value)} ${x.unit} | ${x.limit.name} | ${num(x.limit.value)} ${x.unit} | ${x.ratio.toFixed(2)} | ${bound} | ${bratio} | ${(x.cpuSeconds / x.seconds).toFixed(2)} | ${x.othersCpuSeconds === null ? '' : (x.othersCpuSeconds / x.seconds).toFixed(2)} |`,
      );
    }
    out.push('', '| Limit (measured in this run) | Value | Passes | End ÷ start |');
    out.push('| --- | ---: | ---: | ---: |');
    for (const l of r.limits) {
      const drift = l.drift === null ? '' : l.drift.toFixed(2);
      out.push(`| ${l.name} | ${num(l.value)} ${l.unit} | ${l.passes} | ${drift} |`);
    }
    out.push(
      '',
      '| Repository | Points | Logical | Stored | Stored ÷ logical | Stored ÷ non-zero | Dedup blocks |',
      '| --- | ---: | ---: | ---: | ---: | ---: | ---: |',
    );
    for (const s of r.storage) {
      out.push(
        `| ${s.name} | ${s.points} | ${size(s.logicalBytes)} | ${size(s.storedBytes)} | ${s.storedPerLogical.toFixed(3)} | ${s.storedPerNonZero.toFixed(3)} | ${s.dedupBlocks} |`,
      );
    }
    out.push(
      '',
      `Open repository + restore point (cold): ${r.openMs.toFixed(1)} ms. Frame cache for warm passes: sequential ${size(r.cache.sequential)}, random ${size(r.cache.random)} (core's default is 16 MiB).`,
    );
  }
  if (r.micro) {
    out.push(
      '',
      `Micro-benchmarks (tinybench; chain: ${r.micro.chain} points of a ${size(r.micro.diskSize)} disk with ${size(r.micro.blockSize)} blocks in a MemoryStore):`,
      '',
      microTable(r.micro.results),
    );
  }
  return `${out.join('\n')}\n`;
}

/** @param {number} x */
function pct(x) {
  return `${(x * 100).toFixed(1)}%`;
}

/**
 * Writes `<name>.json` and `<name>.md` into `dir`.
 * @param {string} dir
 * @param {string} name
 * @param {any} results
 */
export async function writeResults(dir, name, results) {
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, `${name}.json`), `${JSON.stringify(results, null, 2)}\n`);
  await writeFile(join(dir, `${name}.md`), markdown(results));
}
