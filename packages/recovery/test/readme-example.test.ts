import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';

describe('README example', () => {
  it('is the code of test/fixtures/readme-example.ts, and it runs', async () => {
    const readme = await readFile(new URL('../README.md', import.meta.url), 'utf8');
    const example = await readFile(
      new URL('./fixtures/readme-example.ts', import.meta.url),
      'utf8',
    );
    const block = /## Example\n\n```ts\n([\s\S]*?)```/.exec(readme)?.[1];
    expect(block).toBe(example);
    await import('./fixtures/readme-example.js');
  });
});
