/*
 * identity.c - probe identity on the wire (see identity.h).
 */
#include "identity.h"

uint32_t icmp_wire_key(uint16_t id, uint16_t sequence)
{
    return (uint32_t)id << 16 | sequence;
}

uint32_t probe_wire_key(const struct probe *probe)
{
    switch (probe->protocol) {
    case PROBE_ICMP:
        return icmp_wire_key(probe->icmp_id, probe->icmp_sequence);
    case PROBE_UDP:
        return probe->udp_checksum;
    case PROBE_TCP:
        return probe->tcp_sequence;
    case PROBE_SCTP:
    case PROBE_PROTOCOL_COUNT:
        break;
    }
    return probe->source_port;
}

uint32_t reply_wire_key(const struct decoded_reply *reply)
{
    switch (reply->protocol) {
    case PROBE_ICMP:
        return icmp_wire_key(reply->icmp_id, reply->icmp_sequence);
    case PROBE_UDP:
        return reply->udp_checksum;
    case PROBE_TCP:
        return reply->tcp_sequence;
    case PROBE_SCTP:
    case PROBE_PROTOCOL_COUNT:
        break;
    }
    return reply->source_port;
}

static bool ports_match(const struct decoded_reply *reply,
                        const struct probe *probe)
{
    return reply->source_port == probe->source_port
           && reply->destination_port == probe->destination_port;
}

static bool sctp_tag_matches(const struct decoded_reply *reply,
                             const struct probe *probe)
{
    /* an ABORT with the T bit reflects the INIT's own tag, which is 0 */
    if (!reply->has_sctp_tag || reply->sctp_tag_reflected) {
        return !reply->has_sctp_tag || reply->sctp_tag == 0;
    }
    return reply->sctp_tag == probe->sctp_tag;
}

bool reply_matches_probe(const struct decoded_reply *reply,
                         const struct probe *probe)
{
    if (reply->protocol != probe->protocol
        || reply_wire_key(reply) != probe_wire_key(probe)
        || !ip_address_equal(&reply->probe_destination, &probe->destination)) {
        return false;
    }
    if (probe->source_known && reply->probe_source.family != 0
        && !ip_address_equal(&reply->probe_source, &probe->source)) {
        return false;
    }
    switch (probe->protocol) {
    case PROBE_ICMP:
        return true;
    case PROBE_UDP:
    case PROBE_TCP:
        return ports_match(reply, probe);
    case PROBE_SCTP:
        return ports_match(reply, probe) && sctp_tag_matches(reply, probe);
    case PROBE_PROTOCOL_COUNT:
        break;
    }
    return false;
}
