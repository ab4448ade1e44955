import { mkdtemp } from 'node:fs/promises';
import { filledCache, hitRate } from './read-cache-hits.mjs';
const dir = await mkdtemp('/tmp/prof-');
const bytes = new Uint8Array(32 << 20).fill(7);
const { cache } = await filledCache({ dir, bytes });
const h = await hitRate({ cache, bytes, bs: 4096, count: 150000, depth: 1, seed: 5 });
console.log(h.readsPerSec);
await cache.close();
