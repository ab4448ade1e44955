import { isIvmrError } from '@ivmr/core';
import { CommanderError } from 'commander';

/**
 * A stream the command writes to. `isTTY: true` means a real terminal (a `tty.WriteStream`): the
 * progress bar is drawn only then, with cursor movements.
 */
export interface CliStream {
  write(chunk: string): unknown;
  readonly isTTY?: boolean;
}

/** Where `main` writes, and the environment it reads (`IVMR_DEBUG`). Defaults to the process's. */
export interface CliIo {
  readonly stdout: CliStream;
  readonly stderr: CliStream;
  readonly env: Readonly<Record<string, string | undefined>>;
}

/** Exit codes of the `ivmr` command. */
export const ExitCode = {
  /** Success. */
  OK: 0,
  /** The command failed: bad input, missing file, unknown VM or point, locked repository. */
  ERROR: 1,
  /** Usage error: unknown flag, missing or malformed flag value. */
  USAGE: 2,
  /** `verify` (or `repair`) found damaged or missing data. */
  DAMAGED: 3,
} as const;

/** The process's own streams and environment. */
export function processIo(): CliIo {
  return { stdout: process.stdout, stderr: process.stderr, env: process.env };
}

/** Writes one line. */
export function writeLine(stream: CliStream, line = ''): void {
  stream.write(`${line}\n`);
}

/** Writes `value` as indented JSON. */
export function writeJson(stream: CliStream, value: unknown): void {
  writeLine(stream, JSON.stringify(value, null, 2));
}

/** A usage error: reported like commander's own (exit code 2). */
export function usageError(message: string): CommanderError {
  return new CommanderError(ExitCode.USAGE, 'ivmr.usage', message);
}

/**
 * Reports a failure as one line on stderr, `ivmr: <message> [IVMR_CODE]`, and returns the exit
 * code. The stack trace follows only when `IVMR_DEBUG=1`.
 */
export function reportError(err: unknown, io: CliIo): number {
  let message: string;
  let code: string | undefined;
  let exitCode: number = ExitCode.ERROR;
  if (err instanceof CommanderError) {
    message = err.message.replace(/^error: /, '');
    code = 'IVMR_INVALID_ARGUMENT';
    exitCode = ExitCode.USAGE;
  } else if (isIvmrError(err)) {
    message = err.message;
    code = err.code;
  } else {
    message = err instanceof Error ? err.message : String(err);
    code = systemErrorCode(err);
  }
  // Keep it one line whatever the message holds.
  const line = message.replace(/\s*\n\s*/g, ' ');
  writeLine(io.stderr, `ivmr: ${line}${code ? ` [${code}]` : ''}`);
  if (io.env.IVMR_DEBUG === '1' && err instanceof Error && err.stack) {
    writeLine(io.stderr, err.stack);
  }
  return exitCode;
}

/** The ivmr code for an operating-system error (ENOENT and the like); undefined for others. */
function systemErrorCode(err: unknown): string | undefined {
  const sys = (err as { code?: unknown } | null)?.code;
  if (typeof sys !== 'string' || !/^E[A-Z]+$/.test(sys)) return undefined;
  if (sys === 'ENOENT') return 'IVMR_NOT_FOUND';
  if (sys === 'EEXIST') return 'IVMR_EXISTS';
  return 'IVMR_IO';
}
