import { ErrorCode, IvmrError, type NicConfig, type VmConfig } from '@ivmr/core';
import { type DiskBus, SCSI_CONTROLLERS } from '../controllers.js';
import { lineError } from '../errors.js';
import { hasBinary } from '../text.js';
import { unescapeVmxValue } from './escape.js';

/** A disk found in a `.vmx`. */
export interface VmxDisk {
  /** `scsi`, `ide`, `sata` or `nvme`. */
  readonly bus: DiskBus;
  /** Controller number: the N of `scsiN:U`. */
  readonly controller: number;
  /** Unit number on the controller: the U of `scsiN:U`. */
  readonly unit: number;
  /** `fileName` as written: the disk's descriptor, relative to the `.vmx` or absolute. */
  readonly fileName: string;
}

/** What {@link parseVmx} captures from a `.vmx`. */
export interface ParsedVmx {
  /** The VM's configuration, as `ivmr backup --vmx` records it. */
  readonly config: VmConfig;
  /** The present hard disks, boot disk first (see {@link parseVmx}). */
  readonly disks: readonly VmxDisk[];
  /** `virtualHW.version`, when given. */
  readonly hardwareVersion?: number;
  /** Every entry: keys in lowercase (VMware's keys are case-insensitive), values unescaped. */
  readonly entries: ReadonlyMap<string, string>;
}

/** Options of {@link parseVmx}. */
export interface ParseVmxOptions {
  /** Names the file in error messages. Default `.vmx`. */
  readonly name?: string;
  /** `VmConfig.name` when the file has no `displayName`. Without it that is an error. */
  readonly defaultName?: string;
}

// One line of a dictionary file, after open-vm-tools' DictLL_UnmarshalLine:
//   <ws> name <ws> = <ws> ("quoted value" | bare-value | nothing) <ws> [# comment]
// where a name holds no whitespace, = or #, and a bare value no whitespace, " or #.
const ENTRY = /^[ \t]*([^\s=#]+)[ \t]*=[ \t]*(?:"([^"]*)"|([^\s"#]*))[ \t]*(?:#.*)?$/;
const COMMENT_OR_BLANK = /^[ \t]*(?:#.*)?$/;
const DISK_KEY = /^(scsi|ide|sata|nvme)(\d+):(\d+)\.(present|filename|devicetype)$/;
const NIC_KEY = /^ethernet(\d+)\.(\w+)$/;
const CDROM_TYPES = new Set(['cdrom-image', 'cdrom-raw', 'atapi-cdrom']);
/** Order of buses when no `bios.hddOrder` names the boot disk. */
const BUS_ORDER: readonly DiskBus[] = ['ide', 'sata', 'scsi', 'nvme'];

/**
 * Parses a VMware `.vmx` and captures what a backup needs to recreate the VM: name, guest OS,
 * firmware (default `bios`), memory, CPUs (default 1), disk controller, disks and NICs.
 *
 * Keys are case-insensitive; values may be quoted or bare, carry `|XX` escapes and be followed
 * by a `#` comment; a repeated key keeps its last value, as VMware does. A disk is a present
 * `scsiN:U`, `sataN:U`, `nvmeN:U` (on a present controller) or `ideN:U` entry whose `fileName`
 * ends in `.vmdk` and whose `deviceType` is not a CD-ROM. The boot disk (first in `disks`) is the
 * one `bios.hddOrder` names, else the first by bus (ide, sata, scsi, nvme), controller and unit;
 * `config.controller` is its controller (`scsiN.virtualDev`, default `lsilogic`, or the bus).
 * A NIC is a present `ethernetN`: `networkName`, `virtualDev` and its MAC (`address` when
 * `addressType` is static, else `generatedAddress`).
 *
 * @throws IvmrError `IVMR_FORMAT` with `details.line` for a line that is not an entry, a comment
 *   or blank (binary data included), and for a malformed value of an entry it reads (memSize not
 *   a positive multiple of 4, numvcpus, firmware, virtualHW.version, an unknown SCSI model);
 *   `IVMR_FORMAT` with `details.key` when memSize or displayName is missing.
 */
export function parseVmx(input: string | Uint8Array, options: ParseVmxOptions = {}): ParsedVmx {
  const what = options.name ?? '.vmx';
  // U+FFFD in text given as a string is a character like any other; in decoded bytes it may
  // stand for bytes that are not text, which only a strict decode can tell.
  const { text, undecodable } =
    typeof input === 'string' ? { text: input, undecodable: false } : decode(input, what);
  const entries = new Map<string, string>();
  const lineOf = new Map<string, number>();
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    let line = lines[i]!;
    if (i === 0 && line.startsWith('\ufeff')) line = line.slice(1);
    if (line.endsWith('\r')) line = line.slice(0, -1);
    if (hasBinary(line, undecodable)) {
      throw lineError(what, i + 1, 'binary data, not a .vmx entry');
    }
    const m = ENTRY.exec(line);
    if (m) {
      const key = m[1]!.toLowerCase();
      entries.set(key, unescapeVmxValue(m[2] ?? m[3] ?? ''));
      lineOf.set(key, i + 1);
    } else if (!COMMENT_OR_BLANK.test(line)) {
      throw lineError(what, i + 1, `not a "name = value" entry: "${clip(line.trim())}"`);
    }
  }
  return new VmxReader(what, entries, lineOf, options).read();
}

function decode(bytes: Uint8Array, what: string): { text: string; undecodable: boolean } {
  const head = Buffer.from(bytes.buffer, bytes.byteOffset, Math.min(bytes.length, 4096)).toString(
    'latin1',
  );
  const declared = /^[ \t]*\.encoding[ \t]*=[ \t]*"([^"]*)"/im.exec(head)?.[1];
  const label = declared && !/^utf-?8$/i.test(declared) ? declared : 'utf-8';
  let decoder: InstanceType<typeof TextDecoder>;
  try {
    decoder = new TextDecoder(label, { fatal: true });
  } catch {
    throw new IvmrError(
      ErrorCode.UNSUPPORTED,
      `${what}: .encoding "${declared}" cannot be decoded here`,
    );
  }
  try {
    return { text: decoder.decode(bytes), undecodable: false };
  } catch {
    return { text: new TextDecoder(label).decode(bytes), undecodable: true };
  }
}

