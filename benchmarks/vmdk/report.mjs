/** Turns a run of the VMDK benchmark into results/vmdk.json and vmdk.md. */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/** @param {number} n */
function num(n) {
  if (n >= 100) return Math.round(n).toLocaleString('en-US');
  return n >= 10 ? n.toFixed(1) : n.toFixed(2);
}

/** @param {number} bytes */
function mib(bytes) {
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

/**
 * The markdown report.
 * @param {any} r the results object written to vmdk.json
 */
export function markdown(r) {
  const out = [
    `Command: \`${r.command}\`  `,
    `${r.date} · node ${r.node} · ${r.qemu} · ${r.cpu.model} × ${r.cpu.count} · ${r.seconds.toFixed(0)} s`,
    '',
  ];
  if (r.load && r.load.othersCpuSeconds !== null) {
    out.push(
      `Load: the rest of the machine (other processes, hypervisor steal; qemu-img's runs count here too) kept ${(r.load.othersCpuSeconds / r.load.seconds).toFixed(2)} of the ${r.cpu.count} cores busy on average during the run.`,
      '',
    );
  }
  const img = r.image;
  const pct = (x) => `${((x / img.size) * 100).toFixed(0)}%`;
  out.push(
    `Image: ${mib(img.size)}, seed ${r.options.seed}: ${pct(img.bytes.zero)} zero, ${pct(img.bytes.text)} compressible text, ${pct(img.bytes.random)} random. Files made by qemu-img convert: ${Object.entries(
      r.files,
    )
      .map(([k, f]) => `${k} ${mib(f.bytes)}`)
      .join(', ')}. Passes per figure: ${r.options.repeat} (median shown).`,
    '',
    '| Figure | SparseVmdk | qemu-img convert → raw file | SparseVmdk ÷ that | qemu-img convert → null-co | SparseVmdk ÷ that | Limit | ÷ limit | CPU ÷ wall |',
    '| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |',
  );
  for (const x of r.rows) {
    out.push(
      `| ${x.figure} | ${num(x.value)} MB/s | ${num(x.qemuToFile.value)} MB/s | ${x.ratioToFile.toFixed(2)} | ${num(x.qemuToNull.value)} MB/s | ${x.ratioToNull.toFixed(2)} | ${x.limit.name}: ${num(x.limit.value)} MB/s | ${x.limitRatio.toFixed(2)} | ${(x.cpuSeconds / x.seconds).toFixed(2)} |`,
    );
  }
  out.push(
    '',
    'MB = 10⁶ bytes of the logical disk per second. qemu-img figures are whole runs of the command (process start included), CPU of qemu-img ÷ wall: ' +
      r.rows
        .filter((x) => x.id.endsWith('qd1'))
        .map(
          (x) =>
            `${x.id.split('.')[1]} ${(x.qemuToFile.cpuSeconds / x.qemuToFile.seconds).toFixed(2)} (to file), ${(x.qemuToNull.cpuSeconds / x.qemuToNull.seconds).toFixed(2)} (to null-co)`,
        )
        .join('; ') +
      '.',
  );
  return `${out.join('\n')}\n`;
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
