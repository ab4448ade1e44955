import { execFile } from 'node:child_process';
import { symlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const root = fileURLToPath(new URL('../../../../', import.meta.url));

/**
 * Bundles a TypeScript fixture into one ESM file node can run (Node 20 runs no TypeScript),
 * resolving `@ivmr/core` to its sources like vitest does. Native modules stay outside the
 * bundle: the output's folder gets a `node_modules` link to this package's, where node finds
 * them.
 */
export async function bundleFixture(entry: string, outfile: string): Promise<void> {
  await promisify(execFile)(`${root}node_modules/.bin/esbuild`, [
    fileURLToPath(new URL(`../fixtures/${entry}`, import.meta.url)),
    '--bundle',
    '--platform=node',
    '--format=esm',
    '--target=node20',
    `--alias:@ivmr/core=${root}packages/core/src/index.ts`,
    // Core's codecs are native; the fixtures do not use them and tree-shaking drops them.
    '--external:lz4-napi',
    '--external:zstd-napi',
    '--external:@node-rs/xxhash',
    '--log-level=warning',
    `--outfile=${outfile}`,
  ]);
  await symlink(join(root, 'packages/cache/node_modules'), join(dirname(outfile), 'node_modules'));
}
