import { describeNfsFileSystemConformance, writeTree } from '../src/testing/index.js';
import { MemoryFileSystem, readOnlyView } from './helpers/memory-fs.js';

describeNfsFileSystemConformance('MemoryFileSystem', {
  create: async (tree) => {
    const fs = new MemoryFileSystem();
    await writeTree(fs, tree);
    return fs;
  },
  writable: true,
  sparse: true,
});

// Only the required methods: the write tests are not generated (the methods are detected).
describeNfsFileSystemConformance('readOnlyView(MemoryFileSystem)', {
  create: async (tree) => {
    const fs = new MemoryFileSystem();
    await writeTree(fs, tree);
    return readOnlyView(fs);
  },
});
