import { InvalidArgumentError } from 'commander';

const UNITS: Record<string, number> = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3 };

/**
 * Parses a byte count with an optional binary suffix: `65536`, `64K`, `1M`, `1MiB` (K, M and G
 * are powers of 1024). Throws commander's `InvalidArgumentError` (a usage error).
 */
export function parseByteSize(text: string): number {
  const m = /^(\d+)\s*([KMG]?)(?:I?B)?$/i.exec(text.trim());
  const value = m ? Number(m[1]) * UNITS[m[2]!.toUpperCase()]! : Number.NaN;
  if (!Number.isSafeInteger(value)) {
    throw new InvalidArgumentError(`expected a size like 64K or 1M, got ${JSON.stringify(text)}`);
  }
  return value;
}

/** Parses `--block-size`: a power of two from 64K to 4M. */
export function parseBlockSize(text: string): number {
  const n = parseByteSize(text);
  if (n < 64 * 1024 || n > 4 * 1024 * 1024 || (n & (n - 1)) !== 0) {
    throw new InvalidArgumentError('block size must be a power of two from 64K to 4M');
  }
  return n;
}

/** Parses a whole number >= `min` (an option parser for commander). */
export function wholeNumber(min: number): (text: string) => number {
  return (text) => {
    const n = /^\d+$/.test(text.trim()) ? Number(text) : Number.NaN;
    if (!Number.isSafeInteger(n) || n < min) {
      throw new InvalidArgumentError(`expected a whole number >= ${min}`);
    }
    return n;
  };
}

/** Collects a repeatable option's values in order. */
export function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}
