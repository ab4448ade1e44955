import type { FileAttributes } from '../filesystem.js';
import { Access3 } from './constants.js';

/** The caller as ACCESS sees it (after squashing; AUTH_NONE calls are the anonymous user). */
export interface AccessUser {
  readonly uid: number;
  readonly gid: number;
  readonly gids: readonly number[];
}

/** Which kinds of change the export and its adapter allow at all. */
export interface Writability {
  /** WRITE and SETATTR can change files. */
  readonly files: boolean;
  /** Entries can be added to directories (CREATE, MKDIR, SYMLINK, LINK, RENAME). */
  readonly addEntries: boolean;
  /** Entries can be removed from directories (REMOVE, RMDIR, RENAME). */
  readonly removeEntries: boolean;
}

const ALL_FILE = Access3.READ | Access3.MODIFY | Access3.EXTEND | Access3.EXECUTE;
const ALL_DIR = Access3.READ | Access3.LOOKUP | Access3.MODIFY | Access3.EXTEND | Access3.DELETE;

/**
 * The ACCESS3 bits of `requested` that `user` has on a file, from its mode, owner and group the
 * way a POSIX server decides (RFC 1813 §3.3.4): owner bits for the owner, group bits for a member,
 * other bits for everyone else; root may do everything except execute a file without any execute
 * bit. Never answers a bit that was not requested (libnfs compares the answer with its request),
 * and never MODIFY, EXTEND or DELETE where the export or the adapter cannot change anything.
 */
export function allowedAccess(
  attrs: FileAttributes,
  user: AccessUser,
  writable: Writability,
  requested: number,
): number {
  const dir = attrs.type === 'directory';
  let allowed: number;
  if (user.uid === 0) {
    allowed = dir ? ALL_DIR : ALL_FILE;
    if (!dir && (attrs.mode & 0o111) === 0) allowed &= ~Access3.EXECUTE;
  } else {
    const shift =
      user.uid === attrs.uid ? 6 : user.gid === attrs.gid || user.gids.includes(attrs.gid) ? 3 : 0;
    const bits = (attrs.mode >> shift) & 0o7;
    allowed = 0;
    if (bits & 0o4) allowed |= Access3.READ;
    if (bits & 0o2)
      allowed |= dir
        ? Access3.MODIFY | Access3.EXTEND | Access3.DELETE
        : Access3.MODIFY | Access3.EXTEND;
    if (bits & 0o1) allowed |= dir ? Access3.LOOKUP : Access3.EXECUTE;
  }
  if (dir) {
    if (!writable.addEntries) allowed &= ~(Access3.MODIFY | Access3.EXTEND);
    if (!writable.removeEntries) allowed &= ~Access3.DELETE;
  } else if (!writable.files || attrs.type !== 'file') {
    allowed &= ~(Access3.MODIFY | Access3.EXTEND | Access3.DELETE);
  }
  return allowed & requested;
}
