import { createHash, createHmac, timingSafeEqual } from 'node:crypto';

/** ESXi accepts file handles of at most 56 bytes (NFS3_FHSIZE is 64). */
export const MAX_HANDLE_SIZE = 56;

const VERSION = 1;
const MAC_SIZE = 16;
/** Handles {@link HandleCodec} remembers as checked. */
const KNOWN_HANDLES = 4096;
/** version u8, 3 reserved bytes, export id u32, file id u64, MAC. */
export const HANDLE_SIZE = 1 + 3 + 4 + 8 + MAC_SIZE;

/** What a valid handle names. */
export interface DecodedHandle {
  readonly exportId: number;
  readonly fileId: bigint;
}

/**
 * Turns (export, file id) into NFS file handles and back. A handle is a pure function of the
 * export, the file id and the key: no start-time generation and no table, so handles stay valid
 * across restarts as long as the key and the adapter's file ids do. The last 16 bytes are an
 * HMAC-SHA-256 over the rest, so a client cannot forge a handle for another file or export, and
 * a handle from a server with another key is rejected.
 */
export class HandleCodec {
  readonly #key: Buffer;
  /**
   * Handles issued or verified lately, by their bytes: an HMAC per call costs more than the rest
   * of a small READ's decoding. Only exact byte strings that passed the check are kept, so a
   * hit proves what the MAC would. Cleared when full.
   */
  readonly #known = new Map<string, DecodedHandle>();

  /** `key`: at least 16 secret bytes; keep them stable across restarts. */
  constructor(key: Uint8Array) {
    if (key.length < 16) throw new RangeError('file handle key must have at least 16 bytes');
    this.#key = Buffer.from(key);
  }

  /** Encodes a handle (HANDLE_SIZE bytes). */
  encode(exportId: number, fileId: bigint): Buffer {
    const h = Buffer.alloc(HANDLE_SIZE);
    h.writeUInt8(VERSION, 0);
    h.writeUInt32BE(exportId, 4);
    h.writeBigUInt64BE(fileId, 8);
    this.#mac(h.subarray(0, 16)).copy(h, 16);
    this.#remember(h, { exportId, fileId });
    return h;
  }

  /**
   * Decodes a handle: `'bad'` when it is not shaped like one of ours (NFS3ERR_BADHANDLE),
   * `'stale'` when its signature does not match (another server, tampered; NFS3ERR_STALE).
   */
  decode(handle: Uint8Array): DecodedHandle | 'bad' | 'stale' {
    if (handle.length !== HANDLE_SIZE) return 'bad';
    const h = Buffer.from(handle.buffer, handle.byteOffset, handle.byteLength);
    const known = this.#known.get(h.toString('latin1'));
    if (known !== undefined) return known;
    if (h[0] !== VERSION || h[1] !== 0 || h[2] !== 0 || h[3] !== 0) return 'bad';
    if (!timingSafeEqual(this.#mac(h.subarray(0, 16)), h.subarray(16))) return 'stale';
    const decoded = { exportId: h.readUInt32BE(4), fileId: h.readBigUInt64BE(8) };
    this.#remember(h, decoded);
    return decoded;
  }

  #remember(h: Buffer, decoded: DecodedHandle): void {
    if (this.#known.size >= KNOWN_HANDLES) this.#known.clear();
    this.#known.set(h.toString('latin1'), decoded);
  }

  #mac(body: Buffer): Buffer {
    return createHmac('sha256', this.#key).update(body).digest().subarray(0, MAC_SIZE);
  }
}

/** A stable export id (u32) for an export path: the same path always gives the same id. */
export function exportIdOf(path: string): number {
  return createHash('sha256').update(`ivmr-nfs-export\0${path}`).digest().readUInt32BE(0);
}
