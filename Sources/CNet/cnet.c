#define _GNU_SOURCE
#include "cnet.h"
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
#include <pthread.h>
#include <sys/stat.h>
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509v3.h>

/* addr (4 or 16 bytes) and port as a socket address; 0 for another length. */
static int socket_address(const unsigned char *addr, int addrlen, int port, struct sockaddr_storage *ss, socklen_t *sl)
{
    memset(ss, 0, sizeof *ss);
    if (addrlen == 4) {
        struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
        s4->sin_family = AF_INET; s4->sin_port = htons(port); memcpy(&s4->sin_addr, addr, 4); *sl = sizeof *s4;
        return 1;
    }
    if (addrlen == 16) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
        s6->sin6_family = AF_INET6; s6->sin6_port = htons(port); memcpy(&s6->sin6_addr, addr, 16); *sl = sizeof *s6;
        return 1;
    }
    return 0;
}

int qs_connect(const unsigned char *addr, int addrlen, int port, int timeout_ms)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    int fd, flags, rc, err = 0;
    socklen_t el = sizeof err;
    struct pollfd p;
    if (!socket_address(addr, addrlen, port, &ss, &sl)) return -EINVAL;
    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd == -1) return -errno;
    rc = connect(fd, (struct sockaddr *)&ss, sl);
    if (rc == -1 && errno != EINPROGRESS) { rc = -errno; close(fd); return rc; }
    if (rc == -1) {
        p.fd = fd; p.events = POLLOUT; p.revents = 0;
        do { rc = poll(&p, 1, timeout_ms); } while (rc == -1 && errno == EINTR);
        if (rc == 0) { close(fd); return -ETIMEDOUT; }
        if (rc == -1) { rc = -errno; close(fd); return rc; }
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) == -1) { rc = -errno; close(fd); return rc; }
        if (err) { close(fd); return -err; }
    }
    flags = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
    rc = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &rc, sizeof rc);
    return fd;
}

int qs_socket_timeout(int fd, int timeout_ms)
{
    struct timeval tv;
    tv.tv_sec = timeout_ms / 1000; tv.tv_usec = (timeout_ms % 1000) * 1000;
    if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == -1) return -1;
    return setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

int qs_socket_read_timeout(int fd, int timeout_ms)
{
    struct timeval tv;
    if (timeout_ms < 1) timeout_ms = 1;   /* 0 would mean "wait for ever" */
    tv.tv_sec = timeout_ms / 1000; tv.tv_usec = (timeout_ms % 1000) * 1000;
    return setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

int qs_peer_name(int fd, char *buf, size_t len)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) == -1) return -1;
    if (ss.ss_family == AF_INET) return inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, buf, len) ? 0 : -1;
    return inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, buf, len) ? 0 : -1;
}

int qs_parse_ip(const char *text, unsigned char *out)
{
    if (inet_pton(AF_INET, text, out) == 1) return 4;
    if (inet_pton(AF_INET6, text, out) == 1) return 16;
    return 0;
}

int qs_format_ip(const unsigned char *addr, int addrlen, char *buf, size_t len)
{
    return inet_ntop(addrlen == 4 ? AF_INET : AF_INET6, addr, buf, len) ? 0 : -1;
}

/* One client context per verification mode, shared by the delivery threads. The
 * verifying one is rebuilt when the CA file's name or modification time changes
 * (tlsca edited, then HUP). Connections keep a reference to the context they
 * were made with, so replacing it never pulls it from under them. */
static pthread_mutex_t ctx_lock = PTHREAD_MUTEX_INITIALIZER;
static SSL_CTX *ctx_verify = 0, *ctx_noverify = 0;
static char ctx_verify_ca[4096];
static struct timespec ctx_verify_mtime;

