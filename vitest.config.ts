import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

const src = (pkg: string) =>
  fileURLToPath(new URL(`./packages/${pkg}/src/index.ts`, import.meta.url));

// Tests import sibling packages from source so a change is tested without a rebuild; CLI tests
// run the built binary (scripts/test.sh builds first).
export default defineConfig({
  resolve: {
    alias: {
      // Before '@ivmr/core', which would match it as a prefix.
      '@ivmr/core/testing': fileURLToPath(
        new URL('./packages/core/src/testing/index.ts', import.meta.url),
      ),
      '@ivmr/core': src('core'),
      '@ivmr/nfs': src('nfs'),
      '@ivmr/vmdk': src('vmdk'),
      '@ivmr/cache': src('cache'),
      '@ivmr/recovery': src('recovery'),
      '@ivmr/store-s3': src('store-s3'),
    },
  },
  test: {
    include: [
      'packages/*/src/**/*.test.ts',
      'packages/*/test/**/*.test.ts',
      'benchmarks/**/*.test.ts',
      'scripts/**/*.test.ts',
    ],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // The AWS SDK warns in every process that its 2027 releases will want Node 22 (the lockfile
    // pins one that runs on Node 20): noise in the test output.
    env: { AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' },
  },
});
