import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { expectNoLeakedHandles, openHandles } from '../helpers/open-handles.js';
import {
  type MemfsServer,
  pseudoRandom,
  requireTools,
  runOk,
  startMemfsServer,
  tempDir,
} from './harness.js';

// libnfs's tools with explicit ports (`?nfsport=N&mountport=M&version=3`): no portmapper, so the
// server listens on free ports. The same checks run with MOUNT on its own listener and on the
// NFS listener.
for (const layout of ['separate MOUNT port', 'MOUNT on the NFS port'] as const) {
  describe(`libnfs tools (${layout})`, () => {
    let tools: ReturnType<typeof requireTools>;
    let s: MemfsServer;
    let tmp: Awaited<ReturnType<typeof tempDir>>;
    let baseline: string[];

    beforeAll(async () => {
      tools = requireTools('nfs-ls', 'nfs-cp', 'nfs-cat');
      baseline = openHandles();
      tmp = await tempDir();
      s = await startMemfsServer({ mountPort: layout === 'separate MOUNT port' ? 0 : undefined });
      if (layout === 'separate MOUNT port') expect(s.address.mountPort).not.toBe(s.address.nfsPort);
      else expect(s.address.mountPort).toBe(s.address.nfsPort);
    });

    afterAll(async () => {
      await s?.server.stop();
      await tmp?.remove();
      expect(s?.errors ?? []).toEqual([]);
      if (baseline) await expectNoLeakedHandles(baseline);
    });

    it('nfs-ls lists the export and a directory in it', async () => {
      s.fs.writeFile('/hello.txt', 'hello world\n');
      s.fs.writeFile('/dir/a.bin', Buffer.alloc(100_000, 7));
      s.fs.mkdirp('/dir/empty');
      const root = (await runOk(tools['nfs-ls'], [s.url()])).toString();
      expect(root).toMatch(/^-rw-r--r--\s+1\s+0\s+0\s+12 hello\.txt$/m);
      expect(root).toMatch(/^d[rwx-]{9}\s+\d+\s+0\s+0\s+\d+ dir$/m);
      const dir = (await runOk(tools['nfs-ls'], [s.url('dir')])).toString();
      expect(dir).toMatch(/\s100000 a\.bin$/m);
      expect(dir).toMatch(/^d.* empty$/m);
      const recursive = (await runOk(tools['nfs-ls'], ['-R', s.url()])).toString();
      expect(recursive).toContain('dir/a.bin');
    });

    it('nfs-cat prints files byte for byte, also empty and odd-sized ones', async () => {
      const sizes = [0, 1, 13, 4096, 65_537, 3 * 1024 * 1024 + 1];
      for (const [i, size] of sizes.entries()) {
        const data = pseudoRandom(size, 100 + i);
        s.fs.writeFile(`/cat/${size}.bin`, data);
        const out = await runOk(tools['nfs-cat'], [s.url(`cat/${size}.bin`)]);
        expect(out.length, `size ${size}`).toBe(size);
        expect(out.equals(data), `size ${size}`).toBe(true);
      }
    });

    it('nfs-cp uploads and downloads an odd-sized file (1 MiB + 13 bytes) exactly', async () => {
      const data = pseudoRandom(1024 * 1024 + 13, 7);
      const local = join(tmp.path, 'odd.bin');
      await writeFile(local, data);
      await runOk(tools['nfs-cp'], [local, s.url('odd.bin')]);
      expect(s.fs.readFile('/odd.bin').equals(data)).toBe(true);
      const back = join(tmp.path, 'odd.back');
      await runOk(tools['nfs-cp'], [s.url('odd.bin'), back]);
      expect((await readFile(back)).equals(data)).toBe(true);
    });

    it('nfs-cp creates GUARDED, so it does not overwrite; it copies a sparse file', async () => {
      // libnfs 4.0's nfs-cp creates its target GUARDED: an existing file must answer
      // NFS3ERR_EXIST and stay as it was (ESXi relies on the same rule for its lock files).
      const old = pseudoRandom(2_000_000, 9);
      s.fs.writeFile('/existing.bin', old);
      const local = join(tmp.path, 'short.bin');
      await writeFile(local, pseudoRandom(777, 10));
      await expect(runOk(tools['nfs-cp'], [local, s.url('existing.bin')])).rejects.toThrow(
        /NFS3ERR_EXIST/,
      );
      expect(s.fs.readFile('/existing.bin').equals(old)).toBe(true);

      // 8 MiB with data only at both ends: the holes must come back as zeros.
      const size = 8 * 1024 * 1024 + 5;
      const head = pseudoRandom(70_000, 11);
      const tail = pseudoRandom(33, 12);
      const id = s.fs.writeFile('/sparse.bin', head, { size });
      await s.fs.write(id, size - tail.length, tail, 'file_sync');
      const back = join(tmp.path, 'sparse.back');
      await runOk(tools['nfs-cp'], [s.url('sparse.bin'), back]);
      const expected = Buffer.alloc(size);
      head.copy(expected);
      tail.copy(expected, size - tail.length);
      expect((await readFile(back)).equals(expected)).toBe(true);
    });

    it('nfs-ls fails cleanly for an export that does not exist', async () => {
      const url = s.url().replace('/memfs', '/nope');
      await expect(runOk(tools['nfs-ls'], [url])).rejects.toThrow(/exited with/);
    });
  });
}
