/**
 * Run counts of the property tests: a short run on a laptop, a longer one in CI (`CI` set), so
 * local runs stay quick and CI explores more cases.
 */
export function numRuns(local: number, ci: number): number {
  return process.env.CI ? ci : local;
}
