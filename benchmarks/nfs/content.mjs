/**
 * The benchmark file's bytes: an AES-256-CTR keystream of the seed, so every 4 KiB block differs
 * from every other (a read at the wrong offset cannot pass the check) and both servers serve
 * exactly the same bytes, made the same way in two processes.
 */
import { createCipheriv, createHash } from 'node:crypto';

const CHUNK = 16 * 1024 * 1024;

/**
 * Calls `sink` with the file's bytes in order, `CHUNK` at a time. The buffer handed to `sink` is
 * valid only during the call.
 * @param {number} size
 * @param {number} seed
 * @param {(chunk: Buffer, offset: number) => void} sink
 */
export function generate(size, seed, sink) {
  const key = createHash('sha256').update(`ivmr-bench-nfs\0${seed}`).digest();
  const cipher = createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
  const zeros = Buffer.alloc(Math.min(CHUNK, size));
  const out = Buffer.allocUnsafe(zeros.length);
  for (let offset = 0; offset < size; offset += CHUNK) {
    const n = Math.min(CHUNK, size - offset);
    const written = cipher.update(zeros.subarray(0, n)).copy(out);
    sink(out.subarray(0, written), offset);
  }
}

/**
 * The whole file in one buffer.
 * @param {number} size
 * @param {number} seed
 */
export function contentBuffer(size, seed) {
  const buf = Buffer.allocUnsafe(size);
  generate(size, seed, (chunk, offset) => chunk.copy(buf, offset));
  return buf;
}
