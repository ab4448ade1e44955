import { defineConfig } from 'tsup';
import { entries } from '../../scripts/entrypoints.js';

export default defineConfig({
  // The decode pool's worker script is not an entry point of the package's API; the pool
  // finds it next to itself (dist/decode-worker.js).
  entry: { ...entries('core'), 'decode-worker': 'src/repository/decode-worker.ts' },
  shims: true,
  format: ['esm', 'cjs'],
  dts: true,
  sourcemap: true,
  clean: true,
  target: 'node20',
  external: ['vitest'],
});
