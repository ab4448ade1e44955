/**
 * True when `s` holds a character no text file of ours contains: a C0 control other than tab,
 * DEL, or U+FFFD when `replacementIsBinary`. Line breaks count as controls: callers test one
 * line at a time.
 *
 * @param replacementIsBinary count U+FFFD (what an invalid byte decodes to) as binary: true
 *   (the default) for ASCII formats and for text decoded from bytes that were not valid.
 */
export function hasBinary(s: string, replacementIsBinary = true): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if ((c < 0x20 && c !== 0x09) || c === 0x7f) return true;
    if (c === 0xfffd && replacementIsBinary) return true;
  }
  return false;
}
