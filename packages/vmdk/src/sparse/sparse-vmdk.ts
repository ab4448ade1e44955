import {
  type BlockSource,
  checkReadRange,
  ErrorCode,
  FileBlockSource,
  IvmrError,
  settleAll,
} from '@ivmr/core';
import { NO_PARENT_CID, type VmdkDescriptor } from '../descriptor/model.js';
import { parseDescriptor } from '../descriptor/parse.js';
import { formatError } from '../errors.js';
import { type GrainDirectory, readGrainDirectory } from './grain-directory.js';
import { GrainTables } from './grain-table.js';
import {
  COMPRESSION_DEFLATE,
  FLAG_ZERO_GRAIN,
  readSparseHeader,
  SECTOR,
  type SparseHeader,
} from './header.js';
import { CompressedGrains, type GrainCopy } from './stream-optimized.js';

/** Options of {@link SparseVmdk.open} and {@link SparseVmdk.from}. */
export interface SparseVmdkOptions {
  /** Grain tables kept in memory (2 KiB each). Default 256. */
  readonly grainTables?: number;
  /** Decompressed grains kept in memory (streamOptimized; 64 KiB each). Default 64. */
  readonly grains?: number;
  /** Names the file in error messages. Default: the path, or `sparse VMDK`. */
  readonly name?: string;
}

/** A grain table entry meaning "this grain reads as zeros" when the header has FLAG_ZERO_GRAIN. */
const ZERO_GRAIN = 1;

/**
 * A hosted sparse VMDK, `monolithicSparse` or `streamOptimized` (the disk format of OVA/OVF
 * exports), read as a `BlockSource`: a header, a grain directory (and a redundant copy),
 * grain tables and grains, compressed with deflate in a streamOptimized file.
 *
 * Unallocated grains read as zeros. Every offset and length taken from the file is checked
 * against the file's size before a buffer is allocated for it; a damaged file is an
 * `IVMR_FORMAT` error (`IVMR_CHUNK_CORRUPT` for a grain that does not decompress), never a huge
 * allocation or wrong bytes. Reads run concurrently; physically adjacent uncompressed grains are
 * read with one call.
 */
export class SparseVmdk implements BlockSource {
  readonly size: number;
  /** `streamOptimized` when the grains are compressed, else `monolithicSparse`. */
  readonly createType: 'monolithicSparse' | 'streamOptimized';
  /** The header in use (the footer's copy when the file has one). */
  readonly header: SparseHeader;
  /** The descriptor embedded in the file, when it has one. */
  readonly descriptor: VmdkDescriptor | undefined;
  /** True when the primary grain directory was damaged and its redundant copy is in use. */
  readonly usedRedundantDirectory: boolean;
  /** Grain size in bytes. */
  readonly grainBytes: number;
  readonly #file: BlockSource;
  readonly #ownsFile: boolean;
  readonly #tables: GrainTables;
  readonly #compressed: CompressedGrains | undefined;
  readonly #zeroGrains: boolean;
  readonly #what: string;
  #closed = false;

