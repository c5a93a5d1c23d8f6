/* Runs chatcore_scan over length-prefixed blobs, each in a buffer of exactly its size, so that
 * AddressSanitizer catches any read or write outside it (tests/test_store.py builds this). */
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
int64_t chatcore_scan(const uint8_t *in, int64_t end, uint8_t *out, int64_t *ends, uint8_t *flags, int64_t max_lines, int64_t *out_len);
int main(int argc, char **argv) {
    FILE *f = fopen(argv[1], "rb");
    uint32_t len; long n = 0, strict = 0;
    while (fread(&len, 4, 1, f) == 1) {
        uint8_t *in = malloc(len ? len : 1);
        if (fread(in, 1, len, f) != len) break;
        uint8_t *out = malloc(len ? len : 1);
        int64_t cap = 0; for (uint32_t i = 0; i < len; i++) cap += in[i] == '\n';
        int64_t *ends = malloc(sizeof(int64_t) * (cap ? cap : 1)); uint8_t *flags = malloc(cap ? cap : 1);
        int64_t ol; int64_t k = chatcore_scan(in, len, out, ends, flags, cap, &ol);
        if (k != cap) { printf("bad count\n"); return 1; }
        for (int64_t i = 0; i < k; i++) strict += flags[i] & 1;
        n += k;
        free(in); free(out); free(ends); free(flags);
    }
    printf("%ld lines, %ld strict\n", n, strict);
    return 0;
}
