/*
 * identity.h - which fields identify a probe on the wire, for the sending
 * side (the key a probe is indexed under) and the receiving side (the key a
 * reply points to, and the full comparison that decides a match).  Pure.
 *
 *   icmp: echo id and sequence          udp: the UDP checksum
 *   tcp:  the SYN's sequence number     sctp: source port
 * and, for all, the destination address, the source address when known,
 * both ports, and SCTP's initiate tag when the reply carries it.
 */
#ifndef BROKERPKG_IDENTITY_H
#define BROKERPKG_IDENTITY_H

#include <stdbool.h>
#include <stdint.h>

#include "decode.h"
#include "probe_table.h"

uint32_t icmp_wire_key(uint16_t id, uint16_t sequence);
uint32_t probe_wire_key(const struct probe *probe);
uint32_t reply_wire_key(const struct decoded_reply *reply);

/* True when REPLY answers PROBE (every field both sides know agrees). */
bool reply_matches_probe(const struct decoded_reply *reply,
                         const struct probe *probe);

#endif
