import { isUtf8 } from 'node:buffer';
import { NfsStatusError } from '../filesystem.js';

/** NAME_MAX: the longest name, in bytes, that the server accepts (PATHCONF name_max). */
export const NAME_MAX = 255;

/** What a checked name is: an ordinary name, or `.` / `..` (which the server answers itself). */
export type CheckedName =
  | { readonly kind: 'name'; readonly name: string }
  | { readonly kind: '.' | '..' };

const SLASH = 0x2f;
const DOT = 0x2e;

/**
 * Checks a filename3 from the wire. Longer than {@link NAME_MAX} bytes: NFS3ERR_NAMETOOLONG.
 * Empty, containing `/` or NUL, or not UTF-8 (adapters take names as strings): NFS3ERR_ACCES,
 * as Linux's knfsd answers for empty names and names with a slash.
 */
export function checkName(raw: Uint8Array): CheckedName {
  const n = raw.length;
  if (n === 0) throw NfsStatusError.of('ACCES', 'empty file name');
  if (n > NAME_MAX) throw NfsStatusError.of('NAMETOOLONG');
  if (raw[0] === DOT && (n === 1 || (n === 2 && raw[1] === DOT)))
    return { kind: n === 1 ? '.' : '..' };
  if (raw.includes(SLASH) || raw.includes(0)) {
    throw NfsStatusError.of('ACCES', 'file name contains / or NUL');
  }
  if (!isUtf8(raw)) throw NfsStatusError.of('ACCES', 'file name is not UTF-8');
  return { kind: 'name', name: Buffer.from(raw.buffer, raw.byteOffset, n).toString('utf8') };
}

/**
 * A name for an entry to create (CREATE, MKDIR, SYMLINK, MKNOD, LINK): `.` and `..` always exist,
 * so they answer NFS3ERR_EXIST.
 */
export function newEntryName(raw: Uint8Array): string {
  const c = checkName(raw);
  if (c.kind !== 'name') throw NfsStatusError.of('EXIST', `${c.kind} always exists`);
  return c.name;
}

/**
 * A name of an entry to remove or rename (REMOVE, RMDIR, RENAME): `.` and `..` cannot be
 * removed or moved: NFS3ERR_INVAL (RFC 1813 §3.3.13 lists it for RMDIR).
 */
export function existingEntryName(raw: Uint8Array): string {
  const c = checkName(raw);
  if (c.kind !== 'name') throw NfsStatusError.of('INVAL', `${c.kind} cannot be removed or renamed`);
  return c.name;
}
