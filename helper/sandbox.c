/*
 * sandbox.c - the seccomp allow-list (see sandbox.h).
 *
 * What the loop does after start-up, and nothing more: read requests, write
 * replies, wait (epoll, timerfd), send and receive on the sockets it holds,
 * open a UDP socket per route lookup or local address check, and a UDP, TCP
 * or SCTP socket per local-port (or flow's port) its probes hold (connect
 * for route lookups, bind, getsockname, and only the socket options listed
 * below; none is read),
 * look up an interface index (ioctl SIOCGIFINDEX on a socket it holds),
 * raise and lower CAP_NET_ADMIN around a mark for callers entitled to
 * marks, allocate memory that is never executable, and exit or abort.
 * Everything it needs otherwise (raw sockets, their options, filters and
 * receive buffers, the ports it holds for its whole life, the netlink socket
 * that lists the host's addresses) is opened and set before the filter, which
 * therefore needs no rule for it.
 *
 * Every refusal kills the process (SECCOMP_RET_KILL_PROCESS), none fails
 * with an errno: the helper's own code never makes a call outside the list,
 * so one means that code is no longer running ours.  An errno would let such
 * code try the list call by call and carry on; being killed ends the probes
 * of its one caller, who sees the helper die with SIGSYS.
 *
 * capset takes pointers, which a filter cannot read, so the rule for it is
 * about who: callers not entitled to marks get no capset at all (their
 * permitted set is empty, but the call is refused before the kernel sees
 * it); entitled callers get capset, whose only possible effect is then the
 * one the loop uses, raising or lowering CAP_NET_ADMIN in the effective set
 * (the permitted set holds nothing else, the bounding set is empty or
 * no_new_privs is set).  Checking the pointers against the loop's own two
 * sets would add nothing: those two are all capset can do here.  What
 * CAP_NET_ADMIN then enables is bounded by the rest of the list: no netlink
 * or packet socket can be made, no ioctl but SIOCGIFINDEX, and the only
 * privileged socket option allowed is SO_MARK (a control message may still
 * set a mark, as the loop does, or a queueing priority).
 */
#include "sandbox.h"

#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>

#if defined(__x86_64__)
#define SANDBOX_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define SANDBOX_ARCH AUDIT_ARCH_AARCH64
#endif

#if defined(__SANITIZE_ADDRESS__)
#define SANDBOX_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SANDBOX_SANITIZED 1
#endif
#endif

#if defined(SANDBOX_ARCH) && !defined(SANDBOX_SANITIZED)

#define REFUSE SECCOMP_RET_KILL_PROCESS
#define PROGRAM_MAX 512
#define NO_MASK UINT32_MAX

/* System calls allowed whatever their arguments. */
static const int any_arguments[] = {
    SYS_read,
    SYS_write,
    SYS_close,
    SYS_dup,                /* perror() writes through a copy of fd 2 */
    SYS_epoll_pwait,
#ifdef SYS_epoll_wait
    SYS_epoll_wait,
#endif
    SYS_epoll_ctl,
    SYS_epoll_create1,
    SYS_timerfd_create,
    SYS_timerfd_settime,
    SYS_clock_gettime,
    SYS_sendmsg,            /* on the sockets we hold: probes */
    SYS_sendto,
    SYS_recvmmsg,           /* answers, error queues */
    SYS_recvmsg,
    SYS_connect,            /* route lookups (UDP: nothing is sent) */
    SYS_bind,               /* source addresses and ports */
    SYS_getsockname,
    SYS_fcntl,
#ifdef SYS_newfstatat
    SYS_newfstatat,
#endif
    SYS_fstat,
    SYS_brk,
    SYS_munmap,
    SYS_mremap,
    SYS_madvise,
    SYS_exit,
    SYS_exit_group,
    SYS_rt_sigreturn,
    SYS_rt_sigprocmask,     /* abort() */
    SYS_getpid,
    SYS_gettid,
    SYS_tgkill,
    SYS_getrandom,
};

/* socket(): the (family, type, protocol) of the sockets the loop opens. */
struct socket_kind {
    uint32_t family;
    uint32_t type;          /* SOCK_NONBLOCK and SOCK_CLOEXEC masked out */
    uint32_t protocol;
};

static const struct socket_kind sockets_made[] = {
    {AF_INET, SOCK_STREAM, IPPROTO_TCP},    /* a held TCP local-port */
    {AF_INET6, SOCK_STREAM, IPPROTO_TCP},
    {AF_INET, SOCK_DGRAM, IPPROTO_UDP},     /* a route lookup, an address check,
                                               a held UDP local-port */
    {AF_INET6, SOCK_DGRAM, IPPROTO_UDP},
    {AF_INET, SOCK_SEQPACKET, IPPROTO_SCTP}, /* a held SCTP local-port */
    {AF_INET6, SOCK_SEQPACKET, IPPROTO_SCTP},
};

/* socket options: (level, name) pairs. */
struct socket_option {
    uint32_t level;
    uint32_t name;
};

/* setsockopt(); getsockopt() is refused: nothing is read back */
static const struct socket_option options_set[] = {
    {SOL_SOCKET, SO_BINDTOIFINDEX},     /* route lookup sockets */
    {SOL_SOCKET, SO_RCVBUF},            /* a held UDP local-port: the least */
};

/* Only for callers entitled to marks. */
static const struct socket_option options_set_marking[] = {
    {SOL_SOCKET, SO_MARK},
};

struct program {
    struct sock_filter code[PROGRAM_MAX];
    unsigned length;
};

static void emit(struct program *p, struct sock_filter instruction)
{
    if (p->length >= PROGRAM_MAX) {
        abort();            /* the lists above outgrew PROGRAM_MAX */
    }
    p->code[p->length++] = instruction;
}

