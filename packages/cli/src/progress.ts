import cliProgress from 'cli-progress';
import { formatBytes } from './format.js';
import type { CliIo } from './io.js';

/** A byte-count progress display; does nothing unless stderr is a terminal. */
export interface Progress {
  /** Sets the bytes done so far and what is being worked on. Cheap; the bar redraws at most 10 times a second. */
  update(done: number, label: string): void;
  /** Removes the bar. */
  stop(): void;
}

const NONE: Progress = { update() {}, stop() {} };

/** Starts a progress bar for `total` bytes on `io.stderr` when that is a terminal. */
export function startProgress(io: CliIo, title: string, total: number): Progress {
  if (!io.stderr.isTTY) return NONE;
  const bar = new cliProgress.SingleBar(
    {
      format: `${title} [{bar}] {percentage}% {done}/{size} {label}`,
      stream: io.stderr as NodeJS.WritableStream,
      fps: 10,
      hideCursor: true,
      clearOnComplete: true,
    },
    cliProgress.Presets.shades_classic,
  );
  const size = formatBytes(total);
  bar.start(Math.max(total, 1), 0, { done: formatBytes(0), size, label: '' });
  return {
    update(done, label) {
      bar.update(done, { done: formatBytes(done), label });
    },
    stop() {
      bar.stop();
    },
  };
}
