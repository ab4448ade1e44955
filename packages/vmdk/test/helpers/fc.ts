/**
 * Run counts of the property tests: a short run on a laptop, a longer one in CI (`CI` set), as
 * in packages/core/test/fc.ts.
 */
export function numRuns(local: number, ci: number): number {
  return process.env.CI ? ci : local;
}
