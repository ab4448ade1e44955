import { crc32 } from 'node:zlib';
import { formatError } from '../errors.js';
import type { CacheFile, CacheFileSystem } from '../fs/cache-file-system.js';
import { roundUp } from '../util/binary.js';
import {
  COMMIT_HEADER_BYTES,
  type CommitRecord,
  commitLength,
  decodeCommit,
} from './commit-record.js';
import { type GrainRun, RUN_BYTES, toRuns } from './grain-run.js';
import type { GrainTable } from './grain-table.js';
import {
  decodeMapHeader,
  decodeRuns,
  encodeMapHeader,
  encodeRuns,
  MAP_HEADER_BYTES,
} from './map-snapshot.js';
import { MAX_SLOTS } from './slot-allocator.js';
import {
  decodeSuperblock,
  encodeSuperblock,
  JOURNAL_START,
  SUPERBLOCK_SLOT,
  type Superblock,
} from './superblock.js';

/** The files of one overlay. */
export interface OverlayPaths {
  dir: string;
  /** Superblocks and the journal of commits. */
  meta: string;
  /** The last checkpoint of the grain table (absent until the first one). */
  map: string;
  /** Grain slots. */
  data: string;
}

/** The paths of overlay `name` in `dir`. */
export function overlayPaths(dir: string, name: string): OverlayPaths {
  return {
    dir,
    meta: `${dir}/${name}.meta`,
    map: `${dir}/${name}.map`,
    data: `${dir}/${name}.data`,
  };
}

/** What replaying the metadata produced. */
export interface ReplayedState {
  size: number;
  baseLimit: number;
  /** The last commit applied. */
  seq: number;
}

const CHUNK = 1 << 20;
const DONE = Promise.resolve();
const RESERVE_SLACK = 64 * 1024;

/** Applies runs to a table after checking them against the format's limits. */
function applyRuns(table: GrainTable, runs: readonly GrainRun[], grainSize: number, where: string) {
  const maxGrains = Math.floor(Number.MAX_SAFE_INTEGER / grainSize);
  for (const r of runs) {
    if (
      !Number.isSafeInteger(r.first) ||
      r.count < 1 ||
      r.first + r.count > maxGrains ||
      (r.value >= 0 && r.value + r.count > MAX_SLOTS)
    ) {
      throw formatError(`${where}: run of ${r.count} grains at ${r.first} is out of range`, {
        first: r.first,
        count: r.count,
      });
    }
    for (let i = 0; i < r.count; i++) table.set(r.first + i, r.value >= 0 ? r.value + i : r.value);
  }
}

/**
 * The metadata file of an overlay (two superblock copies, then an append-only journal of commit
 * records) and its map snapshot. See FORMAT.md. Writes go only through this class.
 */
export class MetadataFile {
  readonly #fs: CacheFileSystem;
  readonly #paths: OverlayPaths;
  readonly #file: CacheFile;
  #sb: Superblock;
  #appendPos: number;
  #preallocEnd: number;
  #mapBytes: number;
  #reserving: Promise<void> = Promise.resolve();
  /** Reservations queued or running; while there are any, a new one queues behind them. */
  #extending = 0;

  private constructor(
    fs: CacheFileSystem,
    paths: OverlayPaths,
    file: CacheFile,
    sb: Superblock,
    appendPos: number,
    mapBytes: number,
  ) {
    this.#fs = fs;
    this.#paths = paths;
    this.#file = file;
    this.#sb = sb;
    this.#appendPos = appendPos;
    this.#preallocEnd = appendPos;
    this.#mapBytes = mapBytes;
  }

  /**
   * Creates the metadata file with its first superblock: written to a temporary name, synced,
   * then renamed, so an existing metadata file always has a valid superblock.
   */
  static async create(fs: CacheFileSystem, paths: OverlayPaths, sb: Superblock) {
    const tmp = `${paths.meta}.tmp`;
    await fs.unlink(paths.map);
    const f = await fs.open(tmp, 'create');
    try {
      await f.truncate(0);
      await f.write(encodeSuperblock(sb), (sb.generation % 2) * SUPERBLOCK_SLOT);
      await f.truncate(JOURNAL_START);
      await f.sync();
    } finally {
      await f.close();
    }
    await fs.rename(tmp, paths.meta);
    await fs.syncDir(paths.dir);
    return new MetadataFile(fs, paths, await fs.open(paths.meta, 'write'), sb, JOURNAL_START, 0);
  }

