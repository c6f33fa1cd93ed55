/*
 * sandbox.c - the seccomp allow-list (see sandbox.h).
 *
 * Everything the loop does after start-up: read requests, write replies,
 * wait (epoll, timerfd), send and receive on its sockets, open one socket
 * per TCP probe or route lookup, look up an interface index (ioctl
 * SIOCGIFINDEX, nothing else), raise CAP_NET_ADMIN around a mark for
 * callers entitled to one, allocate memory, and exit or abort.
 */
#include "sandbox.h"

#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#if defined(__x86_64__)
#define SANDBOX_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
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

#define ALLOW(name) \
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_##name, 0, 1), \
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)

static const struct sock_filter filter[] = {
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SANDBOX_ARCH, 1, 0),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
    ALLOW(read),
    ALLOW(write),
    ALLOW(close),
    ALLOW(dup),                 /* perror() writes through a copy of fd 2 */
    ALLOW(epoll_pwait),
#ifdef SYS_epoll_wait
    ALLOW(epoll_wait),
#endif
    ALLOW(epoll_ctl),
    ALLOW(timerfd_settime),
    ALLOW(clock_gettime),
    ALLOW(sendmsg),
    ALLOW(sendto),
    ALLOW(recvmmsg),
    ALLOW(recvmsg),
    ALLOW(socket),
    ALLOW(connect),
    ALLOW(bind),
    ALLOW(getsockname),
    ALLOW(setsockopt),
    ALLOW(getsockopt),
    ALLOW(fcntl),
#ifdef SYS_newfstatat
    ALLOW(newfstatat),
#endif
    ALLOW(fstat),
    ALLOW(epoll_create1),
    ALLOW(timerfd_create),
    ALLOW(capget),
    ALLOW(capset),
    ALLOW(brk),
    ALLOW(mmap),
    ALLOW(munmap),
    ALLOW(mremap),
    ALLOW(madvise),
    ALLOW(exit),
    ALLOW(exit_group),
    ALLOW(rt_sigreturn),
    ALLOW(rt_sigprocmask),      /* abort() */
    ALLOW(getpid),
    ALLOW(gettid),
    ALLOW(tgkill),
    ALLOW(getrandom),
    /* ioctl only to look up an interface's index (if_nametoindex) */
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_ioctl, 0, 3),
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[1])),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SIOCGIFINDEX, 0, 1),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
};

bool sandbox_enter(void)
{
    struct sock_fprog program = {
        .len = sizeof(filter) / sizeof(filter[0]),
        .filter = (struct sock_filter *)filter,
    };

    /* EINVAL/ENOSYS: this kernel has no seccomp filters; run without */
    return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program, 0, 0) == 0;
}

#else

bool sandbox_enter(void)
{
    return false;
}

#endif
