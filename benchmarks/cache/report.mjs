/** The cache benchmark's tables, as markdown, and its results files. */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

const fmt = (n, digits = 0) =>
  n === null || n === undefined || Number.isNaN(n)
    ? ''
    : n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });

/**
 * A figure's row: its result, and the same pattern on a plain file by fio (C, psync) and by a
 * node FileHandle loop, in the same unit (either may be null).
 */
export function row(figure, unit, result, { pattern = '', fio = null, node = null } = {}, timing) {
  return {
    figure,
    unit,
    result,
    pattern,
    fio,
    node,
    perFio: fio ? result / fio : null,
    perNode: node ? result / node : null,
    seconds: timing?.seconds ?? null,
    cpuPerWall: timing?.cpuPerWall ?? null,
    othersCores: timing?.othersCores ?? null,
  };
}

/** The results as a markdown table. */
export function markdown(results) {
  const lines = [
    `${results.date} · node ${results.node} · ${results.cpu} × ${results.cores} · ${results.tmpFs}`,
    '',
    `Disk of ${results.sizeMiB} MiB, ${results.seconds} s per timed figure. The limits run the same pattern on a plain file of the same size in the same temp dir: ${results.fioNote}`,
    '',
    '| Figure | Unit | Result | Same pattern, plain file | fio psync | ÷ fio | node FileHandle | ÷ node | CPU ÷ wall | Others, cores |',
    '| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |',
  ];
  for (const r of results.rows) {
    lines.push(
      `| ${r.figure} | ${r.unit} | ${fmt(r.result)} | ${r.pattern} | ${fmt(r.fio)} | ${fmt(r.perFio, 2)} | ${fmt(r.node)} | ${fmt(r.perNode, 2)} | ${fmt(r.cpuPerWall, 2)} | ${fmt(r.othersCores, 2)} |`,
    );
  }
  return `${lines.join('\n')}\n`;
}

/** Writes `cache.json` and `cache.md` into `dir`. */
export async function writeResults(dir, results) {
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'cache.json'), `${JSON.stringify(results, null, 2)}\n`);
  await writeFile(join(dir, 'cache.md'), markdown(results));
}
