/*
 * loop.c - the event loop (see loop.h).
 *
 * One epoll set watches stdin, stdout (for room, and for its reader going
 * away), a timerfd armed for the earliest probe deadline and the shared
 * receive sockets.  Within one wake-up, answers are read
 * before deadlines are checked, and deadlines before new requests: an answer
 * that has arrived always wins over a timeout that has just passed.
 */
#include "loop.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "monotonic.h"
#include "prober.h"
#include "reply.h"

#define INPUT_CHUNK_BYTES 65536
#define PIPE_BYTES (1024 * 1024)    /* fs.pipe-max-size's default */
#define OUTPUT_HIGH_WATER (4u * 1024 * 1024)  /* stop reading requests */
#define OUTPUT_LOW_WATER (1u * 1024 * 1024)   /* read them again */
#define EVENT_BATCH 256

enum event_kind {
    EVENT_STDIN = 1,
    EVENT_STDOUT,
    EVENT_TIMER,
    EVENT_SOCKET,   /* low bits: family index * ROLE_COUNT + role */
};

#define EVENT_KIND_SHIFT 56
#define EVENT_LOW_MASK ((1ull << EVENT_KIND_SHIFT) - 1)

struct loop {
    struct net_state *net;
    struct prober *prober;
    int epoll_fd;
    int timer_fd;
    uint64_t armed_deadline;
    bool input_open;
    bool input_pollable;    /* false: a plain file, read whenever awake */
    bool input_watched;     /* stdin is in the epoll set */
    bool output_backlog;    /* replies over the high water, until the low */
    char input[INPUT_CHUNK_BYTES];
    size_t input_start;     /* bytes read but not yet taken by the prober */
    size_t input_end;
    bool output_pollable;
    bool output_waiting;    /* EPOLLOUT is requested on stdout */
    bool output_gone;
};

static uint64_t event_data(enum event_kind kind, uint64_t low)
{
    return (uint64_t)kind << EVENT_KIND_SHIFT | low;
}

static int epoll_change(struct loop *l, int operation, int fd, uint32_t events,
                        uint64_t data)
{
    struct epoll_event event = {.events = events, .data.u64 = data};

    return epoll_ctl(l->epoll_fd, operation, fd, &event);
}

static void watch(struct loop *l, int operation, int fd, uint32_t events,
                  uint64_t data)
{
    if (epoll_change(l, operation, fd, events, data) != 0) {
        perror("brokerpkg-helper: epoll_ctl");
        exit(EXIT_FAILURE);
    }
}

/* OPERATION (EPOLL_CTL_ADD or _DEL) on the sockets answers come to. */
static void watch_sockets(struct loop *l, int operation)
{
    for (int f = 0; f < 2; f++) {
        for (int r = 0; r < ROLE_COUNT; r++) {
            int fd = l->net->sockets[f][r];

            /* the UDP socket only sends (its error queue is read unasked) */
            if (fd >= 0 && r != ROLE_UDP) {
                watch(l, operation, fd, EPOLLIN,
                      event_data(EVENT_SOCKET, (uint64_t)(f * ROLE_COUNT + r)));
            }
        }
    }
}

/* Input */

/*
 * Requests are read only when the last chunk has been taken in full, no
 * probe waits for the rate limit and the reply backlog is not too long:
 * otherwise a client that writes without reading would grow our memory.
 */
static bool wants_input(const struct loop *l)
{
    return l->input_open && l->input_start == l->input_end
           && !l->output_backlog && !prober_blocked(l->prober);
}

static void watch_input(struct loop *l, bool wanted)
{
    if (!l->input_pollable || l->input_watched == wanted) {
        return;
    }
    if (wanted) {
        watch(l, EPOLL_CTL_ADD, STDIN_FILENO, EPOLLIN,
              event_data(EVENT_STDIN, 0));
    } else {
        epoll_ctl(l->epoll_fd, EPOLL_CTL_DEL, STDIN_FILENO, NULL);
    }
    l->input_watched = wanted;
}

