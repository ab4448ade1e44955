/**
 * `@ivmr/store-s3`: an ivmr repository on S3-compatible object storage (AWS S3, Ceph's RADOS
 * Gateway, MinIO): {@link S3Store} is a `StoreAdapter` of `@ivmr/core`, so a repository opened
 * on it (`Repository.open(store)`) backs up, restores and serves as a local one does.
 *
 * @packageDocumentation
 */
export { S3Store, type S3StoreOptions } from './s3-store.js';
