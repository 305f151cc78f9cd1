#ifndef CDKIM_H
#define CDKIM_H
/* OpenDKIM's library (Debian libopendkim-dev) for qmail-dkim, and the few
 * helpers that are easier in C: the DNS query functions handed to the library
 * (glibc's resolver, optionally pointed at other name servers) and the type of a
 * private key as OpenSSL reads it. */
#include <sys/types.h>
#include <stdbool.h>
#include <opendkim/dkim.h>

/* Installs the library's DNS query functions: glibc's res_nsend over a resolver
 * state read from /etc/resolv.conf, or, when `servers` is a non-empty
 * "ip[:port],ip[:port]" list (IPv4), those servers instead. timeout_seconds is
 * the per-try timeout (two tries). Returns 0, or -1 when the resolver could not
 * be initialised or no server in `servers` parses. */
int cdkim_set_resolver(DKIM_LIB *lib, const char *servers, int timeout_seconds);

/* The type of a PEM (or DER) private key: 1 RSA, 2 Ed25519, 0 unreadable or other. */
int cdkim_key_type(const unsigned char *key, size_t len);

/* dkim_options with an int or a string array argument (Swift-friendly). */
int cdkim_set_flags(DKIM_LIB *lib, unsigned int flags);
int cdkim_set_uint64(DKIM_LIB *lib, int opt, uint64_t value);
int cdkim_set_sign_headers(DKIM_LIB *lib, const char **names);

#endif
