/**
 * Turns a serve benchmark run into benchmarks/results/serve.json (every number, every run),
 * serve.md (the tables the README quotes) and serve.svg (ivmr ÷ ganesha per job, a bar per store
 * and temperature).
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { size } from '../core/report.mjs';
import { checkResult } from '../nfs/report.mjs';

/** @param {number} n */
function num(n) {
  if (!Number.isFinite(n)) return '';
  if (n >= 100) return Math.round(n).toLocaleString('en-US');
  return n >= 10 ? n.toFixed(1) : n.toFixed(2);
}

/** @param {number | null | undefined} n */
const cores = (n) => (typeof n === 'number' && Number.isFinite(n) ? n.toFixed(2) : '');

/**
 * A server's headline figure for a job: MB/s for large blocks, IOPS otherwise.
 * @param {any} job
 * @param {any} x
 */
function headline(job, x) {
  if (!x) return '';
  if (x.hung) return 'hung';
  if (x.error) return 'failed';
  return job.bs >= 64 * 1024 ? `${num(x.bytesPerSecond / 1e6)} MB/s` : `${num(x.iops)} IOPS`;
}

/**
 * For each target against ganesha warm (the cold sequential read): the most that job could do
 * on this machine at the CPU it cost per I/O in this run (the server's, fio's and the other
 * processes'), with every core doing nothing else. A target above that ceiling needs less CPU
 * per byte, not a better pipeline.
 * @param {any} r the results object
 * @returns {string[]}
 */
function cpuCeilings(r) {
  const out = [];
  for (const t of r.targets.filter((x) => x.kind === 'ratioToWarm')) {
    const job = r.jobs.find((j) => j.id === t.job && j.temp === t.temp);
    const x = job?.servers[t.server];
    const warm = r.jobs.find((j) => j.id === t.job && j.temp === 'warm')?.servers.ganesha;
    if (!x || x.error || x.hung || !warm || warm.error || warm.hung) continue;
    const us = (c) => (c / x.iops) * 1e6;
    const perIo = us(x.serverCores) + us(x.fioCores) + us(x.othersCores ?? 0);
    const ceiling = (r.cpu.count / perIo) * 1e6;
    out.push(
      '',
      `CPU ceiling of "${t.title}", ${t.store}: per I/O the server used ${num(us(x.serverCores))} µs of CPU, fio ${num(us(x.fioCores))} µs and other processes ${num(us(x.othersCores ?? 0))} µs; all ${r.cpu.count} cores doing only that would give ${num((ceiling * job.bs) / 1e6)} MB/s, ${(ceiling / warm.iops).toFixed(2)}× ganesha warm (target ${t.value}×).`,
    );
  }
  return out;
}

/**
 * For each job with a latency target: each server's round with the median p99, second by
 * second (fio's per-I/O latency log): the p99 of the I/Os that completed in that second and the
 * share of the round's slowest 1% among them, so a reader sees whether the tail is spread over
 * the run or bunched (for instance in a cold run's first seconds).
 * @param {any} r the results object
 * @returns {string[]}
 */
