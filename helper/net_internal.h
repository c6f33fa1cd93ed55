/*
 * net_internal.h - what net_open.c, net_send.c and net_receive.c share, and
 * no other file uses.
 */
#ifndef BROKERPKG_NET_INTERNAL_H
#define BROKERPKG_NET_INTERNAL_H

/* Room for one packet's control messages, sent or received. */
#define CONTROL_BYTES 256

/* socket(), non-blocking and close-on-exec: the descriptor, or -1 (errno). */
int net_socket(int family, int type, int protocol);

/* setsockopt() of one int, best effort: a failure is ignored. */
void net_set_int_option(int fd, int level, int name, int value);

#endif