static SSL_CTX *tls_context(int verify, const char *cafile, char *err, size_t errlen)
{
    const char *ca = cafile ? cafile : "";
    struct stat st;
    struct timespec mtime = {0, 0};
    SSL_CTX *c;
    if (verify && *ca && stat(ca, &st) == 0) mtime = st.st_mtim;
    pthread_mutex_lock(&ctx_lock);
    c = verify ? ctx_verify : ctx_noverify;
    if (c && verify && (strcmp(ctx_verify_ca, ca) != 0 || mtime.tv_sec != ctx_verify_mtime.tv_sec
                        || mtime.tv_nsec != ctx_verify_mtime.tv_nsec)) {
        SSL_CTX_free(c);
        ctx_verify = c = 0;
    }
    if (!c) {
        c = SSL_CTX_new(TLS_client_method());
        if (!c) {
            pthread_mutex_unlock(&ctx_lock);
            snprintf(err, errlen, "unable to create TLS context");
            return 0;
        }
        SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION);
        if (verify) {
            SSL_CTX_set_verify(c, SSL_VERIFY_PEER, 0);
            if (*ca) SSL_CTX_load_verify_locations(c, ca, 0);
            else SSL_CTX_set_default_verify_paths(c);
            ctx_verify = c;
            snprintf(ctx_verify_ca, sizeof ctx_verify_ca, "%s", ca);
            ctx_verify_mtime = mtime;
        } else {
            SSL_CTX_set_verify(c, SSL_VERIFY_NONE, 0);
            ctx_noverify = c;
        }
    }
    SSL_CTX_up_ref(c);
    pthread_mutex_unlock(&ctx_lock);
    return c;
}

void *qs_tls_connect(int fd, const char *servername, int verify, const char *cafile, char *err, size_t errlen)
{
    SSL *ssl;
    SSL_CTX *ctx = tls_context(verify, cafile, err, errlen);
    if (!ctx) return 0;
    ssl = SSL_new(ctx);
    SSL_CTX_free(ctx);   /* the session holds its own reference */
    if (!ssl) { snprintf(err, errlen, "unable to create TLS session"); return 0; }
    SSL_set_fd(ssl, fd);
    if (servername && *servername) {
        SSL_set_tlsext_host_name(ssl, servername);
        if (verify) SSL_set1_host(ssl, servername);
    }
    if (SSL_connect(ssl) != 1) {
        unsigned long e = ERR_get_error();
        long vr = SSL_get_verify_result(ssl);
        if (vr != X509_V_OK) snprintf(err, errlen, "certificate verification failed: %s", X509_verify_cert_error_string(vr));
        else if (e) ERR_error_string_n(e, err, errlen);
        else snprintf(err, errlen, "TLS handshake failed");
        SSL_free(ssl);
        ERR_clear_error();
        return 0;
    }
    return ssl;
}

ssize_t qs_tls_read(void *tls, void *buf, size_t len)
{
    int n = SSL_read((SSL *)tls, buf, (int)len);
    if (n > 0) return n;
    if (SSL_get_error((SSL *)tls, n) == SSL_ERROR_ZERO_RETURN) return 0;
    return -1;
}

ssize_t qs_tls_write(void *tls, const void *buf, size_t len)
{
    int n = SSL_write((SSL *)tls, buf, (int)len);
    return n > 0 ? n : -1;
}

void qs_tls_close(void *tls)
{
    if (!tls) return;
    SSL_shutdown((SSL *)tls);
    SSL_free((SSL *)tls);
}

int qs_tls_description(void *tls, char *buf, size_t len)
{
    snprintf(buf, len, "%s %s", SSL_get_version((SSL *)tls), SSL_get_cipher((SSL *)tls));
    return 0;
}

int qs_connect_udp(int fd, const unsigned char *addr, int addrlen, int port)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    if (!socket_address(addr, addrlen, port, &ss, &sl)) return -EINVAL;
    return connect(fd, (struct sockaddr *)&ss, sl) == -1 ? -errno : 0;
}

/* ---- Server side: TLS accept and listening sockets (qmail-smtpd) ---- */

/* One server context per certificate file, rebuilt when the file's name or
 * modification time changes (a renewed certificate takes effect for new
 * sessions without a restart). */
static pthread_mutex_t srv_lock = PTHREAD_MUTEX_INITIALIZER;
static SSL_CTX *srv_ctx = 0;
static char srv_pem[4096];
static struct timespec srv_mtime;

static SSL_CTX *server_context(const char *pem, char *err, size_t errlen)
{
    struct stat st;
    SSL_CTX *c;
    if (stat(pem, &st) == -1) { snprintf(err, errlen, "unable to stat %s", pem); return 0; }
    pthread_mutex_lock(&srv_lock);
    c = srv_ctx;
    if (c && (strcmp(srv_pem, pem) != 0 || st.st_mtim.tv_sec != srv_mtime.tv_sec || st.st_mtim.tv_nsec != srv_mtime.tv_nsec)) {
        SSL_CTX_free(c);
        srv_ctx = c = 0;
    }
    if (!c) {
        c = SSL_CTX_new(TLS_server_method());
        if (!c) { pthread_mutex_unlock(&srv_lock); snprintf(err, errlen, "unable to create TLS context"); return 0; }
        SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION);
        if (SSL_CTX_use_certificate_chain_file(c, pem) != 1 || SSL_CTX_use_PrivateKey_file(c, pem, SSL_FILETYPE_PEM) != 1
            || SSL_CTX_check_private_key(c) != 1) {
            unsigned long e = ERR_get_error();
            if (e) ERR_error_string_n(e, err, errlen); else snprintf(err, errlen, "unable to load %s", pem);
            ERR_clear_error();
            SSL_CTX_free(c);
            pthread_mutex_unlock(&srv_lock);
            return 0;
        }
        srv_ctx = c;
        snprintf(srv_pem, sizeof srv_pem, "%s", pem);
        srv_mtime = st.st_mtim;
    }
    SSL_CTX_up_ref(c);
    pthread_mutex_unlock(&srv_lock);
    return c;
}

