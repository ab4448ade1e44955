import { expect } from 'vitest';
import {
  type NfsFileSystem,
  NfsStatus,
  type NfsStatusName,
  type StableHow,
  statusOfError,
} from '../filesystem.js';
import { CONFORMANCE_CONTEXT, type ConformanceTree, splitPath } from './conformance-tree.js';

/** The optional methods of {@link NfsFileSystem}. */
export type OptionalMethod = {
  [K in keyof NfsFileSystem]-?: undefined extends NfsFileSystem[K] ? K : never;
}[keyof NfsFileSystem];

export const ctx = CONFORMANCE_CONTEXT;

/**
 * What the tests of one adapter see: the fresh adapter of the running test, the tree it serves,
 * and which optional methods the suite tests.
 */
export class Subject {
  #fs: NfsFileSystem | undefined;

  constructor(
    readonly tree: ConformanceTree,
    /** Optional methods to test; a missing one among them fails the tests that use it. */
    readonly methods: ReadonlySet<OptionalMethod>,
  ) {}

  /** The adapter of the running test. */
  get fs(): NfsFileSystem {
    if (this.#fs === undefined) throw new Error('no adapter: the factory did not create one');
    return this.#fs;
  }

  set fs(fs: NfsFileSystem) {
    this.#fs = fs;
  }

  /** Forgets the adapter of the test that ended and returns it, if one was created. */
  take(): NfsFileSystem | undefined {
    const fs = this.#fs;
    this.#fs = undefined;
    return fs;
  }

  has(...methods: readonly OptionalMethod[]): boolean {
    return methods.every((m) => this.methods.has(m));
  }

  /** An optional method of the adapter, bound to it; throws a clear error when it is missing. */
  need<K extends OptionalMethod>(name: K): NonNullable<NfsFileSystem[K]> {
    const fs = this.fs;
    const method = fs[name];
    if (typeof method !== 'function') {
      throw new Error(`the adapter is declared writable but has no ${name}()`);
    }
    return (method as (...args: unknown[]) => unknown).bind(fs) as NonNullable<NfsFileSystem[K]>;
  }

  /** The id of a tree path (`''` is the root), by lookups from the root. */
  async id(path: string): Promise<bigint> {
    let id = this.fs.rootId;
    for (const name of path.split('/').filter((p) => p !== '')) {
      id = await this.fs.lookup(id, name, ctx);
    }
    return id;
  }

  /** The bytes of a file of the tree. */
  data(path: string): Uint8Array {
    const entry = this.tree.find((e) => e.path === path);
    if (entry?.type !== 'file') throw new Error(`the tree has no file ${path}`);
    return entry.data;
  }

  /** Names of the entries of a directory of the tree (`''` is the root), sorted. */
  children(dir: string): string[] {
    return this.tree
      .filter((e) => splitPath(e.path).dir === dir)
      .map((e) => splitPath(e.path).name)
      .sort();
  }

  /** Sorted names that `readdir` lists for `dirId`. */
  async names(dirId: bigint): Promise<string[]> {
    return (await this.fs.readdir(dirId, ctx)).map((e) => e.name).sort();
  }

  /** Reads `count` bytes at `offset` and copies them (the adapter may reuse nothing it gave). */
  async read(id: bigint, offset: number, count: number): Promise<Buffer> {
    return Buffer.from(await this.fs.read(id, offset, count, ctx));
  }

  /** An id the adapter does not use (none of the tree's). */
  async unknownId(): Promise<bigint> {
    const used = new Set([this.fs.rootId]);
    for (const e of this.tree) used.add(await this.id(e.path));
    const candidates = [0xffff_ffff_ffff_ff00n, 0x7fff_ffff_0000_1234n, 987_654_321n];
    const id = candidates.find((c) => !used.has(c));
    if (id === undefined) throw new Error('no unused id among the candidates');
    return id;
  }
}

const STATUS_NAMES = new Map<number, string>(
  Object.entries(NfsStatus).map(([name, status]) => [status, name]),
);

/** Expects `call` to reject with an error that maps to NFS status `name` (`statusOfError`). */
export async function expectStatus(
  call: Promise<unknown>,
  name: Exclude<NfsStatusName, 'OK'>,
  what: string,
): Promise<void> {
  const outcome = await call.then(
    () => ({ failed: false as const }),
    (error: unknown) => ({ failed: true as const, error }),
  );
  if (!outcome.failed) expect.fail(`${what}: expected NFS3ERR_${name}, but the call succeeded`);
  const status = statusOfError(outcome.error);
  if (status === NfsStatus[name]) return;
  const got =
    status === undefined
      ? `an error with no NFS status: ${String(outcome.error)}`
      : `NFS3ERR_${STATUS_NAMES.get(status) ?? status}`;
  expect.fail(`${what}: expected NFS3ERR_${name}, got ${got}`);
}

const STABILITY: readonly StableHow[] = ['unstable', 'data_sync', 'file_sync'];

/** True when `got` is at least as stable as `asked`. */
export function atLeastAsStable(got: StableHow, asked: StableHow): boolean {
  return STABILITY.indexOf(got) >= STABILITY.indexOf(asked);
}

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;
