/**
 * Turns a run into benchmarks/results/nfs.json (every number, every run) and nfs.md (the tables
 * the README quotes).
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { size } from '../core/report.mjs';

/**
 * A byte check for the report: ok or FAILED, and how many of its fio passes hung and were run
 * again (common.mjs, verifyWrites).
 * @param {{ ok: boolean, hung?: unknown[] }} c
 */
export function checkResult(c) {
  const n = c.hung?.length ?? 0;
  const again =
    n === 0 ? '' : ` (after ${n === 1 ? 'a hung pass' : `${n} hung passes`}, run again)`;
  return `${c.ok ? 'ok' : 'FAILED'}${again}`;
}

/** @param {number} n */
function num(n) {
  if (!Number.isFinite(n)) return '';
  if (n >= 100) return Math.round(n).toLocaleString('en-US');
  return n >= 10 ? n.toFixed(1) : n.toFixed(2);
}

/** @param {number} n */
const cores = (n) => (Number.isFinite(n) ? n.toFixed(2) : '');

/**
 * The markdown report.
 * @param {any} r the results object written to nfs.json
 */
export function markdown(r) {
  const out = [];
  out.push(
    `Command: \`${r.command}\`  `,
    `${r.date} · node ${r.node} · ${r.cpu.model} × ${r.cpu.count} · ${r.versions.fio} (nfs engine, ${r.versions.libnfs}) · ${r.versions.ganesha} · TCP ${r.congestionControl ?? 'machine default'} on loopback · ${r.seconds.toFixed(0)} s`,
    '',
    `File: ${size(r.options.size)} (${size(r.options.writeSize)} for writes), ivmr from memory, ganesha from tmpfs; ${r.options.rounds} rounds of ${r.options.runtime} s (+${r.options.ramp} s ramp) per job and server, alternating ivmr, ganesha. Bytes checked first: ${r.checks.map((c) => `${c.server} ${c.what} ${checkResult(c)}`).join('; ')}.`,
    '',
    '| Job | ivmr | ganesha | ivmr ÷ ganesha | Rounds (÷) | Target | Met |',
    '| --- | ---: | ---: | ---: | --- | ---: | --- |',
  );
  for (const j of r.jobs) {
    const unit = j.bs >= 64 * 1024 ? 'MB/s' : 'IOPS';
    const show = (s) => {
      const x = j.servers[s];
      if (!x) return '';
      if (x.hung) return 'hung';
      if (x.error) return 'failed';
      return unit === 'IOPS' ? `${num(x.iops)} IOPS` : `${num(x.bytesPerSecond / 1e6)} MB/s`;
    };
    const rounds = j.roundRatios.map((x) => x.toFixed(2)).join(', ');
    const target = j.target === null ? '' : `≥ ${j.target.toFixed(1)}`;
    const met = j.target === null || j.ratio === null ? '' : j.ratio >= j.target ? 'yes' : 'no';
    out.push(
      `| ${j.title} | ${show('ivmr')} | ${show('ganesha')} | ${j.ratio === null ? '' : j.ratio.toFixed(2)} | ${rounds} | ${target} | ${met} |`,
    );
  }
  out.push(
    '',
    '| Job | Server | IOPS | MB/s | p50 µs | p99 µs | Server CPU, cores | Server CPU µs per I/O | fio CPU, cores | Others, cores |',
    '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  );
  for (const j of r.jobs) {
    for (const [name, x] of Object.entries(j.servers)) {
      if (x.hung || x.error) {
        out.push(
          `| ${j.title} | ${name} | ${x.hung ? 'hung' : `failed: ${x.error}`} | | | | | | | |`,
        );
        continue;
      }
      out.push(
        `| ${j.title} | ${name} | ${num(x.iops)} | ${num(x.bytesPerSecond / 1e6)} | ${num(x.p50Us)} | ${num(x.p99Us)} | ${cores(x.serverCores)} | ${num(x.serverCpuUsPerIo)} | ${cores(x.fioCores)} | ${cores(x.othersCores)} |`,
      );
    }
  }
  return `${out.join('\n')}\n`;
}

/**
 * Writes `nfs.json` and `nfs.md` into `dir`.
 * @param {string} dir
 * @param {any} results
 */
export async function writeResults(dir, results) {
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'nfs.json'), `${JSON.stringify(results, null, 2)}\n`);
  await writeFile(join(dir, 'nfs.md'), markdown(results));
}
