import { expect } from 'vitest';

/**
 * Asserts two byte arrays are equal; on a difference it names the first differing offset
 * instead of printing both buffers.
 */
export function expectBytes(actual: Uint8Array, expected: Uint8Array, label = 'bytes'): void {
  expect(actual.length, `${label}: length`).toBe(expected.length);
  const a = Buffer.from(actual.buffer, actual.byteOffset, actual.byteLength);
  const e = Buffer.from(expected.buffer, expected.byteOffset, expected.byteLength);
  if (a.equals(e)) return;
  let i = 0;
  while (a[i] === e[i]) i++;
  expect.fail(`${label}: first difference at byte ${i} (got ${a[i]}, want ${e[i]})`);
}