/*
 * Give the prober what it has not taken yet; it stops at a rate limit.
 * While it serves a long run of requests (BULK_INPUT_BYTES), the answer
 * sockets leave the epoll set: every answer queued during a send would
 * otherwise wake it (a lock and a list check per packet), and the prober
 * reads the answers between sends anyway.  Put back, they are polled at
 * once: nothing waiting is missed.
 */
static void offer_input(struct loop *l)
{
    bool bulk = l->input_end - l->input_start >= BULK_INPUT_BYTES;

    if (bulk) {
        watch_sockets(l, EPOLL_CTL_DEL);
    }
    l->input_start += prober_feed(l->prober, l->input + l->input_start,
                                  l->input_end - l->input_start);
    if (bulk) {
        watch_sockets(l, EPOLL_CTL_ADD);
    }
    if (l->input_start == l->input_end) {
        l->input_start = l->input_end = 0;
    }
}

static void close_input(struct loop *l)
{
    prober_end_input(l->prober);
    watch_input(l, false);
    l->input_open = false;
}

static void read_input(struct loop *l)
{
    ssize_t count = read(STDIN_FILENO, l->input, sizeof(l->input));

    if (count > 0) {
        l->input_start = 0;
        l->input_end = (size_t)count;
        prober_more_input(l->prober, (size_t)count == sizeof(l->input));
        offer_input(l);
    } else if (count == 0 || (errno != EAGAIN && errno != EINTR)) {
        close_input(l);     /* end of input, or it failed: same for us */
    }
}

/* Output */

static void flush_output(struct loop *l)
{
    struct reply_writer *out = prober_replies(l->prober);
    bool waiting;

    if (out->out_of_memory) {
        fprintf(stderr, "brokerpkg-helper: out of memory for replies\n");
        exit(EXIT_FAILURE);
    }
    if (reply_pending(out) > 0 && reply_flush(out, STDOUT_FILENO) != 0) {
        l->output_gone = true;  /* EPIPE and the like: nobody reads us */
        return;
    }
    /* a reader that does not keep up stops our reading, not our memory */
    if (reply_pending(out) > OUTPUT_HIGH_WATER) {
        l->output_backlog = true;
    } else if (reply_pending(out) < OUTPUT_LOW_WATER) {
        l->output_backlog = false;
    }
    waiting = reply_pending(out) > 0;
    if (l->output_pollable && waiting != l->output_waiting) {
        watch(l, EPOLL_CTL_MOD, STDOUT_FILENO, waiting ? EPOLLOUT : 0,
              event_data(EVENT_STDOUT, 0));
        l->output_waiting = waiting;
    }
}

/* Timer */

static void arm_timer(struct loop *l)
{
    uint64_t deadline = prober_next_wakeup(l->prober);
    struct itimerspec spec = {0};

    if (deadline == l->armed_deadline) {
        return;
    }
    if (deadline != 0) {
        spec.it_value.tv_sec = (time_t)(deadline / 1000000000u);
        spec.it_value.tv_nsec = (long)(deadline % 1000000000u);
    }
    if (timerfd_settime(l->timer_fd, TFD_TIMER_ABSTIME, &spec, NULL) != 0) {
        perror("brokerpkg-helper: timerfd_settime");
        exit(EXIT_FAILURE);
    }
    l->armed_deadline = deadline;
}

/* Setup */

static bool is_pipe_or_socket(int fd)
{
    struct stat info;

    return fstat(fd, &info) == 0
           && (S_ISFIFO(info.st_mode) || S_ISSOCK(info.st_mode));
}

/*
 * A bigger pipe for a client that writes many requests at once, or reads
 * many replies: fewer wake-ups on both sides.  Best effort: EPERM past
 * fs.pipe-max-size or the user's pipe quota, EBADF/EINVAL when not a pipe.
 */
static void enlarge_pipe(int fd)
{
    int size = fcntl(fd, F_GETPIPE_SZ);

    if (size > 0 && size < PIPE_BYTES) {
        (void)fcntl(fd, F_SETPIPE_SZ, PIPE_BYTES);
    }
}

