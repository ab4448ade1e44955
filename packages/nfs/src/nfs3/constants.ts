/** NFSv3 procedure numbers (RFC 1813 §3: `program NFS_PROGRAM { version NFS_V3 { ... } }`). */
export const Nfs3Proc = {
  NULL: 0,
  GETATTR: 1,
  SETATTR: 2,
  LOOKUP: 3,
  ACCESS: 4,
  READLINK: 5,
  READ: 6,
  WRITE: 7,
  CREATE: 8,
  MKDIR: 9,
  SYMLINK: 10,
  MKNOD: 11,
  REMOVE: 12,
  RMDIR: 13,
  RENAME: 14,
  LINK: 15,
  READDIR: 16,
  READDIRPLUS: 17,
  FSSTAT: 18,
  FSINFO: 19,
  PATHCONF: 20,
  COMMIT: 21,
} as const;

/** `NFS3_OK` (nfsstat3). The error statuses are {@link NfsStatus} in filesystem.ts. */
export const NFS3_OK = 0;

/** `const NFS3_FHSIZE = 64;` the largest file handle on the wire. */
export const NFS3_FHSIZE = 64;

/** ACCESS3_* bits of ACCESS3args.access (RFC 1813 §3.3.4). */
export const Access3 = {
  READ: 0x0001,
  LOOKUP: 0x0002,
  MODIFY: 0x0004,
  EXTEND: 0x0008,
  DELETE: 0x0010,
  EXECUTE: 0x0020,
} as const;

/** FSF3_* bits of FSINFO3resok.properties (RFC 1813 §3.3.19). */
export const Fsf3 = {
  LINK: 0x0001,
  SYMLINK: 0x0002,
  HOMOGENEOUS: 0x0008,
  CANSETTIME: 0x0010,
} as const;

/** `enum stable_how { UNSTABLE = 0, DATA_SYNC = 1, FILE_SYNC = 2 };` */
export const StableHow3 = { UNSTABLE: 0, DATA_SYNC: 1, FILE_SYNC: 2 } as const;

/** `enum createmode3 { UNCHECKED = 0, GUARDED = 1, EXCLUSIVE = 2 };` */
export const CreateMode3 = { UNCHECKED: 0, GUARDED: 1, EXCLUSIVE: 2 } as const;

/** `enum time_how { DONT_CHANGE = 0, SET_TO_SERVER_TIME = 1, SET_TO_CLIENT_TIME = 2 };` */
export const TimeHow = { DONT_CHANGE: 0, SET_TO_SERVER_TIME: 1, SET_TO_CLIENT_TIME: 2 } as const;

/**
 * `enum ftype3 { NF3REG = 1, NF3DIR = 2, NF3BLK = 3, NF3CHR = 4, NF3LNK = 5, NF3SOCK = 6,
 * NF3FIFO = 7 };`
 */
export const Ftype3 = {
  NF3REG: 1,
  NF3DIR: 2,
  NF3BLK: 3,
  NF3CHR: 4,
  NF3LNK: 5,
  NF3SOCK: 6,
  NF3FIFO: 7,
} as const;

/**
 * Largest file size and offset the server accepts: offsets travel as JS numbers, exact up to
 * 2^53 - 1 (8 PiB, far above the 64 TiB a VMware datastore needs).
 */
export const MAX_FILE_SIZE = Number.MAX_SAFE_INTEGER;