function bySecondTables(r) {
  const out = [];
  const keys = new Set(
    r.targets.filter((t) => t.kind === 'p99Us').map((t) => `${t.job}/${t.temp}`),
  );
  for (const key of keys) {
    const [jobId, temp] = key.split('/');
    const job = r.jobs.find((j) => j.id === jobId && j.temp === temp);
    const rows = [];
    let width = 0;
    for (const name of Object.keys(job?.servers ?? {})) {
      const rounds = (r.runs ?? [])
        .filter((x) => x.job === jobId && x.temp === temp && x.server === name && x.bySecond)
        .sort((a, b) => a.p99Us - b.p99Us);
      const mid = rounds[Math.floor((rounds.length - 1) / 2)];
      if (!mid) continue;
      width = Math.max(width, mid.bySecond.length);
      rows.push({ name, mid });
    }
    if (rows.length === 0) continue;
    // A second with under 1% of its round's I/Os (the run's last moments) says nothing.
    const shown = (/** @type {any} */ mid, /** @type {number} */ i) => {
      const least = 0.01 * mid.bySecond.reduce((a, x) => a + x.ios, 0);
      return mid.bySecond.find((x) => x.second === i && x.ios >= least);
    };
    const cols = Array.from({ length: width }, (_, i) => i).filter((i) =>
      rows.some((row) => shown(row.mid, i)),
    );
    out.push(
      '',
      `${job.title}, ${temp}, second by second (each server's round with the median p99): the p99 of the I/Os completed in that second in ms, and in brackets the share of the round's slowest 1% that fell in it.`,
      '',
      `| Server | Round p99 | ${cols.map((i) => `${i}–${i + 1} s`).join(' | ')} |`,
      `| --- | ---: | ${cols.map(() => '---:').join(' | ')} |`,
    );
    for (const { name, mid } of rows) {
      const cells = cols.map((i) => {
        const s = shown(mid, i);
        return s ? `${(s.p99Us / 1000).toFixed(1)} (${Math.round(s.tailShare * 100)}%)` : '';
      });
      out.push(`| ${name} | ${(mid.p99Us / 1000).toFixed(2)} ms | ${cells.join(' | ')} |`);
    }
  }
  return out;
}

/**
 * The markdown report.
 * @param {any} r the results object written to serve.json
 */