static void emit_return(struct program *p, uint32_t action)
{
    emit(p, (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, action));
}

static void emit_load(struct program *p, uint32_t offset)
{
    emit(p, (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offset));
}

/* Load the low 32 bits of argument INDEX: all an int or unsigned int has. */
static void emit_load_argument(struct program *p, unsigned index)
{
    emit_load(p, (uint32_t)(offsetof(struct seccomp_data, args)
                            + index * sizeof(uint64_t)));
}

/* If A == VALUE go on, else skip SKIP instructions. */
static void emit_require(struct program *p, uint32_t value, uint8_t skip)
{
    emit(p, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, value, 0,
                                         skip));
}

/*
 * Start the rule for system call NR: the instructions up to end_rule() run
 * only for it and must all end in a return.  Returns where to patch.
 */
static unsigned begin_rule(struct program *p, int nr)
{
    emit(p, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K,
                                         (uint32_t)nr, 0, 0));
    return p->length - 1;
}

static void end_rule(struct program *p, unsigned start)
{
    unsigned skip = p->length - start - 1;

    if (skip > UINT8_MAX) {
        abort();            /* a rule too long for one jump */
    }
    p->code[start].jf = (uint8_t)skip;
}

/* One argument test of a match: (argument & MASK) == VALUE. */
struct argument_test {
    unsigned index;
    uint32_t mask;          /* NO_MASK: the argument as it is */
    uint32_t value;
};

/* Allow the call when every test holds; else fall through past the block. */
static void emit_match(struct program *p, const struct argument_test *tests,
                       unsigned count)
{
    unsigned left = 1;      /* the final return */

    for (unsigned i = 0; i < count; i++) {
        left += tests[i].mask == NO_MASK ? 2 : 3;
    }
    for (unsigned i = 0; i < count; i++) {
        emit_load_argument(p, tests[i].index);
        left--;
        if (tests[i].mask != NO_MASK) {
            emit(p, (struct sock_filter)BPF_STMT(BPF_ALU | BPF_AND | BPF_K,
                                                 tests[i].mask));
            left--;
        }
        left--;
        emit_require(p, tests[i].value, (uint8_t)left);
    }
    emit_return(p, SECCOMP_RET_ALLOW);
}

static void allow_calls(struct program *p, const int *calls, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        unsigned rule = begin_rule(p, calls[i]);

        emit_return(p, SECCOMP_RET_ALLOW);
        end_rule(p, rule);
    }
}

static void allow_sockets(struct program *p)
{
    unsigned rule = begin_rule(p, SYS_socket);

    for (size_t i = 0; i < sizeof(sockets_made) / sizeof(sockets_made[0]); i++) {
        const struct argument_test tests[] = {
            {0, NO_MASK, sockets_made[i].family},
            {1, ~(uint32_t)(SOCK_NONBLOCK | SOCK_CLOEXEC), sockets_made[i].type},
            {2, NO_MASK, sockets_made[i].protocol},
        };

        emit_match(p, tests, 3);
    }
    emit_return(p, REFUSE);
    end_rule(p, rule);
}

static void match_options(struct program *p, const struct socket_option *options,
                          size_t count)
{
    for (size_t i = 0; i < count; i++) {
        const struct argument_test tests[] = {
            {1, NO_MASK, options[i].level},
            {2, NO_MASK, options[i].name},
        };

        emit_match(p, tests, 2);
    }
}

static void allow_options(struct program *p, bool may_mark)
{
    unsigned rule = begin_rule(p, SYS_setsockopt);

    match_options(p, options_set, sizeof(options_set) / sizeof(options_set[0]));
    if (may_mark) {
        match_options(p, options_set_marking,
                      sizeof(options_set_marking) / sizeof(options_set_marking[0]));
    }
    emit_return(p, REFUSE);
    end_rule(p, rule);
}

/* ioctl only to look up an interface's index. */
static void allow_interface_lookup(struct program *p)
{
    unsigned rule = begin_rule(p, SYS_ioctl);
    const struct argument_test request = {1, NO_MASK, SIOCGIFINDEX};

    emit_match(p, &request, 1);
    emit_return(p, REFUSE);
    end_rule(p, rule);
}

/* mmap for memory (malloc), never executable. */
static void allow_data_mappings(struct program *p)
{
    unsigned rule = begin_rule(p, SYS_mmap);

    emit_load_argument(p, 2);
    emit(p, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, PROT_EXEC,
                                         1, 0));
    emit_return(p, SECCOMP_RET_ALLOW);
    emit_return(p, REFUSE);
    end_rule(p, rule);
}

static void build(struct program *p, bool may_mark)
{
    static const int marking[] = {SYS_capset};

    p->length = 0;
    emit_load(p, offsetof(struct seccomp_data, arch));
    emit(p, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K,
                                         SANDBOX_ARCH, 1, 0));
    emit_return(p, REFUSE);
    emit_load(p, offsetof(struct seccomp_data, nr));
    allow_calls(p, any_arguments, sizeof(any_arguments) / sizeof(any_arguments[0]));
    allow_sockets(p);
    allow_options(p, may_mark);
    allow_interface_lookup(p);
    allow_data_mappings(p);
    if (may_mark) {
        allow_calls(p, marking, 1);
    }
    emit_return(p, REFUSE);
}

bool sandbox_enter(bool may_mark)
{
    static struct program program;
    struct sock_fprog filter;

    build(&program, may_mark);
    filter.len = (unsigned short)program.length;
    filter.filter = program.code;
    /* EINVAL/ENOSYS: this kernel has no seccomp filters; run without */
    return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &filter, 0, 0) == 0;
}

#else

bool sandbox_enter(bool may_mark)
{
    (void)may_mark;
    return false;
}

#endif
