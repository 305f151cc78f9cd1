#ifndef SWIFTQMAIL_CNET_H
#define SWIFTQMAIL_CNET_H
#include <stddef.h>
#include <sys/types.h>

/* Connects to an IPv4 (len 4) or IPv6 (len 16) address within timeout_ms.
   Returns the socket (blocking, close-on-exec), or -errno (-ETIMEDOUT on timeout). */
int qs_connect(const unsigned char *addr, int addrlen, int port, int timeout_ms);
/* Per-operation timeout for reads and writes on a socket. */
int qs_socket_timeout(int fd, int timeout_ms);
/* The read timeout alone (a reply's remaining time); at least 1 ms. */
int qs_socket_read_timeout(int fd, int timeout_ms);
/* The peer's address as text (for reports). */
int qs_peer_name(int fd, char *buf, size_t len);
/* Converts text to 4 or 16 address bytes; returns the length or 0. */
int qs_parse_ip(const char *text, unsigned char *out);
int qs_format_ip(const unsigned char *addr, int addrlen, char *buf, size_t len);

/* TLS client over a connected socket (OpenSSL). verify: check the
   certificate chain and the host name `servername`. cafile may be NULL
   (system store). Returns a handle or NULL with a reason in err. */
void *qs_tls_connect(int fd, const char *servername, int verify, const char *cafile, char *err, size_t errlen);
/* TLS server side (for tests' own servers is not needed; kept minimal). */
ssize_t qs_tls_read(void *tls, void *buf, size_t len);
ssize_t qs_tls_write(void *tls, const void *buf, size_t len);
void qs_tls_close(void *tls);
/* The negotiated protocol and cipher, e.g. "TLSv1.3 TLS_AES_256_GCM_SHA384". */
int qs_tls_description(void *tls, char *buf, size_t len);
/* TLS server side over rfd/wfd (the same socket, or tcpserver's 0 and 1),
   certificate chain and key from one PEM file. NULL with a reason in err. */
void *qs_tls_accept(int rfd, int wfd, const char *pemfile, char *err, size_t errlen);
/* Bytes OpenSSL holds already decrypted. */
int qs_tls_pending(void *tls);
/* A listening socket on addr:port (addrlen 4 or 16); the socket or -errno. */
int qs_listen(const unsigned char *addr, int addrlen, int port, int backlog);
/* The local port of a bound socket, or -1. */
int qs_local_port(int fd);
/* accept4 (close-on-exec, TCP_NODELAY) with both addresses as text; the socket or -errno. */
int qs_accept(int lfd, char *remote, size_t rlen, int *rport, char *local, size_t llen, int *lport);
/* Base64 through OpenSSL: decoded length or -1; encoded text length. */
int qs_base64_decode(const unsigned char *in, int len, unsigned char *out);
int qs_base64_encode(const unsigned char *in, int len, unsigned char *out);
/* connect() a datagram socket to addr:port; 0 or -errno. */
int qs_connect_udp(int fd, const unsigned char *addr, int addrlen, int port);
#endif
