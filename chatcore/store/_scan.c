/* One pass over a block of log lines: where each line ends, whether it is strictly valid
 * JSON (RFC 8259, valid UTF-8), which top-level keys matter for routing it, and a copy of
 * the block in which the top-level "history" member of a valid line is left out.
 *
 * The seed's log lines carry the whole conversation so far under "history", which no reader
 * of the log uses: it is two thirds of such a log's bytes. A line is only shortened after
 * this pass has checked all of it, history included, so the shortened line is read exactly
 * as the whole line would be (the reference reader ignores "history" but rejects a line
 * whose history is broken JSON or broken UTF-8; such a line is copied unchanged here).
 *
 * Built by ./run.sh setup (chatcore/store/native.py); used through ctypes, which
 * releases the GIL for the call. Without it, chatcore.store.parse does the same checks in
 * numpy, more slowly. */
#include <stdint.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define HAVE_SSSE3_PATH 1
#endif

#ifndef SOURCE_HASH
#define SOURCE_HASH "unknown"
#endif

#define F_STRICT 1  /* a strictly valid JSON object in valid UTF-8 */
#define F_TS 2      /* a top-level key spelled exactly "ts" (in the copy) */
#define F_ESCKEY 4  /* a top-level key written with a backslash escape */
#define F_CUT 8     /* its copy was edited (see scan_line) */
#define F_UTF8 16   /* the line is valid UTF-8 */

#define MAX_DEPTH 128

/* The hash of this source, compiled in, so that a stale build is never loaded. */
const char *chatcore_scan_source(void) { return SOURCE_HASH; }

/* Whether a byte may stand in a string as it is: all but '"', '\\' and control bytes
 * (non-ASCII bytes are checked as UTF-8 for the whole block beforehand, see chatcore_utf8_valid). */
static inline int plain(uint8_t c) { return c >= 0x20 && c != '"' && c != '\\'; }

