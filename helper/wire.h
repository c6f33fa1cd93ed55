/*
 * wire.h - every word of the request/reply protocol and every protocol limit,
 * in one place.  The man page (man/brokerpkg-helper.8) documents the same
 * table; tests/test_manpage.py keeps the two in step.
 */
#ifndef BROKERPKG_WIRE_H
#define BROKERPKG_WIRE_H

#define HELPER_VERSION "brokerpkg-0.1.0"

/* Framing limits */
#define LINE_MAX_BYTES 4095     /* bytes allowed before a request's newline */
#define MAX_ARGUMENT_PAIRS 32   /* NAME VALUE pairs parsed per request */
#define TOKEN_MAX 2147483647L

/* Commands */
#define CMD_SEND_PROBE "send-probe"
#define CMD_CHECK_SUPPORT "check-support"

/* send-probe argument names */
#define ARG_IP4 "ip-4"
#define ARG_IP6 "ip-6"
#define ARG_PROTOCOL "protocol"
#define ARG_PORT "port"
#define ARG_LOCAL_IP4 "local-ip-4"
#define ARG_LOCAL_IP6 "local-ip-6"
#define ARG_LOCAL_PORT "local-port"
#define ARG_LOCAL_DEVICE "local-device"
#define ARG_TIMEOUT "timeout"
#define ARG_TTL "ttl"
#define ARG_SIZE "size"
#define ARG_BIT_PATTERN "bit-pattern"
#define ARG_TOS "tos"
#define ARG_MARK "mark"
#define ARG_DETAILS "details"     /* extension */
#define ARG_FEATURE "feature"     /* check-support */

/* Protocol names */
#define PROTO_ICMP "icmp"
#define PROTO_UDP "udp"
#define PROTO_TCP "tcp"
#define PROTO_SCTP "sctp"

/* Replies */
#define R_REPLY "reply"
#define R_TTL_EXPIRED "ttl-expired"
#define R_NO_ROUTE "no-route"
#define R_NO_REPLY "no-reply"
#define R_NETWORK_DOWN "network-down"
#define R_PERMISSION_DENIED "permission-denied"
#define R_ADDRESS_IN_USE "address-in-use"
#define R_ADDRESS_NOT_AVAILABLE "address-not-available"
#define R_PROBES_EXHAUSTED "probes-exhausted"
#define R_INVALID_ARGUMENT "invalid-argument"
#define R_UNEXPECTED_ERROR "unexpected-error"
#define R_UNKNOWN_COMMAND "unknown-command"
#define R_FEATURE_SUPPORT "feature-support"
#define R_COMMAND_PARSE_ERROR "command-parse-error"
#define R_COMMAND_BUFFER_OVERFLOW "command-buffer-overflow"

/* Reply argument names */
#define RA_IP4 "ip-4"
#define RA_IP6 "ip-6"
#define RA_RTT "round-trip-time"
#define RA_MPLS "mpls"
#define RA_SUPPORT "support"
#define RA_REASON "reason"
#define RA_ERRNO "errno"
#define RA_REPLY_TTL "reply-ttl"      /* details extension */
#define RA_ICMP_TYPE "icmp-type"
#define RA_ICMP_CODE "icmp-code"
#define RA_REPLY_SIZE "reply-size"
#define RA_TCP_FLAGS "tcp-flags"

/* Reasons of invalid-argument replies (send-probe) */
#define REASON_UNSPECIFIED_SOURCE "unspecified-source"      /* 0.0.0.0, :: */
#define REASON_V4_MAPPED_DESTINATION "v4-mapped-destination" /* ::ffff:a.b.c.d */

/* Ranges of send-probe values */
#define PORT_MIN 1
#define PORT_MAX 65535
#define LOCAL_PORT_MIN 1024         /* below needs privilege to bind: refused */
#define TTL_MIN 1
#define TTL_MAX 255
#define TOS_MAX 255
#define BIT_PATTERN_MAX 255
#define SIZE_MAX_BYTES 9000         /* mtr-packet 0.95 accepts up to 9000 too */
#define TIMEOUT_MAX_SECONDS 3600
#define TIMEOUT_FRACTION_DIGITS 6   /* microsecond resolution */
#define MARK_MAX 4294967295UL

/* Defaults (mtr-packet's) */
#define DEFAULT_TTL 255
#define DEFAULT_SIZE 64
#define DEFAULT_TIMEOUT_SECONDS 10
#define DEFAULT_STREAM_PORT 80      /* tcp and sctp */
#define UDP_BASE_PORT 33434         /* udp destination ports vary from here */

/*
 * Probe capacity: more than mtr-packet's 10240; ICMP ids come in 65536 runs.
 * The fuzz harnesses build with a small table (make fuzz: -DPROBE_CAPACITY=
 * 1024) so that each execution does not set up 131072 slots.
 */
#ifndef PROBE_CAPACITY
#define PROBE_CAPACITY 131072
#endif

#endif
