import { deflateSync } from 'node:zlib';

/**
 * Writes a streamOptimized VMDK the way VMware's OVF export does (qemu 7.2 does not: it puts the
 * grain directory at the front): header with gdOffset = GD_AT_END, embedded descriptor, one
 * marker + zlib data per non-zero grain, then grain tables and the grain directory each behind
 * its marker, then footer marker, footer (the header with the real gdOffset) and end-of-stream
 * marker. Tests check the result with qemu-img before trusting it as a fixture. Little-endian
 * hosts only (the tables are written from Uint32Arrays).
 */
export interface StreamFile {
  readonly bytes: Buffer;
  /** Byte offset of each written grain's marker, by grain index. */
  readonly grainOffsets: ReadonlyMap<number, number>;
  /** Sector of the grain directory. */
  readonly gdOffset: number;
}

const SECTOR = 512;

function pad(b: Buffer): Buffer {
  const rest = b.length % SECTOR;
  return rest === 0 ? b : Buffer.concat([b, Buffer.alloc(SECTOR - rest)]);
}

function marker(val: number, type: number): Buffer {
  const m = Buffer.alloc(SECTOR);
  m.writeBigUInt64LE(BigInt(val), 0);
  m.writeUInt32LE(0, 8);
  m.writeUInt32LE(type, 12);
  return m;
}

function header(
  capacity: number,
  grainSectors: number,
  descSectors: number,
  gdOffset: bigint,
  overHead: number,
): Buffer {
  const h = Buffer.alloc(SECTOR);
  h.write('KDMV', 0, 'latin1');
  h.writeUInt32LE(3, 4);
  h.writeUInt32LE(0x30001, 8); // newline detection, compressed, markers
  h.writeBigUInt64LE(BigInt(capacity), 12);
  h.writeBigUInt64LE(BigInt(grainSectors), 20);
  h.writeBigUInt64LE(1n, 28);
  h.writeBigUInt64LE(BigInt(descSectors), 36);
  h.writeUInt32LE(512, 44);
  h.writeBigUInt64LE(0n, 48);
  h.writeBigUInt64LE(gdOffset, 56);
  h.writeBigUInt64LE(BigInt(overHead), 64);
  h.write('\n \r\n', 73, 'latin1');
  h.writeUInt16LE(1, 77);
  return h;
}

export function writeStreamOptimized(raw: Uint8Array, grainSectors = 128): StreamFile {
  const capacity = Math.ceil(raw.length / SECTOR);
  const grainBytes = grainSectors * SECTOR;
  const grains = Math.ceil(raw.length / grainBytes);
  const tables = Math.ceil(grains / 512);
  const desc = Buffer.from(
    '# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\ncreateType="streamOptimized"\n\n' +
      `# Extent description\nRW ${capacity} SPARSE "disk.vmdk"\n\n# The Disk Data Base\n#DDB\n\nddb.adapterType = "lsilogic"\n`,
  );
  const descSectors = Math.ceil(desc.length / SECTOR);
  const overHead = 128;
  const parts: Buffer[] = [
    header(capacity, grainSectors, descSectors, 0xffffffffffffffffn, overHead),
  ];
  parts.push(pad(desc));
  parts.push(Buffer.alloc((overHead - 1 - descSectors) * SECTOR));
  let at = overHead * SECTOR;
  const gt = new Uint32Array(tables * 512);
  const grainOffsets = new Map<number, number>();
  for (let g = 0; g < grains; g++) {
    const data = raw.subarray(g * grainBytes, Math.min(raw.length, (g + 1) * grainBytes));
    if (data.every((b) => b === 0)) continue;
    const z = deflateSync(data);
    const m = Buffer.alloc(12);
    m.writeBigUInt64LE(BigInt(g * grainSectors), 0);
    m.writeUInt32LE(z.length, 8);
    const rec = pad(Buffer.concat([m, z]));
    gt[g] = at / SECTOR;
    grainOffsets.set(g, at);
    parts.push(rec);
    at += rec.length;
  }
  const gd = new Uint32Array(tables);
  for (let t = 0; t < tables; t++) {
    // Like VMware, a table whose grains are all zero is not written (directory entry 0).
    if (gt.subarray(t * 512, (t + 1) * 512).every((s) => s === 0)) continue;
    parts.push(marker(4, 1));
    at += SECTOR;
    gd[t] = at / SECTOR;
    const table = Buffer.from(gt.buffer, t * 2048, 2048);
    parts.push(table);
    at += table.length;
  }
  const gdBytes = pad(Buffer.from(gd.buffer));
  parts.push(marker(gdBytes.length / SECTOR, 2));
  at += SECTOR;
  const gdOffset = at / SECTOR;
  parts.push(gdBytes);
  parts.push(
    marker(1, 3),
    header(capacity, grainSectors, descSectors, BigInt(gdOffset), overHead),
    marker(0, 0),
  );
  return { bytes: Buffer.concat(parts), grainOffsets, gdOffset };
}
