import { join } from 'node:path';
import { type BlobEntry, decodePackTrailer } from '../../src/format/pack.js';
import type { Repository, StoreAdapter } from '../../src/index.js';

/** The blob entries of every pack in a store, read from the packs' own trailers. */
export async function packEntries(
  store: StoreAdapter,
): Promise<{ pack: string; size: number; entries: BlobEntry[] }[]> {
  const packs = [];
  for await (const { name, size } of store.list('pack')) {
    const bytes = await store.get('pack', name);
    const trailer = decodePackTrailer(bytes, bytes.length, `pack ${name}`);
    if ('needed' in trailer) throw new Error('a whole pack always holds its trailer');
    packs.push({ pack: name, size, entries: trailer.entries });
  }
  return packs;
}

/** Hex ids of the blobs stored in packs, one per stored copy. */
export async function storedBlobIds(store: StoreAdapter): Promise<string[]> {
  return (await packEntries(store)).flatMap((p) =>
    p.entries.map((e) => Buffer.from(e.id).toString('hex')),
  );
}

/** Hex ids of every blob some restore point of the repository reads. */
export async function liveBlobIds(repo: Repository): Promise<Set<string>> {
  const live = new Set<string>();
  for (const info of await repo.listPoints()) {
    const point = await repo.openPoint(info.vm, info.id);
    try {
      for (const d of info.disks) {
        const disk = point.disk(d.name);
        for (let b = 0; b < disk.blockCount; b++) {
          const id = disk.blobOf(b);
          if (id !== null) live.add(id);
        }
      }
    } finally {
      await point.close();
    }
  }
  return live;
}

/** Where a blob is stored: its pack and its entry. Throws when no pack holds it. */
export async function findBlob(
  store: StoreAdapter,
  id: string,
): Promise<{ pack: string; entry: BlobEntry }> {
  for (const p of await packEntries(store)) {
    const entry = p.entries.find((e) => Buffer.from(e.id).toString('hex') === id);
    if (entry) return { pack: p.pack, entry };
  }
  throw new Error(`no pack holds blob ${id}`);
}

/** Path of a pack file in a local directory store (FORMAT.md, "Local directory store"). */
export function localPackPath(dir: string, pack: string): string {
  return join(dir, 'packs', pack.slice(0, 2), pack);
}
