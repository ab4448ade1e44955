import type { Reporter, RunnerTask, RunnerTestFile } from 'vitest';

/**
 * Prints one plain closing line, `tests: N passed, N failed, N skipped`, after vitest's own
 * report, so any CI log reader can tell how many tests ran.
 */
export default class SummaryReporter implements Reporter {
  onFinished(files: RunnerTestFile[] = []): void {
    let passed = 0;
    let failed = 0;
    let skipped = 0;
    const walk = (task: RunnerTask): void => {
      if (task.type === 'suite') {
        for (const t of task.tasks) walk(t);
        if (task.result?.state === 'fail' && task.tasks.length === 0) failed++;
        return;
      }
      if (task.mode === 'skip' || task.mode === 'todo') skipped++;
      else if (task.result?.state === 'pass') passed++;
      else failed++;
    };
    for (const f of files) walk(f);
    const line = `${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`;
    process.stdout.write(`\ntests: ${line}\n`);
  }
}