export function markdown(r) {
  const names = [...new Set(r.jobs.flatMap((j) => Object.keys(j.servers)))];
  const ivmrs = names.filter((n) => n !== 'ganesha');
  const out = [];
  const backups = r.backups
    .map((b) => `${b.codec} ${b.storedBytes === null ? '?' : size(b.storedBytes)} stored`)
    .join(', ');
  const checks = r.checks.filter((c) => !c.what.startsWith('round'));
  const rechecks = r.checks.filter((c) => c.what.startsWith('round'));
  out.push(
    `Command: \`${r.command}\`  `,
    `${r.date} · node ${r.node} · ${r.cpu.model} × ${r.cpu.count} · ${r.versions.fio} (nfs engine, ${r.versions.libnfs}) · ${r.versions.ganesha} · TCP ${r.congestionControl ?? 'machine default'} on loopback · ${r.seconds.toFixed(0)} s`,
    '',
    `Disk: ${size(r.disk.size)}, seed ${r.disk.seed} (${r.disk.zeroBlocks} of ${r.disk.size / 1048576} 1 MiB blocks zero, ${r.disk.dupBlocks} duplicates), backed up with \`ivmr backup\` (${backups}); served by \`ivmr serve\` as the VM's flat VMDK and by ganesha (VFS FSAL) as a raw file. ${r.options.rounds} rounds of ${r.options.runtime} s (+${r.options.ramp} s ramp) per job, temperature and server, servers alternating. Cold: ivmr restarted with an empty cache folder${r.pageCacheDropped ? ', page cache dropped' : r.pageCacheDropped === false ? ', page cache NOT dropped (not root)' : ''}; warm: after two whole reads of the disk (ivmr's read cache stores a sequential stream's blocks on their second read) and a sync.`,
    '',
    `Bytes checked first: ${checks.map((c) => `${c.server} ${c.what} ${checkResult(c)}`).join('; ')}. Before each warm round: ${rechecks.length} whole-disk reads, ${rechecks.every((c) => c.ok) ? 'all right' : 'SOME WRONG'}.`,
    '',
  );
  if (r.targets.length > 0) {
    out.push('| Target | Store | Measured | Target | Met |', '| --- | --- | ---: | ---: | --- |');
    for (const t of r.targets) {
      const fmt = (v) => (v === null ? '' : t.kind === 'p99Us' ? `${num(v)} µs` : v.toFixed(2));
      const sense = t.sense === 'at-least' ? '≥' : '≤';
      const met = t.met === null ? 'not measured' : t.met ? 'yes' : 'no';
      out.push(
        `| ${t.title} | ${t.store} | ${fmt(t.measured)} | ${sense} ${fmt(t.value)} | ${met} |`,
      );
    }
    out.push(...cpuCeilings(r), '');
  }
  out.push(
    `| Job | Temp | ${names.join(' | ')} | ${ivmrs.map((n) => `${n} ÷ ganesha`).join(' | ')} | Rounds (÷) |`,
    `| --- | --- | ${names.map(() => '---:').join(' | ')} | ${ivmrs.map(() => '---:').join(' | ')} | --- |`,
  );
  for (const j of r.jobs) {
    const ratios = ivmrs.map((n) => (j.ratios[n] == null ? '' : j.ratios[n].toFixed(2)));
    const rounds = ivmrs
      .map((n) =>
        j.roundRatios[n]?.length
          ? `${n.replace('ivmr-', '')}: ${j.roundRatios[n].map((x) => x.toFixed(2)).join(', ')}`
          : '',
      )
      .filter(Boolean)
      .join('; ');
    out.push(
      `| ${j.title} | ${j.temp} | ${names.map((n) => headline(j, j.servers[n])).join(' | ')} | ${ratios.join(' | ')} | ${rounds} |`,
    );
  }
  out.push(
    '',
    '| Job | Temp | Server | IOPS | MB/s | p50 µs | p99 µs | Server CPU, cores | Server CPU µs per I/O | fio CPU, cores | Others, cores |',
    '| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  );
  for (const j of r.jobs) {
    for (const [name, x] of Object.entries(j.servers)) {
      if (x.hung || x.error) {
        out.push(
          `| ${j.title} | ${j.temp} | ${name} | ${x.hung ? 'hung' : `failed: ${x.error}`} | | | | | | | |`,
        );
        continue;
      }
      out.push(
        `| ${j.title} | ${j.temp} | ${name} | ${num(x.iops)} | ${num(x.bytesPerSecond / 1e6)} | ${num(x.p50Us)} | ${num(x.p99Us)} | ${cores(x.serverCores)} | ${num(x.serverCpuUsPerIo)} | ${cores(x.fioCores)} | ${cores(x.othersCores)} |`,
      );
    }
  }
  out.push(...bySecondTables(r));
  if (r.memory.length > 0) {
    const peak = {};
    for (const m of r.memory) peak[m.server] = Math.max(peak[m.server] ?? 0, m.peakRssBytes);
    out.push(
      '',
      `Peak RSS of each server over the run: ${Object.entries(peak)
        .map(([n, b]) => `${n} ${size(b)}`)
        .join(', ')}.`,
    );
  }
  if (r.s3Gets) {
    const g = r.s3Gets;
    const ivmr = (id) => r.jobs.find((j) => j.id === id && j.temp === 'cold')?.servers['ivmr-s3'];
    const rnd = ivmr('randread-4k-qd16');
    const seq = ivmr('read-512k-qd4');
    out.push(
      '',
      `S3 peer (serve/s3-gets.mjs: \`S3Store\`'s own ranged GETs against the same gateway, no NFS, cache or decoding): random 64 KiB GETs at QD16 ${num(g.random64k.getsPerSecond)}/s (client CPU ${num(g.random64k.clientCpuUsPerGet)} µs per GET)${rnd && !rnd.error ? `; ivmr-s3's cold 4 KiB random reads ÷ that: ${(rnd.iops / g.random64k.getsPerSecond).toFixed(2)}` : ''}. Sequential 1 MiB GETs at QD4 ${num(g.sequential1m.mbPerSecond)} MB/s (client CPU ${num(g.sequential1m.clientCpuUsPerGet)} µs per GET)${seq && !seq.error ? `; ivmr-s3's cold 512 KiB sequential read ÷ that: ${(seq.bytesPerSecond / 1e6 / g.sequential1m.mbPerSecond).toFixed(2)}` : ''}.`,
    );
  }
  return `${out.join('\n')}\n`;
}

/**
 * A bar chart of ivmr ÷ ganesha: a group per job and temperature, a bar per ivmr store, a line at
 * 1 (as fast as ganesha) and a tick at each job's target.
 * @param {any} r the results object
 */
export function svg(r) {
  const groups = r.jobs.filter((j) => Object.values(j.ratios).some((x) => x !== null));
  const ivmrs = [...new Set(groups.flatMap((j) => Object.keys(j.ratios)))];
  const colors = ['#1f77b4', '#ff7f0e', '#2ca02c'];
  const W = 880;
  const left = 260;
  const barH = 14;
  const groupH = ivmrs.length * barH + 14;
  const top = 50;
  const H = top + groups.length * groupH + 50;
  const max = Math.max(
    2,
    ...groups.flatMap((j) => Object.values(j.ratios).filter((x) => x !== null)),
  );
  const scale = (W - left - 40) / max;
  const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;');
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="20" text-anchor="middle" font-size="14">ivmr serve ÷ nfs-ganesha (same job, same temperature; &gt; 1 is faster)</text>`,
    `<text x="${W / 2}" y="36" text-anchor="middle" fill="#555">${esc(`${size(r.disk.size)} disk · ${r.cpu.model} × ${r.cpu.count} · ${r.date.slice(0, 10)}`)}</text>`,
  ];
  groups.forEach((j, gi) => {
    const y0 = top + gi * groupH;
    parts.push(
      `<text x="${left - 8}" y="${y0 + (ivmrs.length * barH) / 2 + 4}" text-anchor="end">${esc(`${j.title}, ${j.temp}`)}</text>`,
    );
    ivmrs.forEach((n, i) => {
      const v = j.ratios[n];
      if (v === null || v === undefined) return;
      const y = y0 + i * barH;
      parts.push(
        `<rect x="${left}" y="${y}" width="${(v * scale).toFixed(1)}" height="${barH - 2}" fill="${colors[i % colors.length]}"/>`,
        `<text x="${left + v * scale + 4}" y="${y + barH - 4}">${v.toFixed(2)}</text>`,
      );
    });
    const target = r.targets.find((t) => t.job === j.id && t.temp === j.temp && t.kind === 'ratio');
    if (target) {
      const x = left + target.value * scale;
      parts.push(
        `<line x1="${x}" x2="${x}" y1="${y0 - 2}" y2="${y0 + ivmrs.length * barH}" stroke="#d62728" stroke-width="2" stroke-dasharray="3,2"/>`,
      );
    }
  });
  const one = left + scale;
  const bottom = top + groups.length * groupH;
  parts.push(
    `<line x1="${one}" x2="${one}" y1="${top - 6}" y2="${bottom}" stroke="black"/>`,
    `<text x="${one}" y="${bottom + 14}" text-anchor="middle">1 = ganesha</text>`,
  );
  ivmrs.forEach((n, i) => {
    const x = left + i * 140;
    parts.push(
      `<rect x="${x}" y="${bottom + 26}" width="12" height="12" fill="${colors[i % colors.length]}"/>`,
      `<text x="${x + 16}" y="${bottom + 36}">${esc(n)}</text>`,
    );
  });
  parts.push(
    `<line x1="${left + ivmrs.length * 140}" x2="${left + ivmrs.length * 140 + 14}" y1="${bottom + 32}" y2="${bottom + 32}" stroke="#d62728" stroke-width="2" stroke-dasharray="3,2"/>`,
    `<text x="${left + ivmrs.length * 140 + 18}" y="${bottom + 36}">target</text>`,
    '</svg>',
  );
  return `${parts.join('\n')}\n`;
}

/**
 * Writes `serve.json`, `serve.md` and `serve.svg` into `dir`; returns the markdown.
 * @param {string} dir
 * @param {any} results
 */
export async function writeResults(dir, results) {
  await mkdir(dir, { recursive: true });
  const md = markdown(results);
  await writeFile(join(dir, 'serve.json'), `${JSON.stringify(results, null, 2)}\n`);
  await writeFile(join(dir, 'serve.md'), md);
  await writeFile(join(dir, 'serve.svg'), svg(results));
  return md;
}