  private constructor(
    file: BlockSource,
    ownsFile: boolean,
    header: SparseHeader,
    descriptor: VmdkDescriptor | undefined,
    directory: GrainDirectory,
    options: SparseVmdkOptions,
    what: string,
  ) {
    this.#file = file;
    this.#ownsFile = ownsFile;
    this.#what = what;
    this.header = header;
    this.descriptor = descriptor;
    this.size = header.capacity * SECTOR;
    this.grainBytes = header.grainSize * SECTOR;
    this.usedRedundantDirectory = directory.redundant;
    const compressed = header.compressAlgorithm === COMPRESSION_DEFLATE;
    this.createType = compressed ? 'streamOptimized' : 'monolithicSparse';
    this.#zeroGrains = (header.flags & FLAG_ZERO_GRAIN) !== 0;
    this.#tables = new GrainTables(
      file,
      directory,
      header.numGTEsPerGT,
      options.grainTables ?? 256,
    );
    this.#compressed = compressed
      ? new CompressedGrains(file, this.grainBytes, this.size, options.grains ?? 64, what)
      : undefined;
  }

  /** Opens the sparse VMDK at `path` read-only; {@link close} closes the file. */
  static async open(path: string, options: SparseVmdkOptions = {}): Promise<SparseVmdk> {
    const file = await FileBlockSource.open(path);
    try {
      return await SparseVmdk.#create(file, true, { name: path, ...options });
    } catch (err) {
      await file.close();
      throw err;
    }
  }

  /**
   * Reads a sparse VMDK held by another block source (a file, a buffer, a backed-up image). The
   * source stays the caller's: {@link close} does not close it.
   */
  static from(file: BlockSource, options: SparseVmdkOptions = {}): Promise<SparseVmdk> {
    return SparseVmdk.#create(file, false, options);
  }

  static async #create(
    file: BlockSource,
    owns: boolean,
    options: SparseVmdkOptions,
  ): Promise<SparseVmdk> {
    const what = options.name ?? 'sparse VMDK';
    const header = await readSparseHeader(file, what);
    let descriptor: VmdkDescriptor | undefined;
    if (header.descriptorSize > 0) {
      const bytes = await file.read(
        header.descriptorOffset * SECTOR,
        header.descriptorSize * SECTOR,
      );
      const end = bytes.indexOf(0);
      const text = end < 0 ? bytes : bytes.subarray(0, end);
      // The extents of a split sparse disk reserve the space but leave it empty.
      if (!text.every((b) => b === 0x20 || b === 0x0a || b === 0x0d || b === 0x09)) {
        descriptor = parseDescriptor(text, { name: `${what} (embedded descriptor)` });
      }
      if (descriptor && descriptor.parentCid !== NO_PARENT_CID) {
        throw new IvmrError(
          ErrorCode.UNSUPPORTED,
          `${what}: a delta disk (parentCID=${descriptor.parentCid}${descriptor.header.parentFileNameHint ? `, parent ${descriptor.header.parentFileNameHint}` : ''}) cannot be read without its parent`,
        );
      }
    }
    const directory = await readGrainDirectory(file, header, what);
    return new SparseVmdk(file, owns, header, descriptor, directory, options, what);
  }

  /**
   * Reads `length` bytes at `offset` as `BlockSource.read` does (into `into` when given);
   * unallocated grains read as zeros. Rejects with `IVMR_FORMAT` or `IVMR_CHUNK_CORRUPT` when
   * the grains it needs are damaged, `IVMR_CLOSED` after {@link close}.
   */
  async read(offset: number, length: number, into?: Uint8Array): Promise<Uint8Array> {
    if (this.#closed) throw new IvmrError(ErrorCode.CLOSED, `${this.#what} is closed`);
    checkReadRange(this.size, offset, length, into);
    const out = into ? into.subarray(0, length) : new Uint8Array(length);
    const tasks: Promise<void>[] = [];
    try {
      await this.#plan(offset, length, out, tasks);
    } catch (err) {
      await Promise.allSettled(tasks);
      throw err;
    }
    await settleAll(tasks);
    return out;
  }

  /** Walks the grains of a read, filling zeros and starting the reads of the others. */
  async #plan(
    offset: number,
    length: number,
    out: Uint8Array,
    tasks: Promise<void>[],
  ): Promise<void> {
    const grainBytes = this.grainBytes;
    const perTable = this.header.numGTEsPerGT;
    const tableBytes = grainBytes * perTable;
    const fileSize = this.#file.size;
    const end = offset + length;
    // A run of physically adjacent uncompressed grains, read with one call.
    let runFile = 0;
    let runDst = 0;
    let runLength = 0;
    const flush = () => {
      if (runLength > 0)
        tasks.push(this.#readRaw(runFile, out.subarray(runDst, runDst + runLength)));
      runLength = 0;
    };
    // Pieces in compressed grains, handed over together so that adjacent records share a read.
    const compressed: GrainCopy[] = [];
    let pos = offset;
    while (pos < end) {
      const tableIndex = Math.floor(pos / tableBytes);
      const got = this.#tables.get(tableIndex);
      const table = got instanceof Promise ? await got : got;
      const tableEnd = Math.min(end, (tableIndex + 1) * tableBytes);
      while (pos < tableEnd) {
        const grain = Math.floor(pos / grainBytes);
        const inGrain = pos - grain * grainBytes;
        const n = Math.min(grainBytes - inGrain, tableEnd - pos);
        const dst = pos - offset;
        const sector = table === null ? 0 : table[grain - tableIndex * perTable]!;
        if (sector === 0 || (sector === ZERO_GRAIN && this.#zeroGrains)) {
          flush();
          out.fill(0, dst, dst + n);
        } else if (this.#compressed) {
          compressed.push({ grain, sector, inGrain, length: n, dst });
        } else {
          const at = sector * SECTOR + inGrain;
          if (sector < 1 || at + n > fileSize) {
            throw formatError(
              this.#what,
              `grain ${grain} points at sector ${sector}, past the end of the ${fileSize}-byte file`,
              { grain, offset: sector * SECTOR },
            );
          }
          if (runLength > 0 && runFile + runLength === at && runDst + runLength === dst) {
            runLength += n;
          } else {
            flush();
            runFile = at;
            runDst = dst;
            runLength = n;
          }
        }
        pos += n;
      }
    }
    flush();
    if (compressed.length > 0) this.#compressed!.copy(compressed, out, tasks);
  }

  async #readRaw(at: number, into: Uint8Array): Promise<void> {
    await this.#file.read(at, into.length, into);
  }

  /** Drops the caches; closes the file when {@link open} opened it. Reads then reject. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#tables.clear();
    this.#compressed?.clear();
    if (this.#ownsFile) await this.#file.close?.();
  }
}
