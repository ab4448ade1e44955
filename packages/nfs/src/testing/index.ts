/**
 * `@ivmr/nfs/testing`: the conformance suite that every `NfsFileSystem` adapter runs under
 * vitest. Import it from test files only (it imports vitest).
 *
 * @packageDocumentation
 */
export {
  CONFORMANCE_CONTEXT,
  type ConformanceEntry,
  type ConformanceTree,
  conformanceTree,
  writeTree,
} from './conformance-tree.js';
export {
  describeNfsFileSystemConformance,
  type NfsFileSystemFactory,
} from './filesystem-conformance.js';
