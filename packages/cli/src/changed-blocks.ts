import { readFile } from 'node:fs/promises';
import { ErrorCode, IvmrError } from '@ivmr/core';

/** One changed byte range of a disk. */
export interface ChangedRange {
  readonly offset: number;
  readonly length: number;
}

/**
 * Parses a changed-block list (VMware CBT style) into byte ranges. Accepted forms:
 *
 * - JSON: an array of ranges, or an object with a `changedArea` array (the shape of VMware's
 *   `QueryChangedDiskAreas` result). A range is `{"start": N, "length": N}` or
 *   `{"offset": N, "length": N}`; N is a number or a decimal or `0x` hex string.
 * - Text: one `OFFSET LENGTH` pair per line (decimal or `0x` hex, separated by spaces, tabs or a
 *   comma); `#` starts a comment; blank lines are ignored.
 *
 * `source` names the input in error messages. Bad input is `IVMR_INVALID_ARGUMENT`.
 */
export function parseChangedBlocks(text: string, source: string): ChangedRange[] {
  const trimmed = text.trim();
  if (trimmed.startsWith('[') || trimmed.startsWith('{')) return parseJson(trimmed, source);
  const ranges: ChangedRange[] = [];
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const content = lines[i]!.replace(/#.*/, '').trim();
    if (content === '') continue;
    const where = `${source} line ${i + 1}`;
    const fields = content.split(/[\s,]+/);
    if (fields.length !== 2) throw invalid(where, `expected "OFFSET LENGTH", got "${content}"`);
    ranges.push(range(fields[0], fields[1], where));
  }
  return ranges;
}

/** Reads and parses a changed-block list file; see {@link parseChangedBlocks}. */
export async function readChangedBlocks(path: string): Promise<ChangedRange[]> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    const missing = (err as { code?: string }).code === 'ENOENT';
    throw new IvmrError(
      missing ? ErrorCode.NOT_FOUND : ErrorCode.IO,
      `changed-blocks file ${path}: ${missing ? 'not found' : (err as Error).message}`,
      { cause: err, details: { path } },
    );
  }
  return parseChangedBlocks(text, `changed-blocks file ${path}`);
}

/** Throws `IVMR_INVALID_ARGUMENT` when a range passes the end of a `size`-byte image. */
export function checkRangesWithin(
  ranges: readonly ChangedRange[],
  size: number,
  what: string,
): void {
  const bad = ranges.find((r) => r.offset + r.length > size);
  if (bad) {
    throw new IvmrError(
      ErrorCode.INVALID_ARGUMENT,
      `changed range ${bad.offset}+${bad.length} passes the end of ${what} (${size} bytes): is the list for another disk?`,
    );
  }
}

function parseJson(text: string, source: string): ChangedRange[] {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw invalid(source, `not valid JSON (${(err as Error).message})`);
  }
  const list =
    typeof value === 'object' && value !== null && !Array.isArray(value)
      ? (value as { changedArea?: unknown }).changedArea
      : value;
  if (!Array.isArray(list)) {
    throw invalid(source, 'expected an array of ranges or an object with a changedArea array');
  }
  return list.map((item: unknown, i) => {
    const where = `${source} range ${i}`;
    if (typeof item !== 'object' || item === null) throw invalid(where, 'not an object');
    const r = item as { start?: unknown; offset?: unknown; length?: unknown };
    return range(r.start ?? r.offset, r.length, where);
  });
}

function range(offset: unknown, length: unknown, where: string): ChangedRange {
  const r = { offset: number(offset, 'offset', where), length: number(length, 'length', where) };
  if (!Number.isSafeInteger(r.offset + r.length)) throw invalid(where, 'range end is too large');
  return r;
}

function number(value: unknown, field: string, where: string): number {
  let n = Number.NaN;
  if (typeof value === 'number') n = value;
  else if (typeof value === 'string' && /^(?:\d+|0x[0-9a-f]+)$/i.test(value.trim()))
    n = Number(value.trim());
  if (!Number.isSafeInteger(n) || n < 0) {
    throw invalid(where, `${field} must be a whole number >= 0, got ${JSON.stringify(value)}`);
  }
  return n;
}

function invalid(where: string, why: string): IvmrError {
  return new IvmrError(ErrorCode.INVALID_ARGUMENT, `${where}: ${why}`);
}
