import { defineConfig } from 'tsup';
import { entries } from '../../scripts/entrypoints.js';

export default defineConfig({
  entry: entries('store-s3'),
  format: ['esm', 'cjs'],
  dts: true,
  sourcemap: true,
  clean: true,
  target: 'node20',
});
