/* Self-test of scripts/musl/alloc.c, run by scripts/musl-link before it links
 * anything with it: random malloc, calloc, realloc, posix_memalign and free over
 * every size class and the large path, each block filled with a pattern that is
 * checked before it is freed or moved. Exit 0 when all holds. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <malloc.h>

#define SLOTS 512
static unsigned char *block[SLOTS];
static size_t length[SLOTS];
static unsigned char tag[SLOTS];
static uint64_t state = 0x9e3779b97f4a7c15ull;

static uint64_t next(void)
{
    state ^= state << 13; state ^= state >> 7; state ^= state << 17;
    return state;
}

static size_t pick_size(void)
{
    switch (next() % 8) {
    case 0: return 0;
    case 1: return next() % 16;
    case 2: case 3: return next() % 512;
    case 4: case 5: return next() % 8192;
    case 6: return next() % 300000;            /* up to past the largest class */
    default: return next() % 3000000;           /* the large (mapped) path */
    }
}

static int check(int i)
{
    size_t k;
    for (k = 0; k < length[i]; ++k)
        if (block[i][k] != (unsigned char)(tag[i] + k)) { fprintf(stderr, "alloc-test: block %d corrupt at %zu\n", i, k); return 0; }
    return 1;
}

static void fill(int i)
{
    size_t k;
    for (k = 0; k < length[i]; ++k) block[i][k] = (unsigned char)(tag[i] + k);
}

int main(void)
{
    long round;
    for (round = 0; round < 200000; ++round) {
        int i = (int)(next() % SLOTS);
        if (block[i]) {
            if (!check(i)) return 1;
            if (next() % 3 == 0) {
                size_t n = pick_size(), keep = n < length[i] ? n : length[i];
                unsigned char *p = realloc(block[i], n ? n : 1);
                if (!p) { fprintf(stderr, "alloc-test: realloc failed\n"); return 1; }
                block[i] = p;
                length[i] = keep;
                if (!check(i)) return 1;
                length[i] = n;
                fill(i);
            } else {
                free(block[i]);
                block[i] = 0;
            }
            continue;
        }
        length[i] = pick_size();
        tag[i] = (unsigned char)next();
        switch (next() % 4) {
        case 0: {
            size_t k;
            block[i] = calloc(1, length[i]);
            if (!block[i]) { fprintf(stderr, "alloc-test: calloc failed\n"); return 1; }
            for (k = 0; k < length[i]; ++k) if (block[i][k]) { fprintf(stderr, "alloc-test: calloc not zero\n"); return 1; }
            break;
        }
        case 1: {
            void *p = 0;
            size_t align = (size_t)16 << (next() % 9);   /* 16 .. 4096 */
            if (posix_memalign(&p, align, length[i]) != 0) { fprintf(stderr, "alloc-test: posix_memalign failed\n"); return 1; }
            if ((uintptr_t)p % align) { fprintf(stderr, "alloc-test: misaligned\n"); return 1; }
            block[i] = p;
            break;
        }
        default:
            block[i] = malloc(length[i]);
            if (!block[i]) { fprintf(stderr, "alloc-test: malloc failed\n"); return 1; }
            if ((uintptr_t)block[i] % 16) { fprintf(stderr, "alloc-test: malloc misaligned\n"); return 1; }
        }
        if (malloc_usable_size(block[i]) < length[i]) { fprintf(stderr, "alloc-test: usable size too small\n"); return 1; }
        fill(i);
    }
    for (round = 0; round < SLOTS; ++round) if (block[round]) { if (!check((int)round)) return 1; free(block[round]); }
    return 0;
}