  /**
   * Opens the metadata, loads the map snapshot and replays the journal into `table`. Unless
   * `readOnly`, a torn last record is cut off the file.
   */
  static async open(
    fs: CacheFileSystem,
    paths: OverlayPaths,
    table: GrainTable,
    readOnly: boolean,
  ): Promise<{ meta: MetadataFile; state: ReplayedState }> {
    const file = await fs.open(paths.meta, readOnly ? 'read' : 'write');
    try {
      const fileSize = await file.size();
      const head = new Uint8Array(JOURNAL_START);
      await file.read(head, 0);
      const copies = [
        decodeSuperblock(head.subarray(0, SUPERBLOCK_SLOT)),
        decodeSuperblock(head.subarray(SUPERBLOCK_SLOT)),
      ].filter((s): s is Superblock => s !== undefined);
      if (copies.length === 0) {
        throw formatError(`${paths.meta}: no valid superblock`, { path: paths.meta });
      }
      const sb = copies.reduce((a, b) => (b.generation > a.generation ? b : a));
      const state: ReplayedState = { size: sb.baseSize, baseLimit: sb.baseSize, seq: 0 };
      let mapBytes = 0;
      if (await fs.exists(paths.map)) {
        mapBytes = await MetadataFile.#loadMap(fs, paths.map, sb, table, state);
      }
      const appendPos = await MetadataFile.#replay(file, fileSize, paths.meta, sb, table, state);
      if (!readOnly && fileSize > appendPos) {
        await file.truncate(appendPos);
        await file.sync();
      }
      return { meta: new MetadataFile(fs, paths, file, sb, appendPos, mapBytes), state };
    } catch (err) {
      await file.close();
      throw err;
    }
  }

