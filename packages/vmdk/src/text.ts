/**
 * True when `s` holds a character no text file of ours contains: a C0 control other than tab,
 * DEL, or U+FFFD (what an invalid UTF-8 byte decodes to). Line breaks count as controls: callers
 * test one line at a time.
 */
export function hasBinary(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if ((c < 0x20 && c !== 0x09) || c === 0x7f || c === 0xfffd) return true;
  }
  return false;
}
