import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { escapeVmxValue, parseVmx, unescapeVmxValue } from '../src/index.js';
import { numRuns } from './helpers/fc.js';

describe('.vmx value escaping', () => {
  it('round-trips any string, and never leaves a raw quote or line break', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary' }), (s) => {
        const e = escapeVmxValue(s);
        expect(e).not.toMatch(/["\n\r]/);
        expect(unescapeVmxValue(e)).toBe(s);
      }),
      { numRuns: numRuns(200, 2000) },
    );
  });

  it('any display name survives a .vmx line', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary' }), (name) => {
        const text = `displayName = "${escapeVmxValue(name)}"\nmemSize = "64"\n`;
        expect(parseVmx(text).config.name).toBe(name);
      }),
      { numRuns: numRuns(200, 2000) },
    );
  });
});
