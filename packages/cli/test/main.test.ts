import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type CliIo, ExitCode, type ListedPoint, main } from '../src/index.js';
import { makeImage } from './helpers.js';

/** An in-memory CliIo that records what was written. */
function memoryIo(): CliIo & { out: () => string; err: () => string } {
  let out = '';
  let err = '';
  return {
    stdout: {
      write: (s: string) => {
        out += s;
      },
    },
    stderr: {
      write: (s: string) => {
        err += s;
      },
    },
    env: {},
    out: () => out,
    err: () => err,
  };
}

const argv = (...args: string[]) => ['node', 'ivmr', ...args];

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'ivmr-main-test-'));
});
afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('main as a library', () => {
  it('returns exit codes instead of exiting, and writes only to the given io', async () => {
    const io = memoryIo();
    expect(await main(argv('--version'), io)).toBe(ExitCode.OK);
    expect(io.out()).toMatch(/^\d+\.\d+\.\d+\n$/);

    const bad = memoryIo();
    expect(await main(argv('list', '--repo', dir, '--no-such-flag'), bad)).toBe(ExitCode.USAGE);
    expect(bad.err()).toBe("ivmr: unknown option '--no-such-flag' [IVMR_INVALID_ARGUMENT]\n");
    expect(bad.out()).toBe('');

    const none = memoryIo();
    expect(await main(argv(), none)).toBe(ExitCode.USAGE);
    expect(none.err()).toContain('Usage: ivmr');
  });

  it('backs up and lists in-process', async () => {
    const image = join(dir, 'disk0.img');
    await writeFile(image, makeImage(1024 * 1024 + 5, 3));
    const repo = join(dir, 'repo');
    const io = memoryIo();
    expect(await main(argv('backup', image, '--repo', repo, '--vm', 'vm1'), io)).toBe(0);
    const id = io.out().trim();
    const listed = memoryIo();
    expect(await main(argv('list', '--repo', repo, '--json'), listed)).toBe(0);
    const points = JSON.parse(listed.out()) as ListedPoint[];
    expect(points).toMatchObject([{ vm: 'vm1', id, kind: 'full', logicalBytes: 1024 * 1024 + 5 }]);
    expect(listed.err()).toBe('');
  });
});
