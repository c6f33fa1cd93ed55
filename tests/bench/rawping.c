/*
 * rawping.c - the floor for helper throughput: a minimal program that only
 * sends COUNT ICMP echo requests to 127.0.0.1 on one raw socket and receives
 * the replies (no parsing of requests, no matching beyond our id, no output
 * per probe).  Prints the seconds from the first send to the last reply.
 * Built and run by bench_helper_pipe.py; needs CAP_NET_RAW.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <linux/icmp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static unsigned short checksum(const void *data, size_t length)
{
    const unsigned char *bytes = data;
    unsigned long sum = 0;

    for (size_t i = 0; i + 1 < length; i += 2) {
        sum += (unsigned long)bytes[i] << 8 | bytes[i + 1];
    }
    while (sum >> 16) {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    return (unsigned short)~sum;
}

static double now(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* Read every waiting reply; returns how many were ours. */
static long drain(int fd, unsigned short id)
{
    unsigned char packet[1500];
    long ours = 0;

    for (;;) {
        ssize_t n = recv(fd, packet, sizeof(packet), MSG_DONTWAIT);
        const unsigned char *icmp;

        if (n < 0) {
            return ours;
        }
        if (n < 28) {
            continue;
        }
        icmp = packet + (packet[0] & 0x0f) * 4;
        if (icmp[0] == ICMP_ECHOREPLY && (icmp[4] << 8 | icmp[5]) == id) {
            ours++;
        }
    }
}

int main(int argc, char **argv)
{
    long count = argc > 1 ? atol(argv[1]) : 100000;
    long window = argc > 2 ? atol(argv[2]) : count;
    int fd = socket(AF_INET, SOCK_RAW, IPPROTO_ICMP);
    int size = 8 * 1024 * 1024;
    unsigned short id = (unsigned short)getpid();
    struct sockaddr_in to = {.sin_family = AF_INET};
    unsigned char probe[36];
    long sent = 0;
    long received = 0;
    double start;

    if (fd < 0) {
        perror("socket");
        return 1;
    }
    setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof(size));
    /* like the helper: only echo replies reach the socket */
    struct icmp_filter only_replies = {.data = ~(1u << ICMP_ECHOREPLY)};
    setsockopt(fd, SOL_RAW, ICMP_FILTER, &only_replies, sizeof(only_replies));
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    start = now();
    while (received < count) {
        while (sent < count && sent - received < window) {
            unsigned short cksum;

            memset(probe, 0, sizeof(probe));
            probe[0] = ICMP_ECHO;
            probe[4] = (unsigned char)(id >> 8);
            probe[5] = (unsigned char)id;
            probe[6] = (unsigned char)(sent >> 8);
            probe[7] = (unsigned char)sent;
            cksum = checksum(probe, sizeof(probe));
            probe[2] = (unsigned char)(cksum >> 8);
            probe[3] = (unsigned char)cksum;
            if (sendto(fd, probe, sizeof(probe), 0, (struct sockaddr *)&to,
                       sizeof(to)) < 0) {
                if (errno == ENOBUFS || errno == EAGAIN) {
                    break;
                }
                perror("sendto");
                return 1;
            }
            sent++;
            if (sent % 64 == 0) {
                received += drain(fd, id);
            }
        }
        received += drain(fd, id);
        if (received < sent && received < count) {
            struct pollfd wait = {.fd = fd, .events = POLLIN};

            if (poll(&wait, 1, 2000) == 0) {
                fprintf(stderr, "rawping: %ld of %ld replies lost\n",
                        sent - received, sent);
                return 2;
            }
        }
    }
    printf("%.6f\n", now() - start);
    return 0;
}