class VmxReader {
  readonly #what: string;
  readonly #entries: ReadonlyMap<string, string>;
  readonly #lineOf: ReadonlyMap<string, number>;
  readonly #options: ParseVmxOptions;

  constructor(
    what: string,
    entries: ReadonlyMap<string, string>,
    lineOf: ReadonlyMap<string, number>,
    options: ParseVmxOptions,
  ) {
    this.#what = what;
    this.#entries = entries;
    this.#lineOf = lineOf;
    this.#options = options;
  }

  #get(key: string): string | undefined {
    return this.#entries.get(key);
  }

  #bad(key: string, message: string): IvmrError {
    return lineError(this.#what, this.#lineOf.get(key) ?? 0, `${key}: ${message}`, { key });
  }

  #missing(key: string): IvmrError {
    return new IvmrError(ErrorCode.FORMAT, `${this.#what}: no ${key} entry`, { details: { key } });
  }

  #true(key: string): boolean {
    return /^(true|yes|1)$/i.test(this.#get(key) ?? '');
  }

  #int(key: string, min: number, max: number): number | undefined {
    const raw = this.#get(key);
    if (raw === undefined) return undefined;
    const v = /^\d{1,9}$/.test(raw.trim()) ? Number(raw.trim()) : Number.NaN;
    if (!(v >= min && v <= max))
      throw this.#bad(key, `expected a whole number ${min}..${max}, got "${clip(raw)}"`);
    return v;
  }

  read(): ParsedVmx {
    const name = this.#get('displayname') ?? this.#options.defaultName;
    if (name === undefined) throw this.#missing('displayName');
    const memoryMB = this.#int('memsize', 4, 24 * 1024 * 1024);
    if (memoryMB === undefined) throw this.#missing('memSize');
    if (memoryMB % 4 !== 0)
      throw this.#bad('memsize', `memory must be a multiple of 4 MiB, got ${memoryMB}`);
    const cpus = this.#int('numvcpus', 1, 768) ?? 1;
    const hardwareVersion = this.#int('virtualhw.version', 3, 99);
    const firmwareRaw = (this.#get('firmware') ?? 'bios').toLowerCase();
    if (firmwareRaw !== 'bios' && firmwareRaw !== 'efi') {
      throw this.#bad('firmware', `expected bios or efi, got "${clip(firmwareRaw)}"`);
    }
    const disks = this.#disks();
    const config: VmConfig = {
      name,
      guestOs: this.#get('guestos') || 'other',
      firmware: firmwareRaw,
      memoryMB,
      cpus,
      controller: this.#controller(disks[0]),
      nics: this.#nics(),
    };
    return {
      config,
      disks,
      ...(hardwareVersion === undefined ? {} : { hardwareVersion }),
      entries: this.#entries,
    };
  }

  #scsiModel(controller: number): string {
    const key = `scsi${controller}.virtualdev`;
    const model = this.#get(key)?.toLowerCase();
    if (model === undefined || model === '') return 'lsilogic';
    if (!(SCSI_CONTROLLERS as readonly string[]).includes(model)) {
      throw this.#bad(
        key,
        `unknown SCSI controller "${clip(model)}" (one of ${SCSI_CONTROLLERS.join(', ')})`,
      );
    }
    return model;
  }

  #controller(boot: VmxDisk | undefined): string {
    if (boot) return boot.bus === 'scsi' ? this.#scsiModel(boot.controller) : boot.bus;
    for (let c = 0; c < 4; c++) if (this.#true(`scsi${c}.present`)) return this.#scsiModel(c);
    if (this.#true('sata0.present')) return 'sata';
    if (this.#true('nvme0.present')) return 'nvme';
    return 'ide';
  }

  #disks(): VmxDisk[] {
    const slots = new Map<string, { bus: DiskBus; controller: number; unit: number }>();
    for (const key of this.#entries.keys()) {
      const m = DISK_KEY.exec(key);
      if (m) {
        const slot = `${m[1]}${m[2]}:${m[3]}`;
        slots.set(slot, { bus: m[1] as DiskBus, controller: Number(m[2]), unit: Number(m[3]) });
      }
    }
    const disks: VmxDisk[] = [];
    for (const [slot, where] of slots) {
      if (!this.#true(`${slot}.present`)) continue;
      if (where.bus !== 'ide' && !this.#true(`${where.bus}${where.controller}.present`)) continue;
      const fileName = this.#get(`${slot}.filename`);
      const deviceType = this.#get(`${slot}.devicetype`)?.toLowerCase();
      if (!fileName || !/\.vmdk$/i.test(fileName)) continue;
      if (deviceType !== undefined && CDROM_TYPES.has(deviceType)) continue;
      disks.push({ ...where, fileName });
    }
    const rank = (d: VmxDisk) => BUS_ORDER.indexOf(d.bus) * 1e6 + d.controller * 1e3 + d.unit;
    disks.sort((a, b) => rank(a) - rank(b));
    const boot = this.#get('bios.hddorder')?.split(',')[0]?.trim().toLowerCase();
    const first = disks.findIndex((d) => `${d.bus}${d.controller}:${d.unit}` === boot);
    if (first > 0) disks.unshift(...disks.splice(first, 1));
    return disks;
  }

  #nics(): NicConfig[] {
    const indexes = new Set<number>();
    for (const key of this.#entries.keys()) {
      const m = NIC_KEY.exec(key);
      if (m) indexes.add(Number(m[1]));
    }
    const nics: NicConfig[] = [];
    for (const i of [...indexes].sort((a, b) => a - b)) {
      const k = `ethernet${i}`;
      if (!this.#true(`${k}.present`)) continue;
      const staticMac = this.#get(`${k}.addresstype`)?.toLowerCase() === 'static';
      const mac =
        (staticMac ? this.#get(`${k}.address`) : this.#get(`${k}.generatedaddress`)) ??
        this.#get(`${k}.address`);
      const network = this.#get(`${k}.networkname`);
      const type = this.#get(`${k}.virtualdev`);
      nics.push({
        ...(network ? { network } : {}),
        ...(type ? { type } : {}),
        ...(mac ? { mac: mac.toLowerCase() } : {}),
      });
    }
    return nics;
  }
}

function clip(s: string): string {
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}
