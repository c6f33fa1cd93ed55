/*
 * probe_table.h - the probes in flight: storage, lookup by token, lookup by
 * the identifying fields a reply quotes ("wire key"), and the deadline order.
 * Every operation is O(1) or O(log n) in the number of probes in flight.
 */
#ifndef BROKERPKG_PROBE_TABLE_H
#define BROKERPKG_PROBE_TABLE_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "addr.h"
#include "command.h"

struct port_hold;

struct probe {
    int32_t token;
    enum probe_protocol protocol;
    bool details;
    bool source_known;              /* source below is meaningful */
    struct ip_address destination;
    struct ip_address source;
    uint16_t source_port;           /* udp, tcp, sctp (host order) */
    uint16_t destination_port;
    uint16_t icmp_id;               /* icmp */
    uint16_t icmp_sequence;
    uint16_t udp_checksum;          /* udp: the probe's identity */
    uint32_t sctp_tag;              /* sctp: INIT's initiate tag */
    uint32_t tcp_sequence;          /* tcp: the SYN's, the probe's identity */
    struct port_hold *port_hold;    /* its local-port's hold, or NULL */
    struct timespec sent;           /* CLOCK_REALTIME when handed to the kernel,
                                       then the kernel's transmit timestamp */
    bool sent_stamped;              /* sent is the transmit timestamp */
    uint64_t deadline_ns;           /* CLOCK_MONOTONIC */
    /* table bookkeeping */
    bool in_use;
    uint32_t generation;            /* distinguishes reuses of a slot */
    uint32_t slot;
    uint32_t wire_key;
    bool wire_linked;
    uint32_t heap_index;
    uint32_t token_next;            /* chain links: slot + 1, 0 ends */
    uint32_t wire_next;
};

struct probe_table;

/* Returns NULL when memory for the index cannot be had. */
struct probe_table *probe_table_create(unsigned capacity);
void probe_table_destroy(struct probe_table *table);

unsigned probe_table_count(const struct probe_table *table);
unsigned probe_table_capacity(const struct probe_table *table);

/* A zeroed probe registered under TOKEN; NULL when the table is full. */
struct probe *probe_alloc(struct probe_table *table, int32_t token);

/* Forget PROBE: token, wire key and deadline.  PROBE is invalid afterwards. */
void probe_free(struct probe_table *table, struct probe *probe);

struct probe *probe_by_token(const struct probe_table *table, int32_t token);

/* The probe in SLOT if it is in flight and still GENERATION, else NULL. */
struct probe *probe_by_slot(const struct probe_table *table, uint32_t slot,
                            uint32_t generation);

/* Index PROBE under (its protocol, KEY).  Several probes may share a key. */
void probe_link_wire_key(struct probe_table *table, struct probe *probe,
                         uint32_t key);

/* Take PROBE out of the wire index: no answer can find it any more. */
void probe_unlink_wire_key(struct probe_table *table, struct probe *probe);

/* First/next probe with PROTOCOL and KEY, NULL at the end. */
struct probe *probe_wire_first(const struct probe_table *table,
                               enum probe_protocol protocol, uint32_t key);
struct probe *probe_wire_next(const struct probe_table *table,
                              const struct probe *probe);

/* Set PROBE's deadline (CLOCK_MONOTONIC ns) and place it in deadline order. */
void probe_set_deadline(struct probe_table *table, struct probe *probe,
                        uint64_t deadline_ns);

/* The probe whose deadline comes first, or NULL when none is in flight. */
struct probe *probe_earliest(const struct probe_table *table);

#endif
