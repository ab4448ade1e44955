/**
 * Stable error codes. Match on `error.code`, never on the class or the message: codes are part of
 * the public API and do not change between releases; messages may.
 */
export const ErrorCode = {
  /** An argument is out of its documented domain (bad size, bad name, bad option). */
  INVALID_ARGUMENT: 'IVMR_INVALID_ARGUMENT',
  /** A read or write past the end of a block source or file. */
  RANGE: 'IVMR_RANGE',
  /** A repository, VM, restore point, disk, object or blob does not exist. */
  NOT_FOUND: 'IVMR_NOT_FOUND',
  /** Something that must be created new exists already. */
  EXISTS: 'IVMR_EXISTS',
  /** A stored blob failed its checksum, its hash or its decoded length: its bytes are never served. */
  CHUNK_CORRUPT: 'IVMR_CHUNK_CORRUPT',
  /** A metadata object (config, index, map, point, pack header) is malformed or from an unknown version. */
  FORMAT: 'IVMR_FORMAT',
  /** Another process holds a conflicting repository lock. */
  LOCKED: 'IVMR_LOCKED',
  /** The operation is valid but not supported by this store, codec or version. */
  UNSUPPORTED: 'IVMR_UNSUPPORTED',
  /** An I/O call of the operating system or of a store failed. `cause` holds the original error. */
  IO: 'IVMR_IO',
  /** The object was closed before or during the call. */
  CLOSED: 'IVMR_CLOSED',
  /** The caller aborted the operation (AbortSignal); `cause` holds the signal's reason. */
  ABORTED: 'IVMR_ABORTED',
  /** No space left on the device or in the store; the write was not acknowledged. */
  NO_SPACE: 'IVMR_NOSPC',
} as const;

/** One of the stable codes in {@link ErrorCode}. */
export type ErrorCodeValue = (typeof ErrorCode)[keyof typeof ErrorCode];

const BRAND = Symbol.for('ivmr.error');

/**
 * The one error class of ivmr. Every failure that ivmr raises on purpose is an `IvmrError` with a
 * stable {@link ErrorCode} in `code` and, where useful, machine-readable `details` (the blob id,
 * the disk and byte range of a corrupt block, the path of a missing file).
 *
 * `instanceof IvmrError` works across duplicate installs of the package (it checks a
 * `Symbol.for` brand), but prefer `isIvmrError(e, code)`.
 */
export class IvmrError extends Error {
  /** Stable machine-readable code. */
  readonly code: ErrorCodeValue;
  /** Structured context: ids, paths, ranges. Never contains data bytes. */
  readonly details: Readonly<Record<string, unknown>>;

  constructor(
    code: ErrorCodeValue,
    message: string,
    options: { cause?: unknown; details?: Record<string, unknown> } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'IvmrError';
    this.code = code;
    this.details = Object.freeze({ ...(options.details ?? {}) });
    Object.defineProperty(this, BRAND, { value: true });
  }

  static override [Symbol.hasInstance](value: unknown): boolean {
    return typeof value === 'object' && value !== null && BRAND in value;
  }
}

/** True when `value` is an {@link IvmrError}, and when `code` is given, one with that code. */
export function isIvmrError(value: unknown, code?: ErrorCodeValue): value is IvmrError {
  return value instanceof IvmrError && (code === undefined || value.code === code);
}

/** Wraps an operating-system error (ENOENT becomes NOT_FOUND, others IO), keeping it as `cause`. */
export function fromSystemError(
  err: unknown,
  what: string,
  details: Record<string, unknown> = {},
): IvmrError {
  if (err instanceof IvmrError) return err;
  const sysCode = (err as { code?: unknown })?.code;
  if (sysCode === 'ENOENT') {
    return new IvmrError(ErrorCode.NOT_FOUND, `${what}: not found`, { cause: err, details });
  }
  if (sysCode === 'ENOSPC' || sysCode === 'EDQUOT') {
    return new IvmrError(ErrorCode.NO_SPACE, `${what}: no space left`, { cause: err, details });
  }
  if (sysCode === 'EEXIST') {
    return new IvmrError(ErrorCode.EXISTS, `${what}: already exists`, { cause: err, details });
  }
  const msg = err instanceof Error ? err.message : String(err);
  return new IvmrError(ErrorCode.IO, `${what}: ${msg}`, {
    cause: err,
    details: { ...details, sysCode },
  });
}
