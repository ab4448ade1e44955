import { defineConfig } from 'tsup';
import { entries } from '../../scripts/entrypoints.js';

export default defineConfig({
  entry: entries('vmdk'),
  format: ['esm', 'cjs'],
  dts: true,
  sourcemap: true,
  clean: true,
  target: 'node20',
});
