/**
 * Stable error codes of `@ivmr/nfs`. Match on `error.code`. They share the `IVMR_` namespace and
 * the error brand of the rest of ivmr, so `isIvmrError` from `@ivmr/core` recognises them too,
 * but this package depends on nothing else of ivmr.
 */
export const NfsErrorCode = {
  /** Malformed XDR: truncated data, a length past the end or over its limit, a bad enum. */
  XDR: 'IVMR_XDR',
  /** An RPC record larger than the server accepts, or a broken record mark. */
  RECORD_TOO_LARGE: 'IVMR_RPC_RECORD_TOO_LARGE',
  /** An argument to a server API is out of its domain. */
  INVALID_ARGUMENT: 'IVMR_INVALID_ARGUMENT',
  /** The server could not bind, register with rpcbind, or talk to a peer. */
  IO: 'IVMR_IO',
} as const;

/** One of {@link NfsErrorCode}. */
export type NfsErrorCodeValue = (typeof NfsErrorCode)[keyof typeof NfsErrorCode];

const BRAND = Symbol.for('ivmr.error');

/** An error raised by `@ivmr/nfs`, with a stable `code`. */
export class NfsError extends Error {
  readonly code: NfsErrorCodeValue;
  readonly details: Readonly<Record<string, unknown>>;

  constructor(
    code: NfsErrorCodeValue,
    message: string,
    options: { cause?: unknown; details?: Record<string, unknown> } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'NfsError';
    this.code = code;
    this.details = Object.freeze({ ...(options.details ?? {}) });
    Object.defineProperty(this, BRAND, { value: true });
  }
}

/** An `IVMR_XDR` error. */
export function xdrError(message: string): NfsError {
  return new NfsError(NfsErrorCode.XDR, message);
}