/* Length of the valid UTF-8 sequence at p (lead byte >= 0x80), or 0. */
static inline int utf8_seq(const uint8_t *p, const uint8_t *e) {
    uint8_t c = p[0];
    if (c >= 0xC2 && c <= 0xDF) {
        if (e - p < 2 || (p[1] & 0xC0) != 0x80) return 0;
        return 2;
    }
    if (c >= 0xE0 && c <= 0xEF) {
        if (e - p < 3) return 0;
        uint8_t lo = 0x80, hi = 0xBF;
        if (c == 0xE0) lo = 0xA0;       /* no overlong forms */
        else if (c == 0xED) hi = 0x9F;  /* no UTF-16 surrogates */
        if (p[1] < lo || p[1] > hi || (p[2] & 0xC0) != 0x80) return 0;
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (e - p < 4) return 0;
        uint8_t lo = 0x80, hi = 0xBF;
        if (c == 0xF0) lo = 0x90;
        else if (c == 0xF4) hi = 0x8F;  /* nothing above U+10FFFF */
        if (p[1] < lo || p[1] > hi || (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80) return 0;
        return 4;
    }
    return 0;
}

static int utf8_valid(const uint8_t *p, const uint8_t *e) {
    while (p < e) {
        if (*p < 0x80) { p++; continue; }
        int k = utf8_seq(p, e);
        if (!k) return 0;
        p += k;
    }
    return 1;
}

/* Whether [p, e) is valid UTF-8 with an 8-byte ASCII fast path (the fallback of utf8_block). */
static int utf8_valid_scalar(const uint8_t *p, const uint8_t *e) {
    while (p < e) {
        if (e - p >= 8) {
            uint64_t v;
            memcpy(&v, p, 8);
            if (!(v & 0x8080808080808080ULL)) { p += 8; continue; }
        }
        if (*p < 0x80) { p++; continue; }
        int k = utf8_seq(p, e);
        if (!k) return 0;
        p += k;
    }
    return 1;
}

#ifdef HAVE_SSSE3_PATH
/* UTF-8 validation 16 bytes at a time by table lookups on nibbles (the "lookup" algorithm of
 * Keiser and Lemire, "Validating UTF-8 in less than one instruction per byte", 2021): each
 * byte and the one before it are classified by three 16-entry tables whose AND is nonzero
 * exactly where the pair cannot occur; a continuation byte expected two or three places after
 * a lead byte is checked separately. Checked against utf8_valid_scalar by tests/test_store.py. */
/* The three tables: bit k set where a byte pair shows error k (the names say which). */
enum {
    TOO_SHORT = 1 << 0, TOO_LONG = 1 << 1, OVERLONG_3 = 1 << 2, TOO_LARGE = 1 << 3, SURROGATE = 1 << 4,
    OVERLONG_2 = 1 << 5, TOO_LARGE_1000 = 1 << 6, OVERLONG_4 = 1 << 6, TWO_CONTS = 1 << 7,
    CARRY = TOO_SHORT | TOO_LONG | TWO_CONTS
};
/* by the high nibble of the byte before */
static const uint8_t BYTE_1_HIGH[16] = {
    TOO_LONG, TOO_LONG, TOO_LONG, TOO_LONG, TOO_LONG, TOO_LONG, TOO_LONG, TOO_LONG,
    TWO_CONTS, TWO_CONTS, TWO_CONTS, TWO_CONTS,
    TOO_SHORT | OVERLONG_2, TOO_SHORT, TOO_SHORT | OVERLONG_3 | SURROGATE,
    TOO_SHORT | TOO_LARGE | TOO_LARGE_1000 | OVERLONG_4};
/* by the low nibble of the byte before */
static const uint8_t BYTE_1_LOW[16] = {
    CARRY | OVERLONG_3 | OVERLONG_2 | OVERLONG_4, CARRY | OVERLONG_2, CARRY, CARRY,
    CARRY | TOO_LARGE, CARRY | TOO_LARGE | TOO_LARGE_1000, CARRY | TOO_LARGE | TOO_LARGE_1000,
    CARRY | TOO_LARGE | TOO_LARGE_1000, CARRY | TOO_LARGE | TOO_LARGE_1000,
    CARRY | TOO_LARGE | TOO_LARGE_1000, CARRY | TOO_LARGE | TOO_LARGE_1000,
    CARRY | TOO_LARGE | TOO_LARGE_1000, CARRY | TOO_LARGE | TOO_LARGE_1000,
    CARRY | TOO_LARGE | TOO_LARGE_1000 | SURROGATE, CARRY | TOO_LARGE | TOO_LARGE_1000,
    CARRY | TOO_LARGE | TOO_LARGE_1000};
/* by the high nibble of the byte itself */
static const uint8_t BYTE_2_HIGH[16] = {
    TOO_SHORT, TOO_SHORT, TOO_SHORT, TOO_SHORT, TOO_SHORT, TOO_SHORT, TOO_SHORT, TOO_SHORT,
    TOO_LONG | OVERLONG_2 | TWO_CONTS | OVERLONG_3 | TOO_LARGE_1000 | OVERLONG_4,
    TOO_LONG | OVERLONG_2 | TWO_CONTS | OVERLONG_3 | TOO_LARGE,
    TOO_LONG | OVERLONG_2 | TWO_CONTS | SURROGATE | TOO_LARGE,
    TOO_LONG | OVERLONG_2 | TWO_CONTS | SURROGATE | TOO_LARGE,
    TOO_SHORT, TOO_SHORT, TOO_SHORT, TOO_SHORT};

#define T __attribute__((target("ssse3")))

T static inline __m128i shr4(__m128i v) { return _mm_and_si128(_mm_srli_epi16(v, 4), _mm_set1_epi8(0x0F)); }

T static inline __m128i special_cases(__m128i input, __m128i prev1) {
    const __m128i b1h_t = _mm_loadu_si128((const __m128i *)BYTE_1_HIGH),
                  b1l_t = _mm_loadu_si128((const __m128i *)BYTE_1_LOW),
                  b2h_t = _mm_loadu_si128((const __m128i *)BYTE_2_HIGH);
    __m128i b1h = _mm_shuffle_epi8(b1h_t, shr4(prev1));
    __m128i b1l = _mm_shuffle_epi8(b1l_t, _mm_and_si128(prev1, _mm_set1_epi8(0x0F)));
    __m128i b2h = _mm_shuffle_epi8(b2h_t, shr4(input));
    return _mm_and_si128(_mm_and_si128(b1h, b1l), b2h);
}

T static int utf8_block_ssse3(const uint8_t *p, const uint8_t *e) {
    __m128i error = _mm_setzero_si128(), prev = _mm_setzero_si128(), prev_incomplete = _mm_setzero_si128();
    /* a lead byte in the last 3 places of a chunk that needs more bytes than remain in it */
    const __m128i max_value = _mm_setr_epi8(-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                            (char)(0xF0 - 1), (char)(0xE0 - 1), (char)(0xC0 - 1));
    uint8_t tail[16];
    while (p < e) {
        __m128i input;
        if (e - p >= 16) {
            input = _mm_loadu_si128((const __m128i *)p);
            p += 16;
        } else {
            memset(tail, 0, 16);  /* padded with ASCII NULs: a sequence cut at the end stays cut */
            memcpy(tail, p, (size_t)(e - p));
            input = _mm_loadu_si128((const __m128i *)tail);
            p = e;
        }
        if (_mm_movemask_epi8(input) == 0) {
            error = _mm_or_si128(error, prev_incomplete);
        } else {
            __m128i prev1 = _mm_alignr_epi8(input, prev, 15);
            __m128i sc = special_cases(input, prev1);
            __m128i prev2 = _mm_alignr_epi8(input, prev, 14), prev3 = _mm_alignr_epi8(input, prev, 13);
            __m128i third = _mm_subs_epu8(prev2, _mm_set1_epi8((char)(0xE0 - 0x80)));
            __m128i fourth = _mm_subs_epu8(prev3, _mm_set1_epi8((char)(0xF0 - 0x80)));
            __m128i must23_80 = _mm_and_si128(_mm_or_si128(third, fourth), _mm_set1_epi8((char)0x80));
            error = _mm_or_si128(error, _mm_xor_si128(must23_80, sc));
        }
        prev_incomplete = _mm_subs_epu8(input, max_value);
        prev = input;
    }
    error = _mm_or_si128(error, prev_incomplete);
    return _mm_movemask_epi8(_mm_cmpeq_epi8(error, _mm_setzero_si128())) == 0xFFFF;
}
#undef T

/* The same with 32-byte vectors. */
#define T __attribute__((target("avx2")))

T static inline __m256i shr4_256(__m256i v) { return _mm256_and_si256(_mm256_srli_epi16(v, 4), _mm256_set1_epi8(0x0F)); }

/* the 32 bytes before each byte's position, N places back, across the two halves */
#define PREV256(input, prev, n) _mm256_alignr_epi8(input, _mm256_permute2x128_si256(prev, input, 0x21), 16 - (n))

T static int utf8_block_avx2(const uint8_t *p, const uint8_t *e) {
    const __m256i b1h_t = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)BYTE_1_HIGH)),
                  b1l_t = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)BYTE_1_LOW)),
                  b2h_t = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)BYTE_2_HIGH));
    const __m256i max_value = _mm256_setr_epi8(-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                               -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                               (char)(0xF0 - 1), (char)(0xE0 - 1), (char)(0xC0 - 1));
    __m256i error = _mm256_setzero_si256(), prev = _mm256_setzero_si256(), prev_incomplete = _mm256_setzero_si256();
    uint8_t tail[32];
    while (p < e) {
        __m256i input;
        if (e - p >= 32) {
            input = _mm256_loadu_si256((const __m256i *)p);
            p += 32;
        } else {
            memset(tail, 0, 32);
            memcpy(tail, p, (size_t)(e - p));
            input = _mm256_loadu_si256((const __m256i *)tail);
            p = e;
        }
        if (_mm256_movemask_epi8(input) == 0) {
            error = _mm256_or_si256(error, prev_incomplete);
        } else {
            __m256i prev1 = PREV256(input, prev, 1);
            __m256i sc = _mm256_and_si256(
                _mm256_and_si256(_mm256_shuffle_epi8(b1h_t, shr4_256(prev1)),
                                 _mm256_shuffle_epi8(b1l_t, _mm256_and_si256(prev1, _mm256_set1_epi8(0x0F)))),
                _mm256_shuffle_epi8(b2h_t, shr4_256(input)));
            __m256i third = _mm256_subs_epu8(PREV256(input, prev, 2), _mm256_set1_epi8((char)(0xE0 - 0x80)));
            __m256i fourth = _mm256_subs_epu8(PREV256(input, prev, 3), _mm256_set1_epi8((char)(0xF0 - 0x80)));
            __m256i must23_80 = _mm256_and_si256(_mm256_or_si256(third, fourth), _mm256_set1_epi8((char)0x80));
            error = _mm256_or_si256(error, _mm256_xor_si256(must23_80, sc));
        }
        prev_incomplete = _mm256_subs_epu8(input, max_value);
        prev = input;
    }
    error = _mm256_or_si256(error, prev_incomplete);
    return _mm256_testz_si256(error, error);
}
#undef PREV256
#undef T
#endif