  static async #loadMap(
    fs: CacheFileSystem,
    path: string,
    sb: Superblock,
    table: GrainTable,
    state: ReplayedState,
  ): Promise<number> {
    const f = await fs.open(path, 'read');
    try {
      const size = await f.size();
      const headBytes = new Uint8Array(MAP_HEADER_BYTES);
      await f.read(headBytes, 0);
      const h = decodeMapHeader(headBytes);
      if (typeof h === 'string') throw formatError(`${path}: ${h}`, { path });
      if (Buffer.compare(h.id, sb.id) !== 0) {
        throw formatError(`${path}: map snapshot of another overlay`, { path });
      }
      if (size !== MAP_HEADER_BYTES + h.runCount * RUN_BYTES) {
        throw formatError(`${path}: ${size} bytes, its header announces ${h.runCount} runs`, {
          path,
        });
      }
      let crc = 0;
      const buf = new Uint8Array(CHUNK);
      for (let at = MAP_HEADER_BYTES; at < size; at += CHUNK) {
        const piece = buf.subarray(0, Math.min(CHUNK, size - at));
        if ((await f.read(piece, at)) !== piece.length) {
          throw formatError(`${path}: short read at ${at}`, { path });
        }
        crc = crc32(piece, crc);
        applyRuns(table, decodeRuns(piece), sb.grainSize, path);
      }
      if (crc >>> 0 !== h.runsCrc) throw formatError(`${path}: run checksum mismatch`, { path });
      state.seq = h.seq;
      state.size = h.size;
      state.baseLimit = h.baseLimit;
      return size;
    } finally {
      await f.close();
    }
  }

  /** Applies the journal's valid records after the snapshot; returns where the next one goes. */
  static async #replay(
    file: CacheFile,
    fileSize: number,
    path: string,
    sb: Superblock,
    table: GrainTable,
    state: ReplayedState,
  ): Promise<number> {
    let pos = JOURNAL_START;
    let prev: number | undefined;
    const header = new Uint8Array(COMMIT_HEADER_BYTES);
    while (pos + COMMIT_HEADER_BYTES <= fileSize) {
      await file.read(header, pos);
      const len = commitLength(header);
      if (len === undefined || pos + len > fileSize) break;
      const bytes = new Uint8Array(len);
      await file.read(bytes, pos);
      const rec = decodeCommit(bytes);
      // A record that does not check out is where the last append was torn: the end.
      if (rec === undefined) break;
      if (prev !== undefined && rec.seq !== prev + 1) {
        throw formatError(`${path}: commit ${rec.seq} follows commit ${prev}`, { path, pos });
      }
      if (rec.seq > state.seq) {
        if (rec.seq !== state.seq + 1) {
          throw formatError(`${path}: commit ${rec.seq} follows the snapshot's ${state.seq}`, {
            path,
            pos,
          });
        }
        MetadataFile.#apply(rec, table, sb.grainSize, path, state);
      }
      prev = rec.seq;
      pos += len;
    }
    return pos;
  }

  static #apply(
    rec: CommitRecord,
    table: GrainTable,
    grainSize: number,
    path: string,
    state: ReplayedState,
  ) {
    applyRuns(table, rec.runs, grainSize, path);
    if (rec.size) {
      state.size = rec.size.size;
      state.baseLimit = rec.size.baseLimit;
    }
    state.seq = rec.seq;
  }

  /** The superblock last written or read. */
  get superblock(): Superblock {
    return this.#sb;
  }

  /** Bytes of journal since the last checkpoint. */
  get journalBytes(): number {
    return this.#appendPos - JOURNAL_START;
  }

  /** Bytes of the map snapshot (0 before the first checkpoint). */
  get mapBytes(): number {
    return this.#mapBytes;
  }

  /** Writes `sb` (its generation one above the current) into its copy and syncs. */
  async writeSuperblock(sb: Omit<Superblock, 'generation'>): Promise<void> {
    const next = { ...sb, generation: this.#sb.generation + 1 };
    await this.#file.write(encodeSuperblock(next), (next.generation % 2) * SUPERBLOCK_SLOT);
    await this.#file.sync();
    this.#sb = next;
  }

  /**
   * Makes sure the next `bytes` of journal are allocated on the volume (zeros written past the
   * end), so that a flush never needs new space; `IVMR_NOSPC` when the volume is full.
   */
  reserve(bytes: number): Promise<void> {
    if (!this.#extending && this.#preallocEnd - this.#appendPos >= bytes) return DONE;
    const run = async () => {
      if (this.#preallocEnd - this.#appendPos >= bytes) return;
      const target = roundUp(this.#appendPos + bytes + RESERVE_SLACK, CHUNK);
      const zeros = new Uint8Array(Math.min(CHUNK, target - this.#preallocEnd));
      while (this.#preallocEnd < target) {
        const n = Math.min(zeros.length, target - this.#preallocEnd);
        await this.#file.write(zeros.subarray(0, n), this.#preallocEnd);
        this.#preallocEnd += n;
      }
    };
    this.#extending++;
    const p = this.#reserving.then(run).finally(() => {
      this.#extending--;
    });
    this.#reserving = p.catch(() => {});
    return p;
  }

  /** Appends a commit record and syncs; the commit is durable when this resolves. */
  async append(record: Uint8Array): Promise<void> {
    await this.reserve(record.length);
    await this.#file.write(record, this.#appendPos);
    await this.#file.sync();
    this.#appendPos += record.length;
  }

  /**
   * Checkpoints `table` (the durable state, at commit `seq`): writes the map snapshot to a
   * temporary file, syncs, renames it into place, syncs the folder, then empties the journal.
   */
  async checkpoint(table: GrainTable, state: ReplayedState): Promise<void> {
    const tmp = `${this.#paths.map}.tmp`;
    const f = await this.#fs.open(tmp, 'create');
    let runCount = 0;
    try {
      await f.truncate(0);
      let crc = 0;
      let at = MAP_HEADER_BYTES;
      const batch: GrainRun[] = [];
      const buf = new Uint8Array(CHUNK);
      const writeBatch = async (runs: GrainRun[]) => {
        const bytes = encodeRuns(runs, buf.subarray(0, runs.length * RUN_BYTES));
        crc = crc32(bytes, crc);
        await f.write(bytes, at);
        at += bytes.length;
        runCount += runs.length;
      };
      for (const run of toRuns(table.entries())) {
        batch.push(run);
        if (batch.length === CHUNK / RUN_BYTES) await writeBatch(batch.splice(0));
      }
      if (batch.length > 0) await writeBatch(batch);
      const header = encodeMapHeader({ id: this.#sb.id, ...state, runCount, runsCrc: crc >>> 0 });
      await f.write(header, 0);
      await f.sync();
    } catch (err) {
      await f.close();
      await this.#fs.unlink(tmp);
      throw err;
    }
    await f.close();
    await this.#fs.rename(tmp, this.#paths.map);
    await this.#fs.syncDir(this.#paths.dir);
    this.#mapBytes = MAP_HEADER_BYTES + runCount * RUN_BYTES;
    await this.#file.truncate(JOURNAL_START);
    await this.#file.sync();
    this.#appendPos = JOURNAL_START;
    this.#preallocEnd = JOURNAL_START;
  }

  async close(): Promise<void> {
    await this.#file.close();
  }
}
