import { hasBinary } from '../text.js';
import {
  CREATE_TYPES,
  EXTENT_TYPES,
  type ExtentType,
  MAX_SECTORS,
  type VmdkExtent,
} from './model.js';

// The rules an extent line and a value must follow, shared by the parser (which reports a
// broken rule as a format error naming the line) and the writer (which refuses to emit it), so
// that whatever formatDescriptor writes, parseDescriptor reads back.

/** Why `value` cannot stand between the double quotes of a descriptor entry, or undefined. */
export function valueProblem(value: string): string | undefined {
  if (value.includes('"')) return 'a value cannot contain a double quote (" has no escape here)';
  if (hasBinary(value)) return 'a value cannot contain a line break or control character';
  return undefined;
}

/** Why `e` is not a valid extent, or undefined. */
export function extentProblem(e: VmdkExtent): string | undefined {
  if (!Number.isSafeInteger(e.sectors) || e.sectors <= 0) {
    return `the sector count must be a whole number > 0, got ${e.sectors}`;
  }
  if (e.sectors > MAX_SECTORS) {
    return `the sector count ${e.sectors} is too large: ${MAX_SECTORS} sectors (2^53 bytes) at most`;
  }
  if (!(EXTENT_TYPES as readonly string[]).includes(e.type)) {
    return `unknown extent type ${e.type} (one of ${EXTENT_TYPES.join(', ')})`;
  }
  if (e.type === 'ZERO') {
    if (e.fileName !== undefined) return 'a ZERO extent has no file name';
  } else if (e.fileName === undefined || e.fileName === '') {
    return `a ${e.type} extent needs a file name in double quotes`;
  } else {
    const bad = valueProblem(e.fileName);
    if (bad) return `file name: ${bad}`;
  }
  if (e.type === 'FLAT') {
    if (e.offset === undefined) {
      return 'a FLAT extent needs its offset in sectors after the file name (qemu requires it)';
    }
    if (!Number.isSafeInteger(e.offset) || e.offset < 0 || e.offset > MAX_SECTORS) {
      return `the offset must be a whole number of sectors >= 0, got ${e.offset}`;
    }
  } else if (e.offset !== undefined) {
    return e.type === 'VMFS'
      ? 'a VMFS extent takes no offset (qemu rejects "VMFS ... 0" as an invalid extent line)'
      : `a ${e.type} extent takes no offset`;
  }
  return undefined;
}

/** Why extent type `type` cannot appear under `createType`, or undefined. */
export function extentTypeProblem(createType: string, type: ExtentType): string | undefined {
  const allowed = CREATE_TYPES[createType];
  if (!allowed || type === 'ZERO' || allowed.includes(type)) return undefined;
  return `createType "${createType}" takes ${allowed.join(' or ')} extents, not ${type}`;
}

/** Why `createType` is not a known create type, or undefined. */
export function createTypeProblem(createType: string): string | undefined {
  if (Object.hasOwn(CREATE_TYPES, createType)) return undefined;
  return `unknown createType "${createType}" (one of ${Object.keys(CREATE_TYPES).join(', ')})`;
}

/** Why `cid` is not a content id (1 to 8 hex digits), or undefined. */
export function cidProblem(cid: string): string | undefined {
  return /^[0-9a-fA-F]{1,8}$/.test(cid)
    ? undefined
    : `a content id is 1-8 hex digits, got "${cid}"`;
}

/** A content id as 8 lowercase hex digits (qemu writes it without leading zeros). */
export function normalizeCid(cid: string): string {
  return cid.toLowerCase().padStart(8, '0');
}
