import { NfsStatus } from './filesystem.js';
import { MOUNT_PROGRAM, MountProc } from './mount/mount-program.js';
import { Nfs3Proc } from './nfs3/constants.js';
import { NFS_PROGRAM } from './nfs3/nfs3-program.js';
import { PMAP_PROGRAM } from './portmap/portmap-program.js';
import type { CallEvent } from './rpc/dispatcher.js';

const invert = (o: Record<string, number>) =>
  new Map(Object.entries(o).map(([name, n]) => [n, name]));
const PROGRAMS = new Map<number, { name: string; procs: Map<number, string> }>([
  [NFS_PROGRAM, { name: 'nfs', procs: invert(Nfs3Proc) }],
  [MOUNT_PROGRAM, { name: 'mount', procs: invert(MountProc) }],
  [PMAP_PROGRAM, { name: 'portmap', procs: new Map() }],
]);
const STATUS = invert(NfsStatus);

/**
 * Names of an {@link CallEvent} for logs and metrics: the program (`nfs`, `mount`, `portmap`, or
 * the number), the procedure (`READ`, `MNT`, ... or the number) and the status (`OK`, `IO`,
 * `NOENT`, ... for NFS calls; `accepted`, `rejected` or `denied` for others; `unknown` without
 * an `acceptStat`).
 */
export function describeCall(
  event: Pick<CallEvent, 'prog' | 'proc'> & Partial<Pick<CallEvent, 'acceptStat' | 'status'>>,
): {
  program: string;
  procedure: string;
  status: string;
} {
  const p = PROGRAMS.get(event.prog);
  const status =
    event.acceptStat === undefined
      ? 'unknown'
      : event.acceptStat === -1
        ? 'denied'
        : event.acceptStat !== 0
          ? 'rejected'
          : event.prog === NFS_PROGRAM && event.status !== undefined
            ? (STATUS.get(event.status) ?? String(event.status))
            : 'accepted';
  return {
    program: p?.name ?? String(event.prog),
    procedure: p?.procs.get(event.proc) ?? String(event.proc),
    status,
  };
}
