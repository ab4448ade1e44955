import { describe, expect, it } from 'vitest';
import { parseChangedBlocks } from '../src/index.js';

const parse = (text: string) => parseChangedBlocks(text, 'cbt');

describe('parseChangedBlocks', () => {
  it('reads text lines of decimal or hex pairs, with comments and blank lines', () => {
    const text =
      '# changed since snapshot 41\n0 65536\n\n0x100000\t0x20000  # hex\n  5000000, 12\r\n';
    expect(parse(text)).toEqual([
      { offset: 0, length: 65536 },
      { offset: 0x100000, length: 0x20000 },
      { offset: 5_000_000, length: 12 },
    ]);
    expect(parse('')).toEqual([]);
    expect(parse('# nothing changed\n')).toEqual([]);
  });

  it('reads JSON arrays with start or offset, and numbers as strings', () => {
    expect(parse('[{"start": 0, "length": 10}, {"offset": 4096, "length": "0x1000"}]')).toEqual([
      { offset: 0, length: 10 },
      { offset: 4096, length: 4096 },
    ]);
  });

  it("reads VMware's DiskChangeInfo shape", () => {
    const info = {
      startOffset: 0,
      length: 1_073_741_824,
      changedArea: [
        { start: 1_048_576, length: 65_536 },
        { start: '9007199254740000', length: '991' },
      ],
    };
    expect(parse(JSON.stringify(info))).toEqual([
      { offset: 1_048_576, length: 65_536 },
      { offset: 9_007_199_254_740_000, length: 991 },
    ]);
  });

  it.each([
    ['0 10\n12\n', /cbt line 2: expected "OFFSET LENGTH", got "12"/],
    ['0 10 20\n', /cbt line 1/],
    ['-5 10\n', /cbt line 1: offset must be a whole number >= 0/],
    ['1.5 10\n', /offset must be a whole number/],
    ['0 0xZZ\n', /length must be a whole number/],
    ['99999999999999999999 1\n', /offset must be a whole number/],
    ['9007199254740991 1\n', /range end is too large/],
    ['[{"start": 1}]', /cbt range 0: length must be a whole number >= 0, got undefined/],
    ['[1, 2]', /cbt range 0: not an object/],
    ['{"ranges": []}', /expected an array of ranges or an object with a changedArea array/],
    ['[{"start": 1,', /cbt: not valid JSON/],
  ])('rejects %j', (text, message) => {
    expect(() => parse(text)).toThrow(message);
    try {
      parse(text);
    } catch (err) {
      expect((err as { code?: string }).code).toBe('IVMR_INVALID_ARGUMENT');
    }
  });
});
