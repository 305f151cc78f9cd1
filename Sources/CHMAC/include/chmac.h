#ifndef SWIFTQMAIL_CHMAC_H
#define SWIFTQMAIL_CHMAC_H
#include <stddef.h>
/* HMAC-SHA1 through OpenSSL's libcrypto (Debian's libssl-dev), for SRS:
   writes 20 bytes to out; 0, or -1 on failure. */
int qs_hmac_sha1(const void *key, size_t klen, const void *msg, size_t mlen, unsigned char *out);
#endif
