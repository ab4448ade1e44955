/** Run counts of the property tests: short locally, longer in CI (`CI` set). */
export function numRuns(local: number, ci: number): number {
  return process.env.CI ? ci : local;
}
