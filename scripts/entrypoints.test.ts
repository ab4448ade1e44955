import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ENTRYPOINTS, entries } from './entrypoints.js';

describe('package exports maps', () => {
  for (const pkg of Object.keys(ENTRYPOINTS)) {
    it(`${pkg}: exports map lists exactly the built entry points`, () => {
      const manifest = JSON.parse(
        readFileSync(new URL(`../packages/${pkg}/package.json`, import.meta.url), 'utf8'),
      );
      const built = entries(pkg);
      const expected: Record<string, unknown> = { './package.json': './package.json' };
      for (const sub of Object.keys(ENTRYPOINTS[pkg] ?? {})) {
        const out = built[sub === '.' ? 'index' : sub.slice(2)]
          ? sub === '.'
            ? 'index'
            : sub.slice(2)
          : '';
        expected[sub] = {
          import: { types: `./dist/${out}.d.ts`, default: `./dist/${out}.js` },
          require: { types: `./dist/${out}.d.cts`, default: `./dist/${out}.cjs` },
        };
      }
      expect(manifest.exports).toEqual(expected);
    });
  }
});
