/*
 * LZ4 block decoder for WebAssembly (wasm32, freestanding: no libc).
 *
 * Decodes one raw LZ4 block (the block format of the LZ4 specification, without the frame
 * format) from src[0..src_len) into dst[0..dst_cap). Returns the number of bytes decoded, or a
 * negative error: -1 a literal run or match runs past the end of the input or the output, -2 a
 * match refers to before the start of the output (or has offset 0), -3 the input ends inside a
 * sequence header.
 *
 * The caller keeps COPY_SLACK bytes of writable memory after dst + dst_cap and readable memory
 * after src + src_len: short copies move whole 8-byte words and may overshoot into that slack
 * (never past it). Every length is checked against the real ends before any copy, so a damaged
 * block fails with an error instead of writing outside its buffers.
 *
 * Built by scripts/build-lz4-wasm.sh (clang --target=wasm32, -O3, bulk memory); the bytes are
 * embedded in lz4-wasm.ts.
 */

typedef unsigned char u8;
typedef unsigned int u32;
typedef unsigned long long u64;

#define COPY_SLACK 32

static inline u64 load64(const u8 *p) {
  u64 v;
  __builtin_memcpy(&v, p, 8);
  return v;
}

static inline void store64(u8 *p, u64 v) { __builtin_memcpy(p, &v, 8); }

/* For a match at offset 1-7: the smallest multiple of the offset that is at least 8. */
static const u8 PATTERN_DIST[8] = {0, 8, 8, 9, 8, 10, 12, 14};

/* Copies n bytes, n <= 16, writing 16 (inside the slack). */
static inline void copy16(u8 *d, const u8 *s) {
  store64(d, load64(s));
  store64(d + 8, load64(s + 8));
}

/*
 * Adds the extra length bytes of a literal run or match (each byte is added; 255 means another
 * follows) to *len. Returns 0 when the input ends first.
 */
static inline int add_length(const u8 **ip, const u8 *iend, u32 *len) {
  u32 b;
  do {
    if (*ip >= iend) return 0;
    b = *(*ip)++;
    *len += b;
  } while (b == 255);
  return 1;
}

__attribute__((export_name("slack"))) u32 slack(void) { return COPY_SLACK; }

__attribute__((export_name("decode"))) int decode(const u8 *src, u32 src_len, u8 *dst,
                                                   u32 dst_cap) {
  const u8 *ip = src;
  const u8 *const iend = src + src_len;
  u8 *op = dst;
  u8 *const oend = dst + dst_cap;

  if (src_len == 0) return dst_cap == 0 ? 0 : -3;
  for (;;) {
    if (ip >= iend) return -3;
    u32 token = *ip++;

    u32 lit = token >> 4;

    /*
     * The common sequence, far from both ends: at most 14 literals and a match of at most 18
     * bytes at an offset of 8 or more. Whole words are copied without the length checks below:
     * the input holds the literals and the offset (with 16 bytes to spare), the output has room
     * for 16 bytes of literals and 24 of match. Any other sequence takes the general path.
     */
    if (lit < 15 && (token & 15) < 15 && (u32)(iend - ip) >= lit + 18 &&
        (u32)(oend - op) >= lit + 34) {
      const u32 offset = (u32)ip[lit] | ((u32)ip[lit + 1] << 8);
      if (offset >= 8 && (u32)(op + lit - dst) >= offset) {
        copy16(op, ip);
        op += lit;
        ip += lit + 2;
        const u8 *m = op - offset;
        store64(op, load64(m));
        store64(op + 8, load64(m + 8));
        store64(op + 16, load64(m + 16));
        op += (token & 15) + 4;
        continue;
      }
    }

    /* Literals. */
    if (lit == 15 && !add_length(&ip, iend, &lit)) return -3;
    if ((u32)(iend - ip) < lit || (u32)(oend - op) < lit) return -1;
    if (lit <= 16) {
      copy16(op, ip);
    } else {
      __builtin_memcpy(op, ip, lit);
    }
    op += lit;
    ip += lit;

    /* The last sequence has literals only. */
    if (ip == iend) break;

    /* Match. */
    if (iend - ip < 2) return -3;
    u32 offset = (u32)ip[0] | ((u32)ip[1] << 8);
    ip += 2;
    u32 len = token & 15;
    if (len == 15 && !add_length(&ip, iend, &len)) return -3;
    len += 4;
    if (offset == 0 || (u32)(op - dst) < offset) return -2;
    if ((u32)(oend - op) < len) return -1;
    const u8 *m = op - offset;
    if (offset >= 16) {
      /* No overlap within a 16-byte step: each step reads bytes written before it. */
      for (u32 i = 0; i < len; i += 16) copy16(op + i, m + i);
    } else if (offset >= 8) {
      for (u32 i = 0; i < len; i += 8) store64(op + i, load64(m + i));
    } else {
      /*
       * A pattern of 1-7 bytes repeating: the output from m on has period `offset`. The first 8
       * bytes go byte by byte (each may be one just written); after that, each 8-byte word is
       * copied from `dist` bytes back, the smallest multiple of the period that is 8 or more,
       * so the word it reads was written before it (and starts at m or later).
       */
      for (u32 i = 0; i < 8; i++) op[i] = m[i];
      const u32 dist = PATTERN_DIST[offset];
      for (u32 i = 8; i < len; i += 8) store64(op + i, load64(op + i - dist));
    }
    op += len;
  }
  return (int)(op - dst);
}