static int have_ssse3 = 0, have_avx2 = 0;

#ifdef HAVE_SSSE3_PATH
/* What this processor has, found once when the library is loaded (before any thread calls in). */
__attribute__((constructor)) static void detect_cpu(void) {
    __builtin_cpu_init();
    have_avx2 = __builtin_cpu_supports("avx2") ? 1 : 0;
    have_ssse3 = __builtin_cpu_supports("ssse3") ? 1 : 0;
}
#endif
/* For the tests: 0 the fastest path this processor has, 1 at most SSSE3, 2 scalar. */
static int force_path = 0;
void chatcore_force_utf8_path(int path) { force_path = path; }

/* Whether [p, e) is valid UTF-8 (newlines are ASCII, so a valid block has only valid lines). */
int chatcore_utf8_valid(const uint8_t *p, int64_t n) {
#ifdef HAVE_SSSE3_PATH
    if (have_avx2 && !force_path) return utf8_block_avx2(p, p + n);
    if (have_ssse3 && force_path != 2) return utf8_block_ssse3(p, p + n);
#endif
    return utf8_valid_scalar(p, p + n);
}

static int hex4(const uint8_t *p, const uint8_t *e, unsigned *out) {
    if (e - p < 4) return 0;
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        uint8_t c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= c - '0';
        else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
        else return 0;
    }
    *out = v;
    return 1;
}

