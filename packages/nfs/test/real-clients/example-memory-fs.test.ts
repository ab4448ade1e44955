import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { expectNoLeakedHandles, openHandles } from '../helpers/open-handles.js';
import { type Daemon, pseudoRandom, requireTools, runOk, startDaemon, tempDir } from './harness.js';

const EXAMPLE = fileURLToPath(
  new URL('../../../../examples/memory-fs/server.mjs', import.meta.url),
);
const BUILT = fileURLToPath(new URL('../../dist/index.js', import.meta.url));

// examples/memory-fs runs as users run it: `node server.mjs`, importing the BUILT package.
describe('examples/memory-fs/server.mjs', () => {
  let tools: ReturnType<typeof requireTools>;
  let example: Daemon | undefined;
  let tmp: Awaited<ReturnType<typeof tempDir>>;
  let baseline: string[];
  let url: (path: string) => string;

  beforeAll(async () => {
    tools = requireTools('nfs-ls', 'nfs-cp', 'nfs-cat');
    if (!existsSync(BUILT)) {
      throw new Error(
        `${BUILT} is missing: build first (npx -y pnpm@10.34.8 --filter @ivmr/nfs run build, or scripts/setup.sh)`,
      );
    }
    baseline = openHandles();
    tmp = await tempDir();
    const daemon = startDaemon(process.execPath, [EXAMPLE, '--nfs-port', '0', '--mount-port', '0']);
    example = daemon;
    const ready = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`no ready line within 10 s: ${daemon.output()}`)),
        10_000,
      );
      const check = () => {
        const line = /^ready .*$/m.exec(daemon.output())?.[0];
        if (line) {
          clearTimeout(timer);
          daemon.child.stdout?.off('data', check);
          resolve(line);
        }
      };
      daemon.child.stdout?.on('data', check);
      daemon.child.once('exit', () => reject(new Error(`the example exited: ${daemon.output()}`)));
    });
    const m =
      /^ready nfs=(\d+) mount=(\d+) portmap=off url=(nfs:\/\/127\.0\.0\.1\/memfs)\?(nfsport=\1&mountport=\2&version=3)$/.exec(
        ready,
      );
    expect(m, ready).not.toBeNull();
    url = (path) => `${m![3]}${path}?${m![4]}`;
  });

  afterAll(async () => {
    await example?.stop();
    await tmp?.remove();
    if (baseline) await expectNoLeakedHandles(baseline);
  });

  it('takes files from nfs-cp and gives them back byte for byte', async () => {
    for (const [i, size] of [0, 13, 1024 * 1024 + 13, 5 * 1024 * 1024 + 1].entries()) {
      const data = pseudoRandom(size, 40 + i);
      const local = join(tmp.path, `up-${size}`);
      await writeFile(local, data);
      await runOk(tools['nfs-cp'], [local, url(`/f${size}.bin`)]);
      expect(
        (await runOk(tools['nfs-cat'], [url(`/f${size}.bin`)])).equals(data),
        `nfs-cat ${size}`,
      ).toBe(true);
      const back = join(tmp.path, `down-${size}`);
      await runOk(tools['nfs-cp'], [url(`/f${size}.bin`), back]);
      expect((await readFile(back)).equals(data), `nfs-cp ${size}`).toBe(true);
    }
    const ls = (await runOk(tools['nfs-ls'], [url('')])).toString();
    expect(ls).toMatch(/\s1048589 f1048589\.bin$/m);
    expect(ls).toMatch(/\s0 f0\.bin$/m);
  });

  it('stops on SIGTERM', async () => {
    const daemon = example!;
    example = undefined;
    const exited = new Promise<number | null>((resolve) =>
      daemon.child.once('exit', (code) => resolve(code)),
    );
    await daemon.stop(5000);
    expect(await exited).toBe(0);
  });
});
