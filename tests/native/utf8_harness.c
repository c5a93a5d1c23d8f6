/* The three UTF-8 validators of _scan.c (AVX2, SSSE3, scalar) must agree on every input.
 * Exhaustive over all 1-, 2- and 3-byte sequences placed at offsets that straddle 16- and
 * 32-byte chunk boundaries (in ASCII and in valid multibyte context), then random sequences
 * of 4 to 8 bytes. Prints the counts; exits 1 at the first disagreement.
 * (tests/test_store.py builds and runs this; it also checks the scalar one against Python.) */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int chatcore_utf8_valid(const uint8_t *p, int64_t n);
void chatcore_force_utf8_path(int path);

static uint64_t state = 88172645463325252ULL;
static uint64_t next(void) { state ^= state << 13; state ^= state >> 7; state ^= state << 17; return state; }

static int check(const uint8_t *buf, int64_t n) {
    chatcore_force_utf8_path(2);
    int want = chatcore_utf8_valid(buf, n);
    for (int path = 0; path < 2; path++) {
        chatcore_force_utf8_path(path);
        if (chatcore_utf8_valid(buf, n) != want) {
            printf("disagree (path %d, want %d):", path, want);
            for (int64_t i = 0; i < n; i++) printf(" %02x", buf[i]);
            printf("\n");
            exit(1);
        }
    }
    return want;
}

int main(void) {
    /* a 3-byte sequence starting at 14 or 15 (30 or 31) crosses a 16-byte (32-byte) boundary */
    static const int offsets[] = {0, 14, 15, 30, 31, 62};
    static const char *contexts[] = {"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                                     "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
                                     "\xe6\x97\xa5\xe6\x97\xa5\xe6\x97\xa5\xe6\x97\xa5\xe6\x97\xa5\xe6\x97\xa5"
                                     "\xf0\x9f\x99\x82\xf0\x9f\x99\x82\xf0\x9f\x99\x82\xf0\x9f\x99\x82"
                                     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"};
    uint8_t buf[96];
    long valid = 0, total = 0;
    for (int c = 0; c < 2; c++) {
        for (unsigned o = 0; o < sizeof offsets / sizeof *offsets; o++) {
            int at = offsets[o];
            for (uint32_t v = 0; v < (1u << 24); v++) {
                int len = v < 256 ? 1 : v < 65536 ? 2 : 3;
                if (c == 1 && v % 5) continue;  /* the multibyte context: a fifth of the values */
                memcpy(buf, contexts[c], 80);
                /* the context must stay valid around the insertion: cut it at a character start */
                int start = at;
                while (c == 1 && start > 0 && (buf[start] & 0xC0) == 0x80) start--;
                for (int i = 0; i < len; i++) buf[start + i] = (uint8_t)(v >> (8 * (len - 1 - i)));
                int end = start + len;
                while (c == 1 && end < 80 && (buf[end] & 0xC0) == 0x80) buf[end++] = 'a';
                valid += check(buf, (v & 1) ? end : 80);  /* the sequence at the very end, or not */
                total++;
            }
        }
    }
    for (long k = 0; k < 2000000; k++) {
        int len = 4 + (int)(next() % 5), at = (int)(next() % 70);
        memset(buf, 'a', 96);
        for (int i = 0; i < len; i++) {
            uint64_t r = next();
            /* mostly bytes that matter: leads, continuations, the edges of the ranges */
            static const uint8_t pick[] = {0x00, 0x41, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc1, 0xc2,
                                           0xdf, 0xe0, 0xe1, 0xec, 0xed, 0xee, 0xef, 0xf0, 0xf1, 0xf3, 0xf4, 0xf5,
                                           0xf7, 0xf8, 0xff};
            buf[at + i] = (r & 1) ? pick[(r >> 1) % sizeof pick] : (uint8_t)(r >> 8);
        }
        valid += check(buf, at + len + (int)(next() % 3));
        total++;
    }
    printf("%ld %ld\n", total, valid);
    return 0;
}
