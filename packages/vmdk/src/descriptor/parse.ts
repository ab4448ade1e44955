import { ErrorCode, IvmrError } from '@ivmr/core';
import { lineError } from '../errors.js';
import { hasBinary } from '../text.js';
import {
  EXTENT_TYPES,
  type ExtentAccess,
  type ExtentType,
  MAX_SECTORS,
  type VmdkDescriptor,
  type VmdkExtent,
} from './model.js';
import {
  cidProblem,
  createTypeProblem,
  extentProblem,
  extentTypeProblem,
  normalizeCid,
  valueProblem,
} from './rules.js';

/** Largest descriptor accepted; qemu reads at most 1 MiB of a descriptor file too. */
export const MAX_DESCRIPTOR_BYTES = 1024 * 1024;

/** Options of {@link parseDescriptor}. */
export interface ParseDescriptorOptions {
  /** Names the descriptor in error messages (e.g. its path). Default `VMDK descriptor`. */
  readonly name?: string;
}

const EXTENT_LINE = /^(RW|RDONLY|NOACCESS)(?:\s+(\S+))?(?:\s+(\S+))?(.*)$/;
const ENTRY_LINE = /^([A-Za-z][A-Za-z0-9_.]*)(\s*)=(\s*)(.*)$/;
const DIGITS = /^\d+$/;

/**
 * Parses a VMDK text descriptor (what VMware products and `qemu-img` write, and what
 * {@link formatDescriptor} writes). `input` is the text or the file's bytes (UTF-8, or the
 * `encoding=` the descriptor declares). NUL bytes padding the end (qemu-img convert pads a
 * descriptor file to 512 bytes; sparse files pad their embedded one) are ignored.
 *
 * It is strict where qemu and ESXi are fragile, so a descriptor it accepts is one they read as
 * intended: `version=` must be the first entry; `CID` must come before `parentCID`;
 * `createType="..."` must have no spaces around `=` and its value in double quotes; no comment
 * may contain the word createType; a FLAT extent needs an offset and a VMFS extent must not have
 * one; at least one extent must be `RW`; the line before an `RW` extent must not be blank (qemu
 * 7.2 then reads the extent twice and sees a disk of double size).
 *
 * @throws IvmrError `IVMR_FORMAT` for any malformed, misplaced or missing line, with
 *   `details.line` (1-based) naming the line and the message saying what is wrong with it;
 *   `IVMR_UNSUPPORTED` for an `encoding=` this Node cannot decode.
 */
export function parseDescriptor(
  input: string | Uint8Array,
  options: ParseDescriptorOptions = {},
): VmdkDescriptor {
  const what = options.name ?? 'VMDK descriptor';
  const text = typeof input === 'string' ? input : decode(input, what);
  if (text.length > MAX_DESCRIPTOR_BYTES) {
    throw lineError(what, 1, `larger than ${MAX_DESCRIPTOR_BYTES} bytes: not a descriptor`);
  }
  let end = text.length;
  while (end > 0 && text.charCodeAt(end - 1) === 0) end--;
  const start = text.startsWith('\ufeff') ? 1 : 0;
  return new DescriptorParser(what).parse(text.slice(start, end));
}

function decode(bytes: Uint8Array, what: string): string {
  if (bytes.length > MAX_DESCRIPTOR_BYTES) {
    throw lineError(what, 1, `larger than ${MAX_DESCRIPTOR_BYTES} bytes: not a descriptor`);
  }
  const ascii = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString('latin1');
  const declared = /^encoding="([^"]*)"\r?$/m.exec(ascii)?.[1];
  const label = declared && !/^utf-?8$/i.test(declared) ? declared : 'utf-8';
  try {
    return new TextDecoder(label).decode(bytes);
  } catch {
    const line = ascii.slice(0, ascii.indexOf(`encoding="${declared}"`)).split('\n').length;
    throw new IvmrError(
      ErrorCode.UNSUPPORTED,
      `${what} line ${line}: encoding "${declared}" cannot be decoded here`,
      { details: { line } },
    );
  }
}

class DescriptorParser {
  readonly #what: string;
  #version: number | undefined;
  #cid: { value: string; line: number } | undefined;
  #parentCid: { value: string; line: number } | undefined;
  #createType: { value: string; line: number } | undefined;
  readonly #header: Record<string, string> = {};
  readonly #ddb: Record<string, string> = {};
  readonly #extents: VmdkExtent[] = [];
  readonly #extentLines: number[] = [];
  /** Number of the last line that was empty or only whitespace. */
  #lastBlank = 0;

