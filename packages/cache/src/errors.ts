import { ErrorCode, IvmrError } from '@ivmr/core';

/**
 * The typed "no space" error of this package: the volume (or the overlay's slot space) is full
 * and the write or flush it names was not acknowledged. Every no-space failure of `@ivmr/cache`
 * is made here, so the code it carries changes in one place.
 */
export function noSpaceError(
  message: string,
  details: Record<string, unknown> = {},
  cause?: unknown,
): IvmrError {
  return new IvmrError(ErrorCode.NO_SPACE, message, {
    cause,
    details: { reason: 'ENOSPC', ...details },
  });
}

/**
 * A change refused because the overlay was opened read-only. Core has no dedicated code yet, so
 * it is `IVMR_UNSUPPORTED` with `details.reason = 'EROFS'` (what an NFS server answers as
 * NFS3ERR_ROFS).
 */
export function readOnlyError(what: string): IvmrError {
  return new IvmrError(ErrorCode.UNSUPPORTED, `${what}: the overlay is read-only`, {
    details: { reason: 'EROFS' },
  });
}

/** A call on a closed object. */
export function closedError(what: string): IvmrError {
  return new IvmrError(ErrorCode.CLOSED, `${what} is closed`);
}

/** A malformed on-disk structure (bad magic, checksum, length or version). */
export function formatError(message: string, details: Record<string, unknown> = {}): IvmrError {
  return new IvmrError(ErrorCode.FORMAT, message, { details });
}

/** True for the system errors that mean a full volume or quota. */
export function isNoSpaceCode(code: unknown): boolean {
  return code === 'ENOSPC' || code === 'EDQUOT';
}

/**
 * Wraps an operating-system error: ENOSPC/EDQUOT become {@link noSpaceError}, ENOENT
 * `IVMR_NOT_FOUND`, anything else `IVMR_IO`; the original is kept as `cause`.
 */
export function fromSystemError(err: unknown, what: string, details: Record<string, unknown> = {}) {
  if (err instanceof IvmrError) return err;
  const sysCode = (err as { code?: unknown } | null)?.code;
  if (isNoSpaceCode(sysCode)) return noSpaceError(`${what}: no space left`, details, err);
  if (sysCode === 'ENOENT') {
    return new IvmrError(ErrorCode.NOT_FOUND, `${what}: not found`, { cause: err, details });
  }
  const msg = err instanceof Error ? err.message : String(err);
  return new IvmrError(ErrorCode.IO, `${what}: ${msg}`, {
    cause: err,
    details: { ...details, sysCode },
  });
}
