import { afterEach, beforeEach, describe } from 'vitest';
import type { NfsFileSystem } from '../filesystem.js';
import { type OptionalMethod, Subject } from './conformance-support.js';
import { type ConformanceTree, conformanceTree } from './conformance-tree.js';
import { describeReadContract } from './read-contract.js';
import { describeWriteContract } from './write-contract.js';

/**
 * Creates a fresh adapter for one test, serving the suite's tree, and optionally disposes of it.
 */
export interface NfsFileSystemFactory {
  /**
   * A new adapter whose root directory holds exactly `tree` (see {@link conformanceTree}). A
   * writable adapter can build it with {@link writeTree}.
   */
  create(tree: ConformanceTree): Promise<NfsFileSystem>;
  /** Disposes of an adapter `create` returned, after its test (temporary files, say). */
  destroy?(fs: NfsFileSystem): Promise<void>;
  /**
   * `true`: the adapter must have `write`, `create`, `mkdir`, `remove`, `rmdir`, `rename` and
   * `setattr`, and a missing one fails the tests that use it. `false`: no write tests, even for
   * methods the adapter has. Default: the tests of the write methods the adapter has. `commit`,
   * `writeVerifier`, `link`, `symlink`, `readlink` and `fsstat` are tested when present.
   */
  readonly writable?: boolean;
  /**
   * The adapter keeps files sparse (space is used only by data written): adds tests that write
   * and size files above 4 GiB and expect `used` to stay small.
   */
  readonly sparse?: boolean;
}

const WRITE_METHODS: readonly OptionalMethod[] = [
  'write',
  'commit',
  'writeVerifier',
  'create',
  'mkdir',
  'symlink',
  'remove',
  'rmdir',
  'rename',
  'link',
  'setattr',
];

const REQUIRED_WHEN_WRITABLE: readonly OptionalMethod[] = [
  'write',
  'create',
  'mkdir',
  'remove',
  'rmdir',
  'rename',
  'setattr',
];

const OPTIONAL_METHODS: readonly OptionalMethod[] = [...WRITE_METHODS, 'readlink', 'fsstat'];

/** Which optional methods to test: those of a probe adapter, adjusted by `writable`. */
async function methodsToTest(factory: NfsFileSystemFactory): Promise<Set<OptionalMethod>> {
  const probe = await factory.create(conformanceTree());
  const methods = new Set(OPTIONAL_METHODS.filter((m) => typeof probe[m] === 'function'));
  await factory.destroy?.(probe);
  if (factory.writable === false) for (const m of WRITE_METHODS) methods.delete(m);
  if (factory.writable === true) for (const m of REQUIRED_WHEN_WRITABLE) methods.add(m);
  return methods;
}

/**
 * The {@link NfsFileSystem} contract, as the doc comments of its methods state it, as vitest
 * tests that call the adapter directly (no server). Every adapter runs it; each test gets a fresh
 * adapter from `factory`, serving the suite's tree, and calls it with
 * {@link CONFORMANCE_CONTEXT} (root, from 127.0.0.1, through `/conformance`).
 *
 * To see which optional methods to test, the suite creates one adapter while vitest collects
 * the tests (and destroys it). Tests of methods the adapter lacks are not generated at all
 * (unless `writable: true` declares them required).
 *
 * ```ts
 * import { describeNfsFileSystemConformance, writeTree } from '@ivmr/nfs/testing';
 *
 * describeNfsFileSystemConformance('my adapter', {
 *   create: async (tree) => {
 *     const fs = new MyFileSystem();
 *     await writeTree(fs, tree);
 *     return fs;
 *   },
 *   writable: true,
 *   sparse: true,
 * });
 * ```
 */
export function describeNfsFileSystemConformance(
  name: string,
  factory: NfsFileSystemFactory,
): void {
  describe(`NfsFileSystem conformance: ${name}`, async () => {
    const subject = new Subject(conformanceTree(), await methodsToTest(factory));
    beforeEach(async () => {
      subject.fs = await factory.create(conformanceTree());
    });
    afterEach(async () => {
      const fs = subject.take();
      if (fs !== undefined) await factory.destroy?.(fs);
    });
    describeReadContract(subject);
    describeWriteContract(subject, { sparse: factory.sparse === true });
  });
}
