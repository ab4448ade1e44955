import { ErrorCode, IvmrError } from '@ivmr/core';

/**
 * A malformed line of a text file (a VMDK descriptor, a `.vmx`): `IVMR_FORMAT` whose
 * `details.line` is the 1-based line number and whose message starts with `<what> line <n>`.
 */
export function lineError(
  what: string,
  line: number,
  message: string,
  details: Record<string, unknown> = {},
): IvmrError {
  return new IvmrError(ErrorCode.FORMAT, `${what} line ${line}: ${message}`, {
    details: { ...details, line },
  });
}

/** A malformed binary structure read from a file: `IVMR_FORMAT` with the file offset. */
export function formatError(
  what: string,
  message: string,
  details: Record<string, unknown> = {},
): IvmrError {
  return new IvmrError(ErrorCode.FORMAT, `${what}: ${message}`, { details });
}
