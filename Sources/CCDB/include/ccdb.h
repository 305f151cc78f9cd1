#ifndef SWIFTQMAIL_CCDB_H
#define SWIFTQMAIL_CCDB_H
/* cdb files through Debian's tinycdb (libcdb-dev): a reader that looks keys
   up and a writer that builds a file. Thin wrappers, so Swift never sees
   tinycdb's struct and function of the same name (cdb_find). */

/* An open cdb file; NULL with errno set on failure. */
void *qs_cdb_open(const char *path);
void qs_cdb_close(void *cdb);
/* The same, refusing (NULL, errno EPROTO) a file whose header points past its
   end: a file cut short is an error at once, not only for the keys whose
   records or hash tables were lost. */
void *qs_cdb_open_checked(const char *path);
/* 1 if the key is present, 0 if not, -1 on a read error. If found and
   data is not NULL, up to cap bytes of the value are copied and *len is
   set to the value's full length. */
int qs_cdb_find(void *cdb, const void *key, unsigned klen, void *data, unsigned cap, unsigned *len);

/* Sequential reading (cdbdump order, first record first). *cpos starts
   with qs_cdb_seqinit; 1 = a record (positions and lengths set), 0 = end,
   -1 = a record out of the file's bounds (a file cut short). */
void qs_cdb_seqinit(void *cdb, unsigned *cpos);
int qs_cdb_seqnext(void *cdb, unsigned *cpos, unsigned *kpos, unsigned *klen, unsigned *dpos, unsigned *dlen);
/* len bytes at pos into buf; 0, or -1 (EPROTO) when out of bounds. */
int qs_cdb_read(void *cdb, void *buf, unsigned len, unsigned pos);

/* A writer on an open file descriptor; NULL on failure. */
void *qs_cdb_make_start(int fd);
/* 0 or -1 (errno). */
int qs_cdb_make_add(void *maker, const void *key, unsigned klen, const void *val, unsigned vlen);
/* Writes the index; 0 or -1. The descriptor stays open (fsync and close it). */
int qs_cdb_make_finish(void *maker);
#endif
