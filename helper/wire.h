/*
 * wire.h - every word of the request/reply protocol and every protocol limit,
 * in one place: commands, argument names and values, replies, reply argument
 * names and values, reasons, feature names and check-support values.  The man
 * page (man/brokerpkg-helper.8) documents the same words; tests/test_manpage.py
 * keeps the two in step (each word here is in the page, each word the page
 * lists as a reply, reason or feature is here) and checks that no other file
 * of the helper spells a protocol word as a string literal of its own.
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
#define ARG_FLOW "flow"           /* extension */
#define ARG_FEATURE "feature"     /* check-support */

/* details values */
#define VALUE_YES "yes"
#define VALUE_NO "no"

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

/* tcp-flags values */
#define TCP_FLAGS_SYN_ACK "syn-ack"
#define TCP_FLAGS_RST "rst"

/* invalid-argument reasons */
#define REASON_UNKNOWN_ARGUMENT "unknown-argument"
#define REASON_DUPLICATE_ARGUMENT "duplicate-argument"
#define REASON_TOO_MANY_ARGUMENTS "too-many-arguments"
#define REASON_MISSING_ADDRESS "missing-address"
#define REASON_MISSING_FEATURE "missing-feature"
#define REASON_CONFLICTING_ADDRESS "conflicting-address"
#define REASON_LOCAL_ADDRESS_FAMILY_MISMATCH "local-address-family-mismatch"
#define REASON_IP4_INVALID "ip-4-invalid"
#define REASON_IP6_INVALID "ip-6-invalid"
#define REASON_LOCAL_IP4_INVALID "local-ip-4-invalid"
#define REASON_LOCAL_IP6_INVALID "local-ip-6-invalid"
#define REASON_PROTOCOL_INVALID "protocol-invalid"
#define REASON_PORT_INVALID "port-invalid"
#define REASON_PORT_OUT_OF_RANGE "port-out-of-range"
#define REASON_LOCAL_PORT_INVALID "local-port-invalid"
#define REASON_LOCAL_PORT_OUT_OF_RANGE "local-port-out-of-range"
#define REASON_LOCAL_DEVICE_INVALID "local-device-invalid"
#define REASON_TIMEOUT_INVALID "timeout-invalid"
#define REASON_TIMEOUT_OUT_OF_RANGE "timeout-out-of-range"
#define REASON_TTL_INVALID "ttl-invalid"
#define REASON_TTL_OUT_OF_RANGE "ttl-out-of-range"
#define REASON_SIZE_INVALID "size-invalid"
#define REASON_SIZE_OUT_OF_RANGE "size-out-of-range"
#define REASON_BIT_PATTERN_INVALID "bit-pattern-invalid"
#define REASON_BIT_PATTERN_OUT_OF_RANGE "bit-pattern-out-of-range"
#define REASON_TOS_INVALID "tos-invalid"
#define REASON_TOS_OUT_OF_RANGE "tos-out-of-range"
#define REASON_MARK_INVALID "mark-invalid"
#define REASON_MARK_OUT_OF_RANGE "mark-out-of-range"
#define REASON_DETAILS_INVALID "details-invalid"
#define REASON_FLOW_INVALID "flow-invalid"
#define REASON_FLOW_OUT_OF_RANGE "flow-out-of-range"
#define REASON_FLOW_WITH_LOCAL_PORT "flow-with-local-port" /* the flow's port */
#define REASON_FLOW_NOT_SUPPORTED "flow-not-supported"     /* datagram sockets */
#define REASON_LOCAL_DEVICE_NOT_FOUND "local-device-not-found"
#define REASON_IP_VERSION_NOT_SUPPORTED "ip-version-not-supported"
#define REASON_PROTOCOL_NOT_SUPPORTED "protocol-not-supported"
#define REASON_TOKEN_IN_USE "token-in-use"
#define REASON_UNSPECIFIED_SOURCE "unspecified-source"      /* 0.0.0.0, :: */
#define REASON_V4_MAPPED_DESTINATION "v4-mapped-destination" /* ::ffff:a.b.c.d */

/* permission-denied reasons (with details yes): the POLICY rules */
#define REASON_MARK_NOT_PERMITTED "mark-not-permitted"
#define REASON_UNSPECIFIED_DESTINATION "unspecified-destination"
#define REASON_MULTICAST_DESTINATION "multicast-destination"
#define REASON_BROADCAST_DESTINATION "broadcast-destination"

/* check-support feature names; each protocol name (PROTO_*) is one too */
#define FEATURE_VERSION "version"
#define FEATURE_SEND_PROBE CMD_SEND_PROBE
#define FEATURE_IP4 ARG_IP4
#define FEATURE_IP6 ARG_IP6
#define FEATURE_MARK ARG_MARK
#define FEATURE_LOCAL_DEVICE ARG_LOCAL_DEVICE
#define FEATURE_FRACTIONAL_TIMEOUT "fractional-timeout"
#define FEATURE_DETAILS ARG_DETAILS
#define FEATURE_FLOW ARG_FLOW
#define FEATURE_SOCKETS "sockets"
#define FEATURE_MAX_PROBES "max-probes"
#define FEATURE_RATE_LIMIT "rate-limit"
#define FEATURE_SANDBOX "sandbox"

/* check-support values (besides HELPER_VERSION and numbers) */
#define SUPPORT_OK "ok"
#define SUPPORT_NO "no"
#define SUPPORT_RAW "raw"
#define SUPPORT_DATAGRAM "datagram"
#define SUPPORT_NONE "none"
#define SUPPORT_SECCOMP "seccomp"

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
#define FLOW_MAX 65535
/* a flow's source port (udp, tcp, sctp): 33434 for flow 0, from 1024 up */
#define FLOW_PORT_FIRST 1024
#define FLOW_PORT_ZERO 33434

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
