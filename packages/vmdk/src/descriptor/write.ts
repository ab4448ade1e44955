import { ErrorCode, IvmrError } from '@ivmr/core';
import { MAX_SECTORS, type VmdkDescriptor, type VmdkExtent } from './model.js';
import {
  cidProblem,
  createTypeProblem,
  extentProblem,
  extentTypeProblem,
  normalizeCid,
  valueProblem,
} from './rules.js';

const KEY = /^[A-Za-z][A-Za-z0-9_.]*$/;
/** Header entries VMware writes between `version` and `CID`, and just before `createType`. */
const BEFORE_CID = ['encoding'];
const BEFORE_CREATE_TYPE = ['isNativeSnapshot'];

/**
 * Writes a descriptor as text, in the layout VMware and qemu write: `version=` first, then
 * `encoding`, `CID`, `parentCID` (in that order: qemu finds `CID=` by searching the text),
 * `createType="..."` without spaces, the extent lines, then the disk database. No comment
 * mentions createType. {@link parseDescriptor} reads the result back to an equal descriptor.
 *
 * @throws IvmrError `IVMR_UNSUPPORTED` for `version` 3 (qemu opens change-tracking descriptors
 *   read-only); `IVMR_INVALID_ARGUMENT` for anything the parser would reject (a value holding
 *   a double quote or line break, a FLAT extent without offset, a VMFS extent with one, no RW
 *   extent, an unknown createType, ...).
 */
export function formatDescriptor(d: VmdkDescriptor): string {
  check(d);
  const entry = (key: string) => `${key}="${d.header[key]}"`;
  const has = (key: string) => Object.hasOwn(d.header, key);
  const lines = ['# Disk DescriptorFile', `version=${d.version}`];
  for (const key of BEFORE_CID) if (has(key)) lines.push(entry(key));
  lines.push(`CID=${normalizeCid(d.cid)}`, `parentCID=${normalizeCid(d.parentCid)}`);
  for (const key of BEFORE_CREATE_TYPE) if (has(key)) lines.push(entry(key));
  lines.push(`createType="${d.createType}"`);
  for (const key of Object.keys(d.header)) {
    if (!BEFORE_CID.includes(key) && !BEFORE_CREATE_TYPE.includes(key)) lines.push(entry(key));
  }
  lines.push('', '# Extent description', ...d.extents.map(extentLine));
  lines.push('', '# The Disk Data Base', '#DDB', '');
  for (const [key, value] of Object.entries(d.ddb)) lines.push(`ddb.${key} = "${value}"`);
  return `${lines.join('\n')}\n`;
}

function extentLine(e: VmdkExtent): string {
  let line = `${e.access} ${e.sectors} ${e.type}`;
  if (e.fileName !== undefined) line += ` "${e.fileName}"`;
  if (e.offset !== undefined) line += ` ${e.offset}`;
  return line;
}

function invalid(message: string): IvmrError {
  return new IvmrError(ErrorCode.INVALID_ARGUMENT, `cannot write VMDK descriptor: ${message}`);
}

function check(d: VmdkDescriptor): void {
  if (d.version === 3) {
    throw new IvmrError(
      ErrorCode.UNSUPPORTED,
      'cannot write a version=3 descriptor: qemu opens change-tracking descriptors read-only; write version=1',
    );
  }
  if (d.version !== 1 && d.version !== 2) throw invalid(`version must be 1 or 2, got ${d.version}`);
  for (const cid of [d.cid, d.parentCid]) {
    const problem = cidProblem(cid);
    if (problem) throw invalid(problem);
  }
  const typeProblem = createTypeProblem(d.createType);
  if (typeProblem) throw invalid(typeProblem);
  for (const [key, value] of Object.entries(d.header)) {
    if (
      !KEY.test(key) ||
      key.startsWith('ddb.') ||
      ['version', 'CID', 'parentCID', 'createType'].includes(key)
    ) {
      throw invalid(`"${key}" cannot be a header entry`);
    }
    const problem = valueProblem(value);
    if (problem) throw invalid(`${key}: ${problem}`);
  }
  if (d.extents.length === 0) throw invalid('a descriptor needs at least one extent');
  for (const e of d.extents) {
    const problem =
      (e.access === 'RW' || e.access === 'RDONLY' || e.access === 'NOACCESS'
        ? undefined
        : `unknown access ${String(e.access)}`) ??
      extentProblem(e) ??
      extentTypeProblem(d.createType, e.type);
    if (problem) throw invalid(problem);
  }
  if (d.extents.reduce((sum, e) => sum + e.sectors, 0) > MAX_SECTORS) {
    throw invalid(`the extents add up to more than ${MAX_SECTORS} sectors (2^53 bytes)`);
  }
  if (!d.extents.some((e) => e.access === 'RW')) {
    throw invalid('no RW extent: qemu aborts on a descriptor with only RDONLY extents');
  }
  for (const [key, value] of Object.entries(d.ddb)) {
    if (!KEY.test(key)) throw invalid(`"ddb.${key}" is not a valid disk database key`);
    const problem = valueProblem(value);
    if (problem) throw invalid(`ddb.${key}: ${problem}`);
  }
}
