// The value escaping of VMware's dictionary files (.vmx, .vmsd, .vmxf), after open-vm-tools'
// lib/dict/dictll.c: a value is written as `name = "value"` with every byte that cannot stand
// between the quotes (the C0 controls but tab, `"`, `|` and DEL) written as `|` and two
// uppercase hex digits: `"` is `|22`, `|` is `|7C`, a line feed `|0A`. Bytes from 0x80 stay as
// they are (UTF-8 text reads normally). Unescaping turns `|` and two hex digits (either case)
// back into that byte and leaves any other `|` alone.

const HEX = '0123456789ABCDEF';

function mustEscape(byte: number): boolean {
  return (byte < 0x20 && byte !== 0x09) || byte === 0x22 || byte === 0x7c || byte === 0x7f;
}

/** Escapes a value for the double quotes of a `.vmx` line, as VMware does. */
export function escapeVmxValue(value: string): string {
  let out = '';
  for (const ch of value) {
    const code = ch.charCodeAt(0);
    out += ch.length === 1 && mustEscape(code) ? `|${HEX[code >> 4]}${HEX[code & 15]}` : ch;
  }
  return out;
}

function hexDigit(byte: number): number {
  if (byte >= 0x30 && byte <= 0x39) return byte - 0x30;
  if (byte >= 0x41 && byte <= 0x46) return byte - 0x37;
  if (byte >= 0x61 && byte <= 0x66) return byte - 0x57;
  return -1;
}

/** Undoes {@link escapeVmxValue} (and any `|XX` escape VMware may have written). */
export function unescapeVmxValue(raw: string): string {
  if (!raw.includes('|')) return raw;
  const bytes = Buffer.from(raw, 'utf8');
  const out = Buffer.allocUnsafe(bytes.length);
  let n = 0;
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i]!;
    if (b === 0x7c && i + 2 < bytes.length) {
      const h = hexDigit(bytes[i + 1]!);
      const l = hexDigit(bytes[i + 2]!);
      if (h >= 0 && l >= 0) {
        out[n++] = h * 16 + l;
        i += 2;
        continue;
      }
    }
    out[n++] = b;
  }
  return out.toString('utf8', 0, n);
}
