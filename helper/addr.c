/*
 * addr.c - IPv4/IPv6 address helpers (see addr.h).
 */
#include "addr.h"

#include <arpa/inet.h>
#include <string.h>

bool ip_address_parse(int family, const char *text, struct ip_address *out)
{
    memset(out, 0, sizeof(*out));
    if (inet_pton(family, text, &out->u) != 1) {
        return false;
    }
    out->family = family;
    return true;
}

/* Dotted quad by hand: glibc's inet_ntop formats IPv4 with sprintf, several
   times the cost, and every reply line holds an address. */
static void format_ipv4(const struct in_addr *address, char *text)
{
    const uint8_t *bytes = (const uint8_t *)address;
    size_t used = 0;

    for (int i = 0; i < 4; i++) {
        unsigned byte = bytes[i];

        if (i > 0) {
            text[used++] = '.';
        }
        if (byte >= 100) {
            text[used++] = (char)('0' + byte / 100);
        }
        if (byte >= 10) {
            text[used++] = (char)('0' + byte / 10 % 10);
        }
        text[used++] = (char)('0' + byte % 10);
    }
    text[used] = '\0';
}

void ip_address_format(const struct ip_address *address, char *text)
{
    if (address->family == AF_INET) {
        format_ipv4(&address->u.v4, text);
    } else if (inet_ntop(address->family, &address->u, text, IP_TEXT_MAX)
               == NULL) {
        strcpy(text, "?");
    }
}

size_t ip_address_length(const struct ip_address *address)
{
    return address->family == AF_INET6 ? sizeof(struct in6_addr)
                                       : sizeof(struct in_addr);
}

bool ip_address_equal(const struct ip_address *a, const struct ip_address *b)
{
    return a->family == b->family
        && memcmp(&a->u, &b->u, ip_address_length(a)) == 0;
}

socklen_t ip_address_to_sockaddr(const struct ip_address *address,
                                 unsigned port,
                                 struct sockaddr_storage *storage)
{
    memset(storage, 0, sizeof(*storage));
    if (address->family == AF_INET6) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)storage;

        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)port);
        sin6->sin6_addr = address->u.v6;
        return sizeof(*sin6);
    }
    struct sockaddr_in *sin = (struct sockaddr_in *)storage;

    sin->sin_family = AF_INET;
    sin->sin_port = htons((uint16_t)port);
    sin->sin_addr = address->u.v4;
    return sizeof(*sin);
}

bool ip_address_from_sockaddr(const struct sockaddr *sa, socklen_t length,
                              struct ip_address *out, unsigned *port)
{
    memset(out, 0, sizeof(*out));
    if (sa->sa_family == AF_INET6 && length >= sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;

        out->family = AF_INET6;
        out->u.v6 = sin6->sin6_addr;
        if (port != NULL) {
            *port = ntohs(sin6->sin6_port);
        }
        return true;
    }
    if (sa->sa_family == AF_INET && length >= sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;

        out->family = AF_INET;
        out->u.v4 = sin->sin_addr;
        if (port != NULL) {
            *port = ntohs(sin->sin_port);
        }
        return true;
    }
    return false;
}

bool ip_address_is_unspecified(const struct ip_address *address)
{
    if (address->family == AF_INET) {
        return address->u.v4.s_addr == 0;
    }
    return IN6_IS_ADDR_UNSPECIFIED(&address->u.v6);
}

bool ip_address_is_multicast(const struct ip_address *address)
{
    if (address->family == AF_INET) {
        return (address->u.bytes[0] & 0xf0) == 0xe0;
    }
    return IN6_IS_ADDR_MULTICAST(&address->u.v6);
}

bool ip_address_is_limited_broadcast(const struct ip_address *address)
{
    return address->family == AF_INET && address->u.v4.s_addr == 0xffffffffu;
}

bool ip_address_unmap_v4(const struct ip_address *address,
                         struct ip_address *v4)
{
    if (address->family != AF_INET6
        || !IN6_IS_ADDR_V4MAPPED(&address->u.v6)) {
        return false;
    }
    memset(v4, 0, sizeof(*v4));
    v4->family = AF_INET;
    memcpy(&v4->u.v4, &address->u.bytes[12], sizeof(v4->u.v4));
    return true;
}