/* p is just after an opening quote. Returns the byte after the closing quote, or NULL if the
 * string is not valid (a control byte, a bad escape, a lone surrogate escape, bad UTF-8). */
/* Whether none of 8 bytes ends or escapes a string, or is a control byte (exact: the borrows of
 * these tests only reach bytes above a true hit). */
static inline int plain8(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    uint64_t q = v ^ (ones * '"'), b = v ^ (ones * '\\');
    uint64_t bad = (((v - ones * 0x20) & ~v) | ((q - ones) & ~q) | ((b - ones) & ~b)) & highs;
    return bad == 0;
}

static const uint8_t *scan_string(const uint8_t *p, const uint8_t *e, int *escaped) {
    for (;;) {
#ifdef __SSE2__
        /* 16 bytes at a time: the first '"', '\\' or control byte */
        const __m128i quote = _mm_set1_epi8('"'), backslash = _mm_set1_epi8('\\'), ctl = _mm_set1_epi8(0x1F);
        while (e - p >= 16) {
            __m128i v = _mm_loadu_si128((const __m128i *)p);
            __m128i hit = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)),
                                       _mm_cmpeq_epi8(_mm_min_epu8(v, ctl), v)); /* unsigned v <= 0x1F */
            int mask = _mm_movemask_epi8(hit);
            if (mask) {
                p += __builtin_ctz((unsigned)mask);
                goto special;
            }
            p += 16;
        }
#endif
        while (e - p >= 8 && plain8(p)) p += 8;
        while (p < e && plain(*p)) p++;
#ifdef __SSE2__
    special:
