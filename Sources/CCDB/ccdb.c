#include "ccdb.h"
#include <cdb.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct reader { int fd; struct cdb cdb; };

void *qs_cdb_open(const char *path)
{
    struct reader *r = malloc(sizeof *r);
    if (!r) { errno = ENOMEM; return 0; }
    r->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (r->fd == -1) { int e = errno; free(r); errno = e; return 0; }
    if (cdb_init(&r->cdb, r->fd) != 0) { int e = errno ? errno : EPROTO; close(r->fd); free(r); errno = e; return 0; }
    return r;
}

void *qs_cdb_open_checked(const char *path)
{
    struct reader *r = qs_cdb_open(path);
    const unsigned char *mem;
    unsigned fsize, i;
    if (!r) return 0;
    mem = r->cdb.cdb_mem;
    fsize = r->cdb.cdb_fsize;
    for (i = 0; i < 256; ++i) {
        unsigned pos = cdb_unpack(mem + 8 * i), slots = cdb_unpack(mem + 8 * i + 4);
        if (pos < 2048 || pos > fsize || slots > (fsize - pos) / 8) {
            qs_cdb_close(r);
            errno = EPROTO;
            return 0;
        }
    }
    return r;
}

void qs_cdb_close(void *p)
{
    struct reader *r = p;
    if (!r) return;
    cdb_free(&r->cdb);
    close(r->fd);
    free(r);
}

int qs_cdb_find(void *p, const void *key, unsigned klen, void *data, unsigned cap, unsigned *len)
{
    struct reader *r = p;
    int found = cdb_find(&r->cdb, key, klen);
    if (found <= 0) return found < 0 ? -1 : 0;
    if (len) *len = cdb_datalen(&r->cdb);
    if (data && cap) {
        unsigned n = cdb_datalen(&r->cdb);
        if (n > cap) n = cap;
        if (cdb_read(&r->cdb, data, n, cdb_datapos(&r->cdb)) != 0) return -1;
    }
    return 1;
}

void qs_cdb_seqinit(void *p, unsigned *cpos)
{
    struct reader *r = p;
    cdb_seqinit(cpos, &r->cdb);
}

int qs_cdb_seqnext(void *p, unsigned *cpos, unsigned *kpos, unsigned *klen, unsigned *dpos, unsigned *dlen)
{
    struct reader *r = p;
    int rc = cdb_seqnext(cpos, &r->cdb);
    if (rc <= 0) return rc < 0 ? -1 : 0;
    *kpos = cdb_keypos(&r->cdb);
    *klen = cdb_keylen(&r->cdb);
    *dpos = cdb_datapos(&r->cdb);
    *dlen = cdb_datalen(&r->cdb);
    return 1;
}

int qs_cdb_read(void *p, void *buf, unsigned len, unsigned pos)
{
    struct reader *r = p;
    return cdb_read(&r->cdb, buf, len, pos) == 0 ? 0 : -1;
}

void *qs_cdb_make_start(int fd)
{
    struct cdb_make *m = malloc(sizeof *m);
    if (!m) { errno = ENOMEM; return 0; }
    if (cdb_make_start(m, fd) != 0) { free(m); return 0; }
    return m;
}

int qs_cdb_make_add(void *m, const void *key, unsigned klen, const void *val, unsigned vlen)
{
    return cdb_make_add((struct cdb_make *)m, key, klen, val, vlen) == 0 ? 0 : -1;
}

int qs_cdb_make_finish(void *m)
{
    int r = cdb_make_finish((struct cdb_make *)m);
    free(m);
    return r == 0 ? 0 : -1;
}
