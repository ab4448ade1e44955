import type { CacheFileSystem } from '../../src/fs/cache-file-system.js';
import { nodeFileSystem } from '../../src/fs/node-file-system.js';

/** How many reads of each kind went through a {@link countingFs}. */
export interface ReadCalls {
  read: number;
  readNow: number;
}

/**
 * The real file system, counting for every file opened through it which reads go through the
 * thread pool (`read`) and which are done at once (`readNow`).
 */
export function countingFs(): { fs: CacheFileSystem; calls: ReadCalls } {
  const calls: ReadCalls = { read: 0, readNow: 0 };
  const fs: CacheFileSystem = {
    ...nodeFileSystem,
    open: async (path, flags) => {
      const file = await nodeFileSystem.open(path, flags);
      return {
        read: (into, position) => {
          calls.read++;
          return file.read(into, position);
        },
        readNow: (into, position) => {
          calls.readNow++;
          return file.readNow!(into, position);
        },
        write: (data, position) => file.write(data, position),
        sync: () => file.sync(),
        truncate: (size) => file.truncate(size),
        size: () => file.size(),
        close: () => file.close(),
      };
    },
  };
  return { fs, calls };
}