#endif
        if (p >= e) return NULL;
        uint8_t c = *p;
        if (c == '"') return p + 1;
        if (c == '\\') {
            *escaped = 1;
            if (e - p < 2) return NULL;
            uint8_t x = p[1];
            if (x == 'u') {
                unsigned v;
                if (!hex4(p + 2, e, &v)) return NULL;
                p += 6;
                if (v >= 0xDC00 && v <= 0xDFFF) return NULL;  /* a low surrogate alone */
                if (v >= 0xD800 && v <= 0xDBFF) {             /* must be followed by a low one */
                    unsigned w;
                    if (e - p < 6 || p[0] != '\\' || p[1] != 'u' || !hex4(p + 2, e, &w)) return NULL;
                    if (w < 0xDC00 || w > 0xDFFF) return NULL;
                    p += 6;
                }
                continue;
            }
            if (x == '"' || x == '\\' || x == '/' || x == 'b' || x == 'f' || x == 'n' || x == 'r' || x == 't') {
                p += 2;
                continue;
            }
            return NULL;
        }
        return NULL; /* a control byte */
    }
}

static const uint8_t *scan_number(const uint8_t *p, const uint8_t *e) {
    if (p < e && *p == '-') p++;
    if (p >= e) return NULL;
    if (*p == '0') p++;
    else if (*p >= '1' && *p <= '9') { while (p < e && *p >= '0' && *p <= '9') p++; }
    else return NULL;
    if (p < e && *p == '.') {
        p++;
        if (p >= e || *p < '0' || *p > '9') return NULL;
        while (p < e && *p >= '0' && *p <= '9') p++;
    }
    if (p < e && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < e && (*p == '+' || *p == '-')) p++;
        if (p >= e || *p < '0' || *p > '9') return NULL;
        while (p < e && *p >= '0' && *p <= '9') p++;
    }
    return p;
}