void *qs_tls_accept(int rfd, int wfd, const char *pemfile, char *err, size_t errlen)
{
    SSL *ssl;
    SSL_CTX *ctx = server_context(pemfile, err, errlen);
    if (!ctx) return 0;
    ssl = SSL_new(ctx);
    SSL_CTX_free(ctx);
    if (!ssl) { snprintf(err, errlen, "unable to create TLS session"); return 0; }
    SSL_set_rfd(ssl, rfd);
    SSL_set_wfd(ssl, wfd);
    if (SSL_accept(ssl) != 1) {
        unsigned long e = ERR_get_error();
        if (e) ERR_error_string_n(e, err, errlen); else snprintf(err, errlen, "TLS handshake failed");
        SSL_free(ssl);
        ERR_clear_error();
        return 0;
    }
    return ssl;
}

int qs_tls_pending(void *tls)
{
    return SSL_pending((SSL *)tls);
}

/* A listening TCP socket on addr:port (len 4 or 16), close-on-exec, with
   SO_REUSEADDR (and IPV6_V6ONLY for IPv6, so [::] and 0.0.0.0 can both be
   given). Returns the socket or -errno. */
int qs_listen(const unsigned char *addr, int addrlen, int port, int backlog)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    int fd, one = 1;
    if (!socket_address(addr, addrlen, port, &ss, &sl)) return -EINVAL;
    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd == -1) return -errno;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (addrlen == 16) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&ss, sl) == -1 || listen(fd, backlog) == -1) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

/* The port a socket is bound to (after binding port 0). */
int qs_local_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == -1) return -1;
    if (ss.ss_family == AF_INET) return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
}

/* accept4 with close-on-exec and TCP_NODELAY; the peer and local addresses
   as text (IPv4-mapped IPv6 addresses are given as IPv4). -errno on failure. */
static void addr_text(struct sockaddr_storage *ss, char *buf, size_t len, int *port)
{
    if (ss->ss_family == AF_INET) {
        struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &s4->sin_addr, buf, len); *port = ntohs(s4->sin_port);
    } else {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
        if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) inet_ntop(AF_INET, (unsigned char *)&s6->sin6_addr + 12, buf, len);
        else inet_ntop(AF_INET6, &s6->sin6_addr, buf, len);
        *port = ntohs(s6->sin6_port);
    }
}

int qs_accept(int lfd, char *remote, size_t rlen, int *rport, char *local, size_t llen, int *lport)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    int one = 1;
    int fd = accept4(lfd, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC);
    if (fd == -1) return -errno;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    addr_text(&ss, remote, rlen, rport);
    sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) addr_text(&ss, local, llen, lport);
    else { snprintf(local, llen, "unknown"); *lport = 0; }
    return fd;
}

/* Base64 (RFC 4648) through OpenSSL's EVP_DecodeBlock. Returns the decoded
   length, or -1 for input that is not base64. out needs 3 * (len / 4) + 3 bytes. */
int qs_base64_decode(const unsigned char *in, int len, unsigned char *out)
{
    int n, pad = 0;
    while (len > 0 && (in[len - 1] == '\r' || in[len - 1] == '\n' || in[len - 1] == ' ')) len--;
    if (len == 0) return 0;
    if (len % 4 != 0) return -1;
    if (in[len - 1] == '=') pad++;
    if (len > 1 && in[len - 2] == '=') pad++;
    n = EVP_DecodeBlock(out, in, len);
    if (n < 0) return -1;
    return n - pad;
}

/* Base64 of len bytes into out (4 * ((len + 2) / 3) + 1 bytes); the text length. */
int qs_base64_encode(const unsigned char *in, int len, unsigned char *out)
{
    return EVP_EncodeBlock(out, in, len);
}