static void setup(struct loop *l, struct net_state *net,
                  const struct caller_policy *caller, bool sandboxed)
{
    memset(l, 0, sizeof(*l));
    l->net = net;
    l->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    l->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    l->prober = prober_create(net, caller, sandboxed);
    if (l->epoll_fd < 0 || l->timer_fd < 0 || l->prober == NULL) {
        perror("brokerpkg-helper: setup");
        exit(EXIT_FAILURE);
    }
    l->input_open = true;
    /* EPERM: epoll does not take plain files (stdin redirected from one) */
    l->input_pollable = epoll_change(l, EPOLL_CTL_ADD, STDIN_FILENO, EPOLLIN,
                                     event_data(EVENT_STDIN, 0)) == 0;
    l->input_watched = l->input_pollable;
    enlarge_pipe(STDIN_FILENO);
    /* non-blocking only on our own pipe: a shared tty must stay as it was */
    if (is_pipe_or_socket(STDOUT_FILENO)) {
        enlarge_pipe(STDOUT_FILENO);
        fcntl(STDOUT_FILENO, F_SETFL,
              fcntl(STDOUT_FILENO, F_GETFL) | O_NONBLOCK);
        /* watched with no events: EPOLLERR/EPOLLHUP say the reader left */
        l->output_pollable = epoll_change(l, EPOLL_CTL_ADD, STDOUT_FILENO, 0,
                                          event_data(EVENT_STDOUT, 0)) == 0;
    }
    watch(l, EPOLL_CTL_ADD, l->timer_fd, EPOLLIN, event_data(EVENT_TIMER, 0));
    watch_sockets(l, EPOLL_CTL_ADD);
}

/* One wake-up: answers first, then deadlines, then new requests. */
static void dispatch(struct loop *l, const struct epoll_event *events,
                     int count)
{
    bool input_ready = l->input_open && !l->input_pollable;

    for (int i = 0; i < count; i++) {
        enum event_kind kind =
            (enum event_kind)(events[i].data.u64 >> EVENT_KIND_SHIFT);
        uint64_t low = events[i].data.u64 & EVENT_LOW_MASK;

        if (kind == EVENT_SOCKET) {
            prober_receive(l->prober, low / ROLE_COUNT == 1 ? AF_INET6 : AF_INET,
                           (enum socket_role)(low % ROLE_COUNT));
        } else if (kind == EVENT_STDOUT
                   && (events[i].events & (EPOLLERR | EPOLLHUP)) != 0) {
            l->output_gone = true;
        } else if (kind == EVENT_STDIN) {
            input_ready = true;
        }
    }
    prober_expire(l->prober, monotonic_ns());
    if (prober_resume(l->prober) && l->input_start < l->input_end) {
        offer_input(l);
    }
    if (input_ready && wants_input(l)) {
        read_input(l);
    }
    prober_receive_departures(l->prober);
}

static bool finished(const struct loop *l)
{
    return l->output_gone
           || (!l->input_open && prober_in_flight(l->prober) == 0
               && reply_pending(prober_replies(l->prober)) == 0);
}

int loop_run(struct net_state *net, const struct caller_policy *caller,
             bool sandboxed)
{
    static struct loop loop;
    struct loop *l = &loop;
    struct epoll_event events[EVENT_BATCH];

    setup(l, net, caller, sandboxed);
    while (!finished(l)) {
        bool wanted = wants_input(l);
        bool busy_input = wanted && !l->input_pollable;
        int count;

        watch_input(l, wanted);
        arm_timer(l);
        count = epoll_wait(l->epoll_fd, events, EVENT_BATCH, busy_input ? 0 : -1);
        if (count < 0 && errno != EINTR) {
            perror("brokerpkg-helper: epoll_wait");
            return EXIT_FAILURE;
        }
        if (count > 0 || busy_input) {
            uint64_t expirations;

            /* drain the timer; EAGAIN when it has not fired is fine */
            (void)!read(l->timer_fd, &expirations, sizeof(expirations));
            dispatch(l, events, count > 0 ? count : 0);
        }
        flush_output(l);
    }
    return EXIT_SUCCESS;
}
