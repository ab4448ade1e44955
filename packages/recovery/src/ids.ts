/**
 * File ids of the datastore. They must be unique and stable across restarts (ESXi loses a
 * running VM's disk when a handle goes stale), so they are computed, never allocated:
 *
 * ```
 * bits 63..56  kind: 1 root, 2 VM folder, 3 flat extent, 4 file in the session's folder
 * bits 55..40  session number (1..65535, persisted in the session's state)
 * bits 39..0   flat extent: the disk's position in the point; host file: its inode number
 * ```
 * Plain BigInt arithmetic on 64-bit values; no 32-bit bitwise operators.
 */
export enum IdKind {
  Root = 1,
  Folder = 2,
  Flat = 3,
  Host = 4,
}

const KIND = 2n ** 56n;
const SESSION = 2n ** 40n;
/** Largest inode number a host file may have (2^40 - 1). */
export const MAX_LOCAL = SESSION - 1n;
/** Largest session number. */
export const MAX_SESSION = 65535;

/** The id of the datastore's root directory. */
export const ROOT_ID = KIND;

/** Composes an id. */
export function makeId(kind: IdKind, session: number, local: bigint): bigint {
  return BigInt(kind) * KIND + BigInt(session) * SESSION + local;
}

/** Splits an id; `undefined` for a value no datastore id has. */
export function splitId(id: bigint): { kind: IdKind; session: number; local: bigint } | undefined {
  if (id < KIND || id >= 5n * KIND) return undefined;
  const kind = Number(id / KIND) as IdKind;
  const rest = id % KIND;
  return { kind, session: Number(rest / SESSION), local: rest % SESSION };
}
