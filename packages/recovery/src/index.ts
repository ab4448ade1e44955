/**
 * `@ivmr/recovery`: instant recovery sessions and the NFS datastore that presents them. A
 * {@link RecoverySession} opens a restore point, puts a copy-on-write overlay over each disk and
 * writes the VM's `.vmx` and descriptors; a {@link RecoveryDatastore} is the `NfsFileSystem` that
 * serves every session as a VM folder through `@ivmr/nfs`.
 *
 * @packageDocumentation
 */
export { RecoveryDatastore } from './datastore.js';
export { HostFiles } from './host-files.js';
export {
  RecoverySession,
  type SessionDisk,
  type SessionMode,
  type SessionState,
  type StartSessionOptions,
} from './session.js';
