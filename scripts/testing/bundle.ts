import { execFile } from 'node:child_process';
import { symlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const root = fileURLToPath(new URL('../../', import.meta.url));

/**
 * Bundles a TypeScript entry (a path from the repository's root) into one ESM file node can run
 * (Node 20 runs no TypeScript), resolving `@ivmr/core` to its sources like vitest does. Native
 * modules stay outside the bundle: the output's folder gets a `node_modules` link to the
 * `node_modules` of package `pkg`, where node finds them.
 */
export async function bundleForNode(entry: string, outfile: string, pkg: string): Promise<void> {
  await promisify(execFile)(`${root}node_modules/.bin/esbuild`, [
    join(root, entry),
    '--bundle',
    '--platform=node',
    '--format=esm',
    '--target=node20',
    `--alias:@ivmr/core=${root}packages/core/src/index.ts`,
    '--external:lz4-napi',
    '--external:zstd-napi',
    '--external:@node-rs/xxhash',
    '--log-level=warning',
    `--outfile=${outfile}`,
  ]);
  await symlink(join(root, `packages/${pkg}/node_modules`), join(dirname(outfile), 'node_modules'));
}
