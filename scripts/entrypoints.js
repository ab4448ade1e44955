// The one list of every package's public entry points. tsup builds exactly these, and
// scripts/entrypoints.test.ts fails when a package.json `exports` map drifts from it.
/** @type {Record<string, Record<string, string>>} subpath -> source file, per package folder */
export const ENTRYPOINTS = {
  core: { '.': 'src/index.ts', './testing': 'src/testing/index.ts' },
  cli: { '.': 'src/index.ts', './cli': 'src/cli.ts' },
  nfs: { '.': 'src/index.ts', './testing': 'src/testing/index.ts' },
  vmdk: { '.': 'src/index.ts' },
  cache: { '.': 'src/index.ts' },
  recovery: { '.': 'src/index.ts' },
  'store-s3': { '.': 'src/index.ts' },
};

/** tsup `entry` object for a package: output name -> source file. */
export function entries(pkg) {
  const list = ENTRYPOINTS[pkg];
  if (!list) throw new Error(`no entry points listed for package ${pkg}`);
  return Object.fromEntries(
    Object.entries(list).map(([sub, file]) => [sub === '.' ? 'index' : sub.slice(2), file]),
  );
}