  constructor(what: string) {
    this.#what = what;
  }

  #error(line: number, message: string): IvmrError {
    return lineError(this.#what, line, message);
  }

  parse(text: string): VmdkDescriptor {
    const lines = text.split('\n');
    // A trailing newline does not start another line.
    const count =
      lines.length > 1 && lines[lines.length - 1] === '' ? lines.length - 1 : lines.length;
    for (let i = 0; i < count; i++) {
      const raw = lines[i]!;
      this.#line(i + 1, raw.endsWith('\r') ? raw.slice(0, -1) : raw);
    }
    return this.#finish(Math.max(1, count));
  }

  #line(n: number, line: string): void {
    if (hasBinary(line)) {
      const hint = line.startsWith('KDMV')
        ? ': this is a sparse extent (magic KDMV), open it with openSparseVmdk'
        : '';
      throw this.#error(n, `binary data, not descriptor text${hint}`);
    }
    const t = line.trim();
    if (t === '') {
      this.#lastBlank = n;
      return;
    }
    if (t.startsWith('#')) {
      if (t.includes('createType')) {
        throw this.#error(
          n,
          'a comment must not contain the word createType (qemu takes its first occurrence anywhere in the file as the entry)',
        );
      }
      if (this.#cid === undefined && t.includes('CID=')) {
        throw this.#error(
          n,
          'a comment before the CID entry must not contain "CID=" (qemu reads the first occurrence)',
        );
      }
      return;
    }
    if (this.#version === undefined) {
      const m = /^version(\s*)=(\s*)(\S*)$/.exec(t);
      if (!m) throw this.#error(n, `the first entry must be version=1, found "${clip(t)}"`);
      if (m[1] || m[2]) {
        throw this.#error(n, 'write version=1 without spaces around "=" (qemu probes for it)');
      }
      const v = m[3]!;
      if (!/^[123]$/.test(v)) throw this.#error(n, `version must be 1, 2 or 3, got "${clip(v)}"`);
      this.#version = Number(v);
      return;
    }
    const extent = EXTENT_LINE.exec(t);
    if (extent) {
      this.#extent(n, extent);
      return;
    }
    const entry = ENTRY_LINE.exec(t);
    if (entry) {
      this.#entry(n, entry[1]!, Boolean(entry[2] || entry[3]), entry[4]!);
      return;
    }
    throw this.#error(n, `not an entry, extent or comment: "${clip(t)}"`);
  }

  #extent(n: number, m: RegExpExecArray): void {
    const [, access, sectorsText, type, rest] = m;
    if (access === 'RW' && this.#lastBlank === n - 1 && n > 1) {
      // qemu scans every line with sscanf("%10s %ld ..."), whose %s skips line breaks: from the
      // blank line it reads this extent line, and then reads it again from its own start.
      throw this.#error(
        n,
        `line ${n - 1} before this RW extent is blank, which makes qemu read the extent twice (a disk of double size); put a comment such as "# Extent description" there or remove the blank line`,
      );
    }
    if (sectorsText === undefined || type === undefined) {
      throw this.#error(n, 'an extent line is <access> <sectors> <type> ["<file>" [<offset>]]');
    }
    if (!DIGITS.test(sectorsText)) {
      throw this.#error(n, `the sector count must be a whole number, got "${clip(sectorsText)}"`);
    }
    if (sectorsText.length > 16 || Number(sectorsText) > MAX_SECTORS) {
      throw this.#error(
        n,
        `the sector count ${clip(sectorsText)} is too large: ${MAX_SECTORS} sectors (2^53 bytes) at most`,
      );
    }
    if (!(EXTENT_TYPES as readonly string[]).includes(type)) {
      throw this.#error(
        n,
        `unknown extent type "${clip(type)}" (one of ${EXTENT_TYPES.join(', ')})`,
      );
    }
    let fileName: string | undefined;
    let offset: number | undefined;
    const tail = rest!.trim();
    if (tail !== '') {
      const f = /^"([^"]*)"(?:\s+(\S+))?$/.exec(tail);
      if (!f)
        throw this.#error(n, `after the type comes "<file>" [<offset>], found "${clip(tail)}"`);
      fileName = f[1];
      if (f[2] !== undefined) {
        if (!DIGITS.test(f[2]) || f[2].length > 16) {
          throw this.#error(n, `the offset must be a whole number of sectors, got "${clip(f[2])}"`);
        }
        offset = Number(f[2]);
      }
    }
    const e: VmdkExtent = {
      access: access as ExtentAccess,
      sectors: Number(sectorsText),
      type: type as ExtentType,
      ...(fileName === undefined ? {} : { fileName }),
      ...(offset === undefined ? {} : { offset }),
    };
    const problem = extentProblem(e);
    if (problem) throw this.#error(n, problem);
    const total = this.#extents.reduce((s, x) => s + x.sectors, e.sectors);
    if (total > MAX_SECTORS) {
      throw this.#error(n, `the extents add up to more than ${MAX_SECTORS} sectors (2^53 bytes)`);
    }
    this.#extents.push(e);
    this.#extentLines.push(n);
  }

  #entry(n: number, key: string, spaced: boolean, rawValue: string): void {
    const quoted = rawValue.startsWith('"');
    let value: string;
    if (quoted) {
      const q = /^"([^"]*)"$/.exec(rawValue);
      if (!q) throw this.#error(n, `a quoted value must end with its only other double quote`);
      value = q[1]!;
    } else {
      if (/[\s"]/.test(rawValue)) {
        throw this.#error(n, `a value with spaces or quotes must be in double quotes`);
      }
      value = rawValue;
    }
    const bad = valueProblem(value);
    if (bad) throw this.#error(n, bad);

    if (key.startsWith('ddb.')) {
      const name = key.slice(4);
      if (name === '') throw this.#error(n, 'a disk database key needs a name after "ddb."');
      if (Object.hasOwn(this.#ddb, name)) throw this.#error(n, `${key} is given twice`);
      this.#ddb[name] = value;
      return;
    }
    switch (key) {
      case 'version':
        throw this.#error(n, 'version is given twice');
      case 'CID':
      case 'parentCID': {
        if (spaced) {
          throw this.#error(n, `write ${key}=<hex> without spaces around "=" (qemu reads it so)`);
        }
        if (quoted) throw this.#error(n, `${key} is bare hex, not quoted`);
        const problem = cidProblem(value);
        if (problem) throw this.#error(n, problem);
        const slot = key === 'CID' ? this.#cid : this.#parentCid;
        if (slot) throw this.#error(n, `${key} is given twice`);
        if (key === 'CID') {
          if (this.#parentCid) {
            throw this.#error(
              n,
              'CID must come before parentCID (qemu reads the first "CID=" in the file, which would be the one inside parentCID=)',
            );
          }
          this.#cid = { value: normalizeCid(value), line: n };
        } else {
          this.#parentCid = { value: normalizeCid(value), line: n };
        }
        return;
      }
      case 'createType': {
        if (spaced) {
          throw this.#error(
            n,
            'write createType="..." without spaces around "=" (qemu skips exactly two characters after the word)',
          );
        }
        if (!quoted) throw this.#error(n, 'the createType value must be in double quotes');
        if (this.#createType) throw this.#error(n, 'createType is given twice');
        const problem = createTypeProblem(value);
        if (problem) throw this.#error(n, problem);
        this.#createType = { value, line: n };
        return;
      }
      default:
        if (Object.hasOwn(this.#header, key)) throw this.#error(n, `${key} is given twice`);
        this.#header[key] = value;
    }
  }

  #finish(lastLine: number): VmdkDescriptor {
    if (this.#version === undefined)
      throw this.#error(lastLine, 'no version=1 entry: empty descriptor');
    if (!this.#cid) throw this.#error(lastLine, 'no CID entry before the end of the descriptor');
    if (!this.#parentCid) {
      throw this.#error(lastLine, 'no parentCID entry before the end of the descriptor');
    }
    const createType = this.#createType;
    if (!createType)
      throw this.#error(lastLine, 'no createType entry before the end of the descriptor');
    if (this.#extents.length === 0) {
      throw this.#error(
        createType.line,
        `createType="${createType.value}" but the descriptor has no extent lines`,
      );
    }
    for (let i = 0; i < this.#extents.length; i++) {
      const problem = extentTypeProblem(createType.value, this.#extents[i]!.type);
      if (problem) throw this.#error(this.#extentLines[i]!, problem);
    }
    if (!this.#extents.some((e) => e.access === 'RW')) {
      throw this.#error(
        this.#extentLines[0]!,
        'no RW extent: qemu skips RDONLY and NOACCESS extents and aborts on a disk with none',
      );
    }
    return {
      version: this.#version,
      cid: this.#cid.value,
      parentCid: this.#parentCid.value,
      createType: createType.value,
      header: this.#header,
      extents: this.#extents,
      ddb: this.#ddb,
    };
  }
}

/** A piece of a line short enough to quote in an error message. */
function clip(s: string): string {
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}
