#include "chmac.h"
#include <openssl/evp.h>
#include <openssl/hmac.h>

int qs_hmac_sha1(const void *key, size_t klen, const void *msg, size_t mlen, unsigned char *out)
{
    unsigned int len = 0;
    static const unsigned char empty = 0;
    if (!HMAC(EVP_sha1(), key ? key : &empty, (int)klen, msg ? msg : &empty, mlen, out, &len)) return -1;
    return len == 20 ? 0 : -1;
}
