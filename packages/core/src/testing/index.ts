/**
 * `@ivmr/core/testing`: the conformance suites that every implementation of an ivmr contract
 * runs under vitest. Import it from test files only (it imports vitest).
 *
 * @packageDocumentation
 */
export { describeStoreConformance, type StoreFactory } from './store-conformance.js';
