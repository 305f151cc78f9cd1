/* The memory allocator of the per-message programs when they are linked with
 * musl (scripts/musl-link): qmail-queue, qmail-nullqueue, qmail-inject, sendmail.
 *
 * Why not musl's own: its allocator (mallocng) gives memory back to the kernel
 * eagerly, and a Swift program's many short-lived allocations then cost an mmap
 * and a munmap each: about 100 such calls, and 0.3 ms, per qmail-queue run, which
 * is more than musl saves on start-up (glibc's CPU detection).
 *
 * This one suits short-lived, single-threaded programs: blocks of power-of-two
 * sizes from 32 bytes to 256 KB, carved from 1 MB regions and kept on one free
 * list per size (never given back, never merged), so memory use is bounded by
 * about twice the peak of what is live; anything larger is its own mapping,
 * unmapped on free. Every block starts with a 16-byte header saying which kind
 * it is, so free, realloc and malloc_usable_size need no lookup. No locking:
 * the four programs have one thread. Compile it with -fno-builtin (scripts/musl-link
 * does): the compiler knows what malloc and memset mean and would make calloc call
 * itself.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#define HEADER 16
#define MIN_SHIFT 5                 /* 32-byte blocks */
#define MAX_SHIFT 18                /* 256 KB blocks */
#define REGION (1u << 20)
#define KIND_SMALL 0x51u
#define KIND_LARGE 0x52u
#define KIND_ALIGNED 0x53u

struct header {
    uint32_t kind;
    uint32_t shift;                 /* KIND_SMALL: block size is 1 << shift */
    size_t value;                   /* KIND_LARGE: mapping size; KIND_ALIGNED: offset to the block */
};

static void *free_list[MAX_SHIFT + 1];
static char *region_next, *region_end;

static void *map(size_t n)
{
    void *p = mmap(0, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? 0 : p;
}

void *malloc(size_t n)
{
    struct header *h;
    unsigned shift = MIN_SHIFT;
    if (n > ((size_t)1 << MAX_SHIFT) - HEADER) {
        size_t total;
        if (n > SIZE_MAX - HEADER - 4095) { errno = ENOMEM; return 0; }
        total = (n + HEADER + 4095) & ~(size_t)4095;
        h = map(total);
        if (!h) { errno = ENOMEM; return 0; }
        h->kind = KIND_LARGE; h->shift = 0; h->value = total;
        return (char *)h + HEADER;
    }
    while (((size_t)1 << shift) - HEADER < n) ++shift;
    if (free_list[shift]) {
        h = free_list[shift];
        free_list[shift] = *(void **)((char *)h + HEADER);
    } else {
        size_t size = (size_t)1 << shift;
        if (!region_next || (size_t)(region_end - region_next) < size) {
            char *r = map(REGION);
            if (!r) { errno = ENOMEM; return 0; }
            region_next = r; region_end = r + REGION;
        }
        h = (struct header *)region_next;
        region_next += size;
    }
    h->kind = KIND_SMALL; h->shift = shift; h->value = 0;
    return (char *)h + HEADER;
}

static struct header *header_of(void *p) { return (struct header *)((char *)p - HEADER); }

void free(void *p)
{
    struct header *h;
    if (!p) return;
    h = header_of(p);
    switch (h->kind) {
    case KIND_SMALL:
        *(void **)p = free_list[h->shift];
        free_list[h->shift] = h;
        return;
    case KIND_LARGE:
        munmap(h, h->value);
        return;
    case KIND_ALIGNED:
        free((char *)p - h->value);
        return;
    default:
        __builtin_trap();           /* not ours: a double free or a stray pointer */
    }
}

size_t malloc_usable_size(void *p)
{
    struct header *h;
    if (!p) return 0;
    h = header_of(p);
    switch (h->kind) {
    case KIND_SMALL: return ((size_t)1 << h->shift) - HEADER;
    case KIND_LARGE: return h->value - HEADER;
    case KIND_ALIGNED: {
        char *base = (char *)p - h->value;
        return malloc_usable_size(base) - h->value;
    }
    default: __builtin_trap();
    }
}

void *calloc(size_t a, size_t b)
{
    void *p;
    if (b && a > SIZE_MAX / b) { errno = ENOMEM; return 0; }
    p = malloc(a * b);
    if (p) memset(p, 0, a * b);
    return p;
}

void *realloc(void *p, size_t n)
{
    size_t have;
    void *q;
    if (!p) return malloc(n);
    if (n == 0) { free(p); return 0; }
    have = malloc_usable_size(p);
    if (n <= have && header_of(p)->kind != KIND_ALIGNED) return p;
    q = malloc(n);
    if (!q) return 0;
    memcpy(q, p, have < n ? have : n);
    free(p);
    return q;
}

static void *aligned(size_t align, size_t n)
{
    char *base, *p;
    struct header *h;
    if (align <= HEADER) return malloc(n);
    if (align & (align - 1)) { errno = EINVAL; return 0; }
    if (n > SIZE_MAX - align - HEADER) { errno = ENOMEM; return 0; }
    base = malloc(n + align + HEADER);
    if (!base) return 0;
    p = (char *)(((uintptr_t)base + HEADER + align - 1) & ~(uintptr_t)(align - 1));
    h = header_of(p);
    h->kind = KIND_ALIGNED; h->shift = 0; h->value = (size_t)(p - base);
    return p;
}

int posix_memalign(void **out, size_t align, size_t n)
{
    void *p;
    if (align < sizeof(void *) || (align & (align - 1))) return EINVAL;
    p = aligned(align, n);
    if (!p) return ENOMEM;
    *out = p;
    return 0;
}

void *aligned_alloc(size_t align, size_t n) { return aligned(align, n); }
void *memalign(size_t align, size_t n) { return aligned(align, n); }
