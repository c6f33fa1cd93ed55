/*
 * port_holds.c - reference-counted source port holds (see port_holds.h).
 *
 * Holds are found by port in a small hash table of chains: a helper holds
 * as many as it has distinct (protocol, address, port) among its probes in
 * flight, each a socket, so RLIMIT_NOFILE bounds them.
 */
#include "port_holds.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>

#include "net.h"

#define HOLD_BUCKETS 256

struct port_hold {
    enum probe_protocol protocol;
    struct ip_address address;
    uint16_t port;
    int fd;
    unsigned probes;            /* probes in flight that took it */
    struct port_hold *next;     /* in its bucket */
};

struct port_holds {
    struct port_hold *buckets[HOLD_BUCKETS];
};

struct port_holds *port_holds_create(void)
{
    return calloc(1, sizeof(struct port_holds));
}

void port_holds_destroy(struct port_holds *holds)
{
    for (unsigned b = 0; b < HOLD_BUCKETS; b++) {
        struct port_hold *hold = holds->buckets[b];

        while (hold != NULL) {
            struct port_hold *next = hold->next;

            net_release_port(hold->fd);
            free(hold);
            hold = next;
        }
    }
    free(holds);
}

static struct port_hold **bucket_of(struct port_holds *holds, uint16_t port)
{
    return &holds->buckets[port % HOLD_BUCKETS];
}

static struct port_hold *find_hold(struct port_holds *holds,
                                   enum probe_protocol protocol,
                                   const struct ip_address *address,
                                   uint16_t port)
{
    for (struct port_hold *hold = *bucket_of(holds, port); hold != NULL;
         hold = hold->next) {
        if (hold->protocol == protocol && hold->port == port
            && ip_address_equal(&hold->address, address)) {
            return hold;
        }
    }
    return NULL;
}

int port_holds_take(struct port_holds *holds, enum probe_protocol protocol,
                    const struct ip_address *address, uint16_t port,
                    struct port_hold **out)
{
    struct port_hold *hold = find_hold(holds, protocol, address, port);
    int fd;
    int error;

    if (hold == NULL) {
        error = net_hold_port(protocol, address, port, &fd);
        if (error != 0) {
            return error;
        }
        if (fd < 0) {
            *out = NULL;        /* nothing can be bound there: see net.h */
            return 0;
        }
        hold = calloc(1, sizeof(*hold));
        if (hold == NULL) {
            net_release_port(fd);
            return ENOMEM;
        }
        hold->protocol = protocol;
        hold->address = *address;
        hold->port = port;
        hold->fd = fd;
        hold->next = *bucket_of(holds, port);
        *bucket_of(holds, port) = hold;
    }
    hold->probes++;
    *out = hold;
    return 0;
}

void port_holds_release(struct port_holds *holds, struct port_hold *hold)
{
    struct port_hold **link;

    if (hold == NULL || --hold->probes > 0) {
        return;
    }
    link = bucket_of(holds, hold->port);
    while (*link != hold) {
        link = &(*link)->next;
    }
    *link = hold->next;
    net_release_port(hold->fd);
    free(hold);
}
