import { xdrError } from '../errors.js';
import type { XdrReader } from '../xdr/reader.js';
import type { XdrWriter } from '../xdr/writer.js';

// RFC 5531 §9: enum msg_type { CALL = 0, REPLY = 1 };
export const CALL = 0;
export const REPLY = 1;
// enum reply_stat { MSG_ACCEPTED = 0, MSG_DENIED = 1 };
export const MSG_ACCEPTED = 0;
export const MSG_DENIED = 1;

/** enum accept_stat (RFC 5531 §9). */
export const AcceptStat = {
  SUCCESS: 0,
  PROG_UNAVAIL: 1,
  PROG_MISMATCH: 2,
  PROC_UNAVAIL: 3,
  GARBAGE_ARGS: 4,
  SYSTEM_ERR: 5,
} as const;

/** enum reject_stat (RFC 5531 §9). */
export const RejectStat = { RPC_MISMATCH: 0, AUTH_ERROR: 1 } as const;

/** enum auth_stat (RFC 5531 §9). */
export const AuthStat = {
  AUTH_OK: 0,
  AUTH_BADCRED: 1,
  AUTH_REJECTEDCRED: 2,
  AUTH_BADVERF: 3,
  AUTH_REJECTEDVERF: 4,
  AUTH_TOOWEAK: 5,
  AUTH_INVALIDRESP: 6,
  AUTH_FAILED: 7,
} as const;

/** enum auth_flavor (RFC 5531 §8.2). */
export const AuthFlavor = { AUTH_NONE: 0, AUTH_SYS: 1, AUTH_SHORT: 2 } as const;

/** AUTH_SYS credentials (RFC 5531 appendix A, authsys_parms). */
export interface AuthSys {
  readonly stamp: number;
  readonly machineName: string;
  readonly uid: number;
  readonly gid: number;
  readonly gids: readonly number[];
}

/** The fixed part of a CALL message, decoded. */
export interface CallHeader {
  readonly xid: number;
  readonly rpcvers: number;
  readonly prog: number;
  readonly vers: number;
  readonly proc: number;
  readonly credFlavor: number;
  readonly credBody: Buffer;
  readonly verfFlavor: number;
}

/**
 * Decodes `struct rpc_msg` up to the procedure arguments:
 * ```
 * struct call_body { unsigned int rpcvers; unsigned int prog; unsigned int vers;
 *                    unsigned int proc; opaque_auth cred; opaque_auth verf; };
 * struct opaque_auth { auth_flavor flavor; opaque body<400>; };
 * ```
 * Returns null for a message that is not a CALL (a server ignores those).
 */
export function readCallHeader(r: XdrReader): CallHeader | null {
  const xid = r.u32('xid');
  if (r.u32('msg_type') !== CALL) return null;
  const rpcvers = r.u32('rpcvers');
  const prog = r.u32('prog');
  const vers = r.u32('vers');
  const proc = r.u32('proc');
  const credFlavor = r.u32('cred flavor');
  const credBody = r.opaque(400, 'cred body');
  const verfFlavor = r.u32('verf flavor');
  r.opaque(400, 'verf body');
  return { xid, rpcvers, prog, vers, proc, credFlavor, credBody, verfFlavor };
}

/** Decodes an AUTH_SYS credential body (`authsys_parms`). Throws `IVMR_XDR` when malformed. */
export function readAuthSys(r: XdrReader): AuthSys {
  const stamp = r.u32('stamp');
  const machineName = r.string(255, 'machinename');
  const uid = r.u32('uid');
  const gid = r.u32('gid');
  const n = r.u32('gids count');
  if (n > 16) throw xdrError(`AUTH_SYS carries ${n} gids, at most 16 are allowed`);
  const gids: number[] = [];
  for (let i = 0; i < n; i++) gids.push(r.u32('gid'));
  return { stamp, machineName, uid, gid, gids };
}

/** Writes the reply header of an accepted call: xid, REPLY, MSG_ACCEPTED, AUTH_NONE verifier, stat. */
export function writeAcceptedHeader(w: XdrWriter, xid: number, stat: number): void {
  w.u32(xid).u32(REPLY).u32(MSG_ACCEPTED).u32(AuthFlavor.AUTH_NONE).u32(0).u32(stat);
}

/** Writes a MSG_DENIED reply: RPC_MISMATCH with the supported range, or AUTH_ERROR with a stat. */
export function writeDenied(
  w: XdrWriter,
  xid: number,
  reject: { rpcMismatch: true } | { authStat: number },
): void {
  w.u32(xid).u32(REPLY).u32(MSG_DENIED);
  if ('rpcMismatch' in reject) w.u32(RejectStat.RPC_MISMATCH).u32(2).u32(2);
  else w.u32(RejectStat.AUTH_ERROR).u32(reject.authStat);
}
