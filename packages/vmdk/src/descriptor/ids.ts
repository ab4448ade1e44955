import { createHash } from 'node:crypto';
import { ErrorCode, IvmrError } from '@ivmr/core';

/**
 * What identifies a disk of a restore point. The same four strings always give the same ids, so
 * a datastore serves byte-identical descriptors for a point across restarts, and two points (or
 * two repositories holding the same VM) never share a disk uuid.
 */
export interface DiskIdentity {
  /** Repository id (or any stable name of the backup store). */
  readonly repository: string;
  /** VM name. */
  readonly vm: string;
  /** Restore point id. */
  readonly point: string;
  /** Disk name within the point. */
  readonly disk: string;
}

/** The ids a descriptor carries, derived from a {@link DiskIdentity}. */
export interface DiskIds {
  /** `CID`: 8 lowercase hex digits, the last 8 of `longContentId`; never ffffffff or fffffffe. */
  readonly cid: string;
  /** `ddb.longContentID`: 32 lowercase hex digits. */
  readonly longContentId: string;
  /**
   * `ddb.uuid`: 16 bytes as spaced hex with a dash after the 8th byte, starting with VMware's
   * `60 00 C2` prefix, e.g. `60 00 C2 9b 6e 3a 41 5f-8c 14 0e 0c 3b 5d 7a 21`.
   */
  readonly uuid: string;
}

/** CIDs with a meaning: "no parent" and VMware's CID of a disk never written. */
const RESERVED_CIDS = new Set(['ffffffff', 'fffffffe', '00000000']);

/**
 * Derives a disk's descriptor ids from its identity: SHA-256 of the four strings (length-framed
 * by JSON, so no two different inputs collide by concatenation). Pure and deterministic.
 */
export function deriveDiskIds(identity: DiskIdentity): DiskIds {
  const parts = [identity.repository, identity.vm, identity.point, identity.disk];
  if (!parts.every((p) => typeof p === 'string' && p.length > 0)) {
    throw new IvmrError(
      ErrorCode.INVALID_ARGUMENT,
      'a disk identity needs non-empty repository, vm, point and disk strings',
    );
  }
  const hash = createHash('sha256')
    .update(`ivmr-vmdk-ids\n${JSON.stringify(parts)}`)
    .digest();
  let cid = hash.subarray(28, 32).toString('hex');
  // A reserved CID has odds of 3 in 2^32; fall back to other bytes of the hash deterministically.
  for (let at = 0; RESERVED_CIDS.has(cid); at += 4) cid = hash.subarray(at, at + 4).toString('hex');
  const longContentId = hash.subarray(16, 28).toString('hex') + cid;
  const uuid = Buffer.concat([Buffer.from([0x60, 0x00, 0xc2]), hash.subarray(0, 13)]);
  const hex = [...uuid].map((b) => b.toString(16).padStart(2, '0'));
  hex[2] = 'C2'; // VMware writes its prefix as "60 00 C2", the rest in lowercase
  return { cid, longContentId, uuid: `${hex.slice(0, 8).join(' ')}-${hex.slice(8).join(' ')}` };
}