static inline const uint8_t *ws(const uint8_t *p, const uint8_t *e) {
    while (p < e && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')) p++;
    return p;
}

/* The edits that turn a checked line of the seed's shape into the current shape. */
enum { E_DELETE, E_TS_KEY, E_ZONE, E_JOIN };
typedef struct { int64_t lo, hi; int kind; } edit_t;
#define MAX_EDITS 5

/* Members of the top-level object the copy may change. */
enum { M_NONE, M_HISTORY, M_TIMESTAMP, M_RESPONSE, M_USER_TEXT };

/* [p, e) is a time the reference reads as naive (taken as UTC) and pyarrow reads exactly with a
 * "Z" after it: YYYY-MM-DDTHH:MM:SS with an optional fraction of 1 to 6 digits. */
static int naive_iso(const uint8_t *p, const uint8_t *e) {
    static const char shape[] = "dddd-dd-ddTdd:dd:dd";
    int64_t n = e - p;
    if (n != 19 && (n < 21 || n > 26)) return 0;
    for (int i = 0; i < 19; i++) {
        if (shape[i] == 'd' ? (p[i] < '0' || p[i] > '9') : p[i] != (uint8_t)shape[i]) return 0;
    }
    if (n == 19) return 1;
    if (p[19] != '.') return 0;
    for (int64_t i = 20; i < n; i++) if (p[i] < '0' || p[i] > '9') return 0;
    return 1;
}

/* Checks the line [s, e). Returns its flags, and for a strict line the edits (offsets in the
 * line, sorted) that make its copy: the one top-level "history" member left out (with one of the
 * commas around it); and, for a line with no "ts" key and one "timestamp" key, that key renamed
 * "ts" (its value given a "Z" when it is a naive time of the usual form: the reference takes
 * naive times as UTC); a top-level "response" or "user_text" that is a list of strings written
 * as one string, the items joined by "\n" (as the reference joins them). Each edit is exact:
 * the copy reads, field for field, as the reference reads the line. */
static int scan_line(const uint8_t *s, const uint8_t *e, edit_t *edits, int *n_edits) {
    char stack[MAX_DEPTH];
    int depth = 0, flags = 0;
    const uint8_t *p = ws(s, e);
    const uint8_t *last_comma = NULL;  /* the last comma between top-level members */
    int member = M_NONE;               /* the top-level member whose value is being read */
    const uint8_t *value_lo = NULL;
    int list_of_strings = 0;
    int histories = 0, timestamps = 0, texts[2] = {0, 0};
    const uint8_t *hist_lo = NULL, *hist_hi = NULL, *ts_key = NULL, *ts_quote = NULL;
    const uint8_t *join_lo[2] = {NULL, NULL}, *join_hi[2] = {NULL, NULL};
    int hist_first = 0, ts_naive = 0;
    *n_edits = 0;
    if (p >= e || *p != '{') return 0;
    stack[depth++] = '{';
    p = ws(p + 1, e);
    if (p < e && *p == '}') { depth = 0; p++; goto done; }
    goto key;

value:
    if (p >= e) return 0;
    if (depth == 1) {
        value_lo = p;
        list_of_strings = *p == '[';
    } else if (depth == 2 && list_of_strings && *p != '"') {
        list_of_strings = 0;  /* an item of a top-level list that is not a string */
    }
    switch (*p) {
    case '{':
        if (depth >= MAX_DEPTH) return 0;
        stack[depth++] = '{';
        p = ws(p + 1, e);
        if (p < e && *p == '}') { depth--; p++; goto after; }
        goto key;
    case '[':
        if (depth >= MAX_DEPTH) return 0;
        stack[depth++] = '[';
        p = ws(p + 1, e);
        if (p < e && *p == ']') { depth--; p++; goto after; }
        goto value;
    case '"': {
        int esc = 0;
        p = scan_string(p + 1, e, &esc);
        if (!p) return 0;
        if (depth == 1 && member == M_TIMESTAMP && !esc && naive_iso(value_lo + 1, p - 1)) ts_naive = 1;
        goto after;
    }
    case 't':
        if (e - p < 4 || memcmp(p, "true", 4)) return 0;
        p += 4;
        goto after;
    case 'f':
        if (e - p < 5 || memcmp(p, "false", 5)) return 0;
        p += 5;
        goto after;
    case 'n':
        if (e - p < 4 || memcmp(p, "null", 4)) return 0;
        p += 4;
        goto after;
    default:
        p = scan_number(p, e);
        if (!p) return 0;
        goto after;
    }

key: {
    /* p is at the first byte of a member of the object on top of the stack */
    if (p >= e || *p != '"') return 0;
    const uint8_t *k = p;
    int esc = 0;
    p = scan_string(p + 1, e, &esc);
    if (!p) return 0;
    if (depth == 1) {
        member = M_NONE;
        int64_t n = p - k;
        if (esc) flags |= F_ESCKEY;
        else if (n == 4 && !memcmp(k, "\"ts\"", 4)) flags |= F_TS;
        else if (n == 9 && !memcmp(k, "\"history\"", 9)) {
            member = M_HISTORY;
            histories++;
            hist_first = last_comma == NULL;
            hist_lo = hist_first ? k : last_comma;
        } else if (n == 11 && !memcmp(k, "\"timestamp\"", 11)) {
            member = M_TIMESTAMP;
            timestamps++;
            ts_key = k;
            ts_naive = 0;
        } else if (n == 10 && !memcmp(k, "\"response\"", 10)) {
            member = M_RESPONSE;
            texts[0]++;
        } else if (n == 11 && !memcmp(k, "\"user_text\"", 11)) {
            member = M_USER_TEXT;
            texts[1]++;
        }
    }
    p = ws(p, e);
    if (p >= e || *p != ':') return 0;
    p = ws(p + 1, e);
    goto value;
}

after:
    if (depth == 1 && member != M_NONE) {
        /* p is just after the value of a top-level member the copy may change */
        if (member == M_HISTORY) hist_hi = p;
        else if (member == M_TIMESTAMP) ts_quote = ts_naive ? p - 1 : NULL;
        else if (list_of_strings) {
            int t = member == M_RESPONSE ? 0 : 1;
            join_lo[t] = value_lo;
            join_hi[t] = p;
        }
        member = M_NONE;
    }
    p = ws(p, e);
    if (depth == 0) goto done;
    if (p >= e) return 0;
    if (*p == ',') {
        if (depth == 1) {
            /* a history member that came first leaves out the comma after it */
            if (hist_first && last_comma == NULL && hist_hi) hist_hi = p + 1;
            last_comma = p;
        }
        p = ws(p + 1, e);
        if (stack[depth - 1] == '{') goto key;
        goto value;
    }
    if ((*p == '}' && stack[depth - 1] == '{') || (*p == ']' && stack[depth - 1] == '[')) {
        depth--;
        p++;
        goto after;
    }
    return 0;

done:
    if (ws(p, e) != e) return 0;
    flags |= F_STRICT;
    {
        int n = 0;
        if (histories == 1 && hist_lo && hist_hi) edits[n++] = (edit_t){hist_lo - s, hist_hi - s, E_DELETE};
        if (timestamps == 1 && !(flags & (F_TS | F_ESCKEY))) {
            edits[n++] = (edit_t){ts_key - s, ts_key - s + 11, E_TS_KEY};
            if (ts_quote) edits[n++] = (edit_t){ts_quote - s, ts_quote - s + 1, E_ZONE};
            flags |= F_TS;  /* it has a "ts" key now */
        }
        for (int t = 0; t < 2; t++)
            if (texts[t] == 1 && join_lo[t]) edits[n++] = (edit_t){join_lo[t] - s, join_hi[t] - s, E_JOIN};
        for (int i = 1; i < n; i++) {  /* sorted by position (they never overlap) */
            edit_t x = edits[i];
            int j = i - 1;
            while (j >= 0 && edits[j].lo > x.lo) { edits[j + 1] = edits[j]; j--; }
            edits[j + 1] = x;
        }
        *n_edits = n;
        if (n) flags |= F_CUT;
    }
    return flags;
}

/* Writes [lo, hi) of the line s (a list of strings, already checked) as one string, the
 * items joined by the escape "\n". Returns the end of what it wrote. */
static uint8_t *join_strings(const uint8_t *s, int64_t lo, int64_t hi, uint8_t *o) {
    const uint8_t *p = s + lo + 1, *e = s + hi - 1;  /* inside the brackets */
    int first = 1;
    *o++ = '"';
    for (;;) {
        p = ws(p, e);
        if (p >= e) break;
        if (*p == ',') { p++; continue; }
        /* a string item */
        int esc = 0;
        const uint8_t *q = scan_string(p + 1, e + 1, &esc);
        if (!first) { *o++ = '\\'; *o++ = 'n'; }
        first = 0;
        memcpy(o, p + 1, (size_t)(q - 1 - (p + 1)));
        o += q - 1 - (p + 1);
        p = q;
    }
    *o++ = '"';
    return o;
}

/* The complete lines of in[0:end] (end is just after a newline, or 0). Each line is written to
 * out (room for end bytes) followed by its newline; ends[i] is where line i's newline is in out,
 * flags[i] its flags. Returns the number of lines, or -1 if there are more than max_lines;
 * *out_len is the bytes written. */
int64_t chatcore_scan(const uint8_t *in, int64_t end, uint8_t *out, int64_t *ends, uint8_t *flags,
                      int64_t max_lines, int64_t *out_len) {
    /* the usual case: the whole block is valid UTF-8, then every line is */
    int block_utf8 = chatcore_utf8_valid(in, end);
    const uint8_t *p = in, *stop = in + end;
    uint8_t *o = out;
    int64_t n = 0;
    while (p < stop) {
        const uint8_t *nl = memchr(p, '\n', (size_t)(stop - p));
        if (!nl) break;
        if (n >= max_lines) return -1;
        edit_t edits[MAX_EDITS];
        int n_edits = 0;
        int f = scan_line(p, nl, edits, &n_edits);
        if (block_utf8 || utf8_valid(p, nl)) f |= F_UTF8;
        else f = 0, n_edits = 0;  /* the JSON scan let non-ASCII bytes pass: broken UTF-8 is never strict */
        int64_t at = 0;  /* the line is copied up to here */
        for (int i = 0; i < n_edits; i++) {
            edit_t x = edits[i];
            memcpy(o, p + at, (size_t)(x.lo - at));
            o += x.lo - at;
            if (x.kind == E_TS_KEY) { memcpy(o, "\"ts\"", 4); o += 4; }
            else if (x.kind == E_ZONE) { *o++ = 'Z'; *o++ = '"'; }
            else if (x.kind == E_JOIN) o = join_strings(p, x.lo, x.hi, o);
            at = x.hi;
        }
        memcpy(o, p + at, (size_t)(nl - p - at));
        o += nl - p - at;
        ends[n] = o - out;
        *o++ = '\n';
        flags[n] = (uint8_t)f;
        n++;
        p = nl + 1;
    }
    *out_len = o - out;
    return n;
}
