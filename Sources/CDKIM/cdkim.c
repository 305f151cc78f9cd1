#include "cdkim.h"
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <resolv.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

/* One resolver state for the life of the process: qmail-dkim verifies one message. */
static struct __res_state cdkim_res;
static int cdkim_res_ready;

struct cdkim_query {
    int error;
    size_t length;
};

static int cdkim_query_start(void *srv, int type, unsigned char *query, unsigned char *buf,
                             size_t buflen, void **qh)
{
    unsigned char packet[NS_PACKETSZ + 512];
    struct cdkim_query *q;
    int n, answer;
    (void) srv;
    if (!cdkim_res_ready)
        return DKIM_DNS_ERROR;
    n = res_nmkquery(&cdkim_res, QUERY, (const char *) query, C_IN, type, NULL, 0, NULL,
                     packet, sizeof packet);
    if (n < 0)
        return DKIM_DNS_ERROR;
    answer = res_nsend(&cdkim_res, packet, n, buf, (int) buflen);
    q = malloc(sizeof *q);
    if (q == NULL)
        return DKIM_DNS_ERROR;
    if (answer < 0) {
        q->error = errno ? errno : ETIMEDOUT;
        q->length = 0;
        free(q);
        return DKIM_DNS_ERROR;
    }
    q->error = 0;
    q->length = (size_t) answer;
    *qh = q;
    return DKIM_DNS_SUCCESS;
}

static int cdkim_query_waitreply(void *srv, void *qh, struct timeval *to, size_t *bytes,
                                 int *error, int *dnssec)
{
    struct cdkim_query *q = qh;
    (void) srv; (void) to;
    if (bytes != NULL) *bytes = q->length;
    if (error != NULL) *error = q->error;
    if (dnssec != NULL) *dnssec = DKIM_DNSSEC_UNKNOWN;
    return DKIM_DNS_SUCCESS;
}

static int cdkim_query_cancel(void *srv, void *qh)
{
    (void) srv;
    free(qh);
    return 0;
}

int cdkim_set_resolver(DKIM_LIB *lib, const char *servers, int timeout_seconds)
{
    memset(&cdkim_res, 0, sizeof cdkim_res);
    if (res_ninit(&cdkim_res) != 0)
        return -1;
    cdkim_res.retrans = timeout_seconds > 0 ? timeout_seconds : 5;
    cdkim_res.retry = 2;
    if (servers != NULL && *servers != '\0') {
        char copy[1024];
        char *item, *save = NULL;
        int count = 0;
        strncpy(copy, servers, sizeof copy - 1);
        copy[sizeof copy - 1] = '\0';
        for (item = strtok_r(copy, ", ", &save); item != NULL && count < MAXNS;
             item = strtok_r(NULL, ", ", &save)) {
            struct sockaddr_in sin;
            char *colon = strchr(item, ':');
            int port = 53;
            if (colon != NULL) {
                *colon = '\0';
                port = atoi(colon + 1);
                if (port <= 0 || port > 65535)
                    continue;
            }
            memset(&sin, 0, sizeof sin);
            sin.sin_family = AF_INET;
            sin.sin_port = htons((unsigned short) port);
            if (inet_pton(AF_INET, item, &sin.sin_addr) != 1)
                continue;
            cdkim_res.nsaddr_list[count++] = sin;
        }
        if (count == 0)
            return -1;
        cdkim_res.nscount = count;
        /* Forget any IPv6 servers res_ninit found: only the list above is asked. */
        for (int i = 0; i < MAXNS; i++)
            cdkim_res._u._ext.nsaddrs[i] = NULL;
        cdkim_res._u._ext.nscount = 0;
    }
    cdkim_res_ready = 1;
    (void) dkim_dns_set_query_service(lib, &cdkim_res);
    dkim_dns_set_query_start(lib, cdkim_query_start);
    dkim_dns_set_query_waitreply(lib, cdkim_query_waitreply);
    dkim_dns_set_query_cancel(lib, cdkim_query_cancel);
    /* The library's own init/close would replace the service handle set above. */
    dkim_dns_set_init(lib, NULL);
    dkim_dns_set_close(lib, NULL);
    return 0;
}

int cdkim_key_type(const unsigned char *key, size_t len)
{
    BIO *bio = BIO_new_mem_buf(key, (int) len);
    EVP_PKEY *pkey;
    int type = 0;
    if (bio == NULL)
        return 0;
    pkey = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
    if (pkey == NULL) {
        (void) BIO_reset(bio);
        pkey = d2i_PrivateKey_bio(bio, NULL);
    }
    if (pkey != NULL) {
        switch (EVP_PKEY_get_id(pkey)) {
        case EVP_PKEY_RSA: type = 1; break;
        case EVP_PKEY_ED25519: type = 2; break;
        default: type = 0;
        }
        EVP_PKEY_free(pkey);
    }
    BIO_free(bio);
    return type;
}

int cdkim_set_flags(DKIM_LIB *lib, unsigned int flags)
{
    unsigned int current = 0;
    if (dkim_options(lib, DKIM_OP_GETOPT, DKIM_OPTS_FLAGS, &current, sizeof current) != DKIM_STAT_OK)
        return -1;
    current |= flags;
    return dkim_options(lib, DKIM_OP_SETOPT, DKIM_OPTS_FLAGS, &current, sizeof current) == DKIM_STAT_OK ? 0 : -1;
}

int cdkim_set_uint64(DKIM_LIB *lib, int opt, uint64_t value)
{
    return dkim_options(lib, DKIM_OP_SETOPT, opt, &value, sizeof value) == DKIM_STAT_OK ? 0 : -1;
}

int cdkim_set_sign_headers(DKIM_LIB *lib, const char **names)
{
    return dkim_options(lib, DKIM_OP_SETOPT, DKIM_OPTS_SIGNHDRS, names, sizeof names) == DKIM_STAT_OK ? 0 : -1;
}
