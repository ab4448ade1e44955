import { describe, expect, it } from 'vitest';
import { fromSystemError } from '../src/errors.js';
import { ErrorCode, IvmrError, isIvmrError } from '../src/index.js';

describe('IvmrError', () => {
  it('carries a code, frozen details and a cause', () => {
    const cause = new Error('disk on fire');
    const err = new IvmrError(ErrorCode.IO, 'reading pack p1', { cause, details: { pack: 'p1' } });
    expect(err).toBeInstanceOf(IvmrError);
    expect(err).toBeInstanceOf(Error);
    expect(err).toMatchObject({ name: 'IvmrError', code: 'IVMR_IO', message: 'reading pack p1' });
    expect(err.cause).toBe(cause);
    expect(err.details).toEqual({ pack: 'p1' });
    expect(Object.isFrozen(err.details)).toBe(true);
    expect(new IvmrError(ErrorCode.RANGE, 'x').details).toEqual({});
  });

  it('instanceof works across a duplicate copy of the class (the Symbol.for brand)', async () => {
    // A second instance of the module, as a duplicate install of @ivmr/core would load (the
    // query makes the loader treat it as another module; a variable keeps tsc from resolving it).
    const duplicate = '../src/errors.js?duplicate';
    const copy = (await import(duplicate)) as typeof import('../src/errors.js');
    expect(copy.IvmrError).not.toBe(IvmrError);
    const foreign = new copy.IvmrError(copy.ErrorCode.NOT_FOUND, 'from the other copy');
    expect(foreign).toBeInstanceOf(IvmrError);
    expect(isIvmrError(foreign, ErrorCode.NOT_FOUND)).toBe(true);
    expect(new IvmrError(ErrorCode.RANGE, 'ours')).toBeInstanceOf(copy.IvmrError);

    // Any object carrying the brand counts; nothing else does.
    const branded = { code: 'IVMR_LOCKED', [Symbol.for('ivmr.error')]: true };
    expect(branded instanceof IvmrError).toBe(true);
    expect(isIvmrError(branded, ErrorCode.LOCKED)).toBe(true);
    expect(isIvmrError(branded, ErrorCode.IO)).toBe(false);
    for (const other of [new Error('plain'), { code: 'IVMR_IO' }, null, undefined, 'IVMR_IO', 7]) {
      expect(other instanceof IvmrError).toBe(false);
      expect(isIvmrError(other)).toBe(false);
    }
  });

  it('codes are stable strings (they are public API: changing one breaks users)', () => {
    expect(ErrorCode).toEqual({
      INVALID_ARGUMENT: 'IVMR_INVALID_ARGUMENT',
      RANGE: 'IVMR_RANGE',
      NOT_FOUND: 'IVMR_NOT_FOUND',
      EXISTS: 'IVMR_EXISTS',
      CHUNK_CORRUPT: 'IVMR_CHUNK_CORRUPT',
      FORMAT: 'IVMR_FORMAT',
      LOCKED: 'IVMR_LOCKED',
      UNSUPPORTED: 'IVMR_UNSUPPORTED',
      IO: 'IVMR_IO',
      CLOSED: 'IVMR_CLOSED',
      ABORTED: 'IVMR_ABORTED',
      NO_SPACE: 'IVMR_NOSPC',
    });
  });

  it('system errors map to NOT_FOUND, EXISTS, NO_SPACE or IO, keeping the original as cause', () => {
    const sys = (code: string) => Object.assign(new Error(code), { code });
    const enoent = sys('ENOENT');
    expect(fromSystemError(enoent, 'file f', { path: 'f' })).toMatchObject({
      code: ErrorCode.NOT_FOUND,
      cause: enoent,
      details: { path: 'f' },
    });
    expect(fromSystemError(sys('EEXIST'), 'file f')).toMatchObject({ code: ErrorCode.EXISTS });
    expect(fromSystemError(sys('ENOSPC'), 'file f')).toMatchObject({ code: ErrorCode.NO_SPACE });
    expect(fromSystemError(sys('EACCES'), 'file f')).toMatchObject({
      code: ErrorCode.IO,
      details: { sysCode: 'EACCES' },
    });
    const ours = new IvmrError(ErrorCode.RANGE, 'kept');
    expect(fromSystemError(ours, 'anything')).toBe(ours);
  });
});
