/**
 * `@ivmr/cli`: the `ivmr` command (back up, list, restore, verify, forget and repair VM restore
 * points), usable as a library through {@link main}.
 *
 * @packageDocumentation
 */
export { type ChangedRange, parseChangedBlocks } from './changed-blocks.js';
export type { ListedDisk, ListedPoint } from './commands/list.js';
export type { RestoredDisk } from './commands/restore.js';
export { type CliIo, type CliStream, ExitCode } from './io.js';
export { main } from './program.js';
