/*
 * addr.h - an IPv4 or IPv6 address as the helper stores it, with parsing,
 * formatting and comparison.  Pure.
 */
#ifndef BROKERPKG_ADDR_H
#define BROKERPKG_ADDR_H

#include <netinet/in.h>
#include <stdbool.h>
#include <sys/socket.h>

struct ip_address {
    int family;                 /* AF_INET or AF_INET6; 0 when unset */
    union {
        struct in_addr v4;
        struct in6_addr v6;
        unsigned char bytes[16];
    } u;
};

#define IP_TEXT_MAX 46          /* INET6_ADDRSTRLEN */

/* Parse numeric TEXT of FAMILY; false if it is not one. */
bool ip_address_parse(int family, const char *text, struct ip_address *out);

/* Format into TEXT (IP_TEXT_MAX bytes). */
void ip_address_format(const struct ip_address *address, char *text);

bool ip_address_equal(const struct ip_address *a, const struct ip_address *b);

/* 4 or 16 */
size_t ip_address_length(const struct ip_address *address);

/* Fill a sockaddr for ADDRESS and PORT (host order); returns its length. */
socklen_t ip_address_to_sockaddr(const struct ip_address *address,
                                 unsigned port,
                                 struct sockaddr_storage *storage);

/* Read the address (and port, if PORT is not NULL) of a sockaddr. */
bool ip_address_from_sockaddr(const struct sockaddr *sa, socklen_t length,
                              struct ip_address *out, unsigned *port);

/* True for exactly 0.0.0.0 and :: (the "any" address a bind may name). */
bool ip_address_is_unspecified(const struct ip_address *address);

/* True for 224.0.0.0/4 and ff00::/8 */
bool ip_address_is_multicast(const struct ip_address *address);

/* True for 255.255.255.255 */
bool ip_address_is_limited_broadcast(const struct ip_address *address);

/*
 * True when ADDRESS is an IPv4-mapped IPv6 address (::ffff:a.b.c.d), and
 * then the IPv4 address a.b.c.d is stored in V4.
 */
bool ip_address_unmap_v4(const struct ip_address *address,
                         struct ip_address *v4);

#endif
