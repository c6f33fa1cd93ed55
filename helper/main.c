/*
 * main.c - brokerpkg-helper: send network probes for unprivileged callers.
 *
 * The order below is the security argument (see man/brokerpkg-helper.8):
 *   1. make the process sane: environment cleared, fds 0-2 valid and no
 *      other inherited fd, our own signal dispositions and resource limits;
 *   2. open the sockets, which is the only thing privilege is needed for;
 *   3. drop every privilege and check that it is gone;
 *   4. only then look at the command line and read requests.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "loop.h"
#include "net.h"
#include "policy.h"
#include "privilege.h"
#include "ratestate.h"
#include "sandbox.h"
#include "wire.h"

#define WANTED_OPEN_FILES 65536     /* a socket per local-port in use */

/*
 * An empty environment.  clearenv() only forgets the pointers: the caller's
 * strings would stay in our memory (and in /proc/PID/environ) for our whole
 * life, so they are wiped first.
 */
static void clear_environment(void)
{
    for (char **variable = environ; variable != NULL && *variable != NULL;
         variable++) {
        explicit_bzero(*variable, strlen(*variable));
    }
    clearenv();
}

/* fds 0-2 open (on /dev/null if the caller closed them), all others closed */
static void sanitize_descriptors(void)
{
    for (int fd = 0; fd <= 2; fd++) {
        if (fcntl(fd, F_GETFD) < 0 && errno == EBADF) {
            int null = open("/dev/null", O_RDWR);

            if (null < 0) {
                abort();
            }
            if (null != fd) {
                dup2(null, fd);
                close(null);
            }
        }
    }
    if (syscall(SYS_close_range, 3u, ~0u, 0u) != 0) {
        for (int fd = 3; fd < 1024; fd++) {
            close(fd);
        }
    }
}

static void sanitize_signals(void)
{
    static const int defaulted[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};
    sigset_t none;

    /* a write to a vanished reader must fail with EPIPE, not kill us mid-reply */
    signal(SIGPIPE, SIG_IGN);
    for (size_t i = 0; i < sizeof(defaulted) / sizeof(defaulted[0]); i++) {
        signal(defaulted[i], SIG_DFL);
    }
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
}

static void set_limits(void)
{
    struct rlimit no_core = {0, 0};
    struct rlimit files;

    setrlimit(RLIMIT_CORE, &no_core);
    if (getrlimit(RLIMIT_NOFILE, &files) == 0) {
        struct rlimit wanted = {WANTED_OPEN_FILES, WANTED_OPEN_FILES};

        /* raising the hard limit works only with CAP_SYS_RESOURCE, and is
           for a root caller only: anyone else keeps its own hard limit */
        if (getuid() == 0 && files.rlim_max < WANTED_OPEN_FILES
            && setrlimit(RLIMIT_NOFILE, &wanted) == 0) {
            return;
        }
        files.rlim_cur = files.rlim_max < WANTED_OPEN_FILES ? files.rlim_max
                                                            : WANTED_OPEN_FILES;
        setrlimit(RLIMIT_NOFILE, &files);
    }
}

/*
 * One line: what is missing, then the one fix after "; fix: " (brokerpkg's
 * Python side quotes the part before it and puts its own fix after it:
 * brokerpkg/errors.py FIX_SEPARATOR).
 */
static void report_no_sockets(const struct net_state *net)
{
    fprintf(stderr,
            "brokerpkg-helper: no privilege for raw sockets (%s) and unprivileged "
            "ICMP is off; fix: sudo brokerpkg setup (other ways: "
            "brokerpkg-helper(8), PRIVILEGES)\n",
            strerror(net->raw_errno != 0 ? net->raw_errno : EPERM));
}

/* One line naming why the user's rate-limit state is unusable, and the fix. */
static void report_no_rate_state(const struct rate_state_failure *failure)
{
    char path[RATE_STATE_PATH_BYTES];
    char cause[128];

    rate_state_path(getuid(), path, sizeof(path));
    if (failure->error != 0) {
        snprintf(cause, sizeof(cause), "%s: %s", failure->step,
                 strerror(failure->error));
    } else {
        snprintf(cause, sizeof(cause), "%s", failure->step);
    }
    fprintf(stderr,
            "brokerpkg-helper: cannot use the per-user rate-limit state %s "
            "(%s), which the helper opens set-group-id brokerpkg; fix: sudo "
            "brokerpkg setup (other ways: brokerpkg-helper(8), PRIVILEGES)\n",
            path, cause);
}

static int handle_arguments(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--version") == 0) {
        printf("brokerpkg-helper %s\n", HELPER_VERSION);
        return EXIT_SUCCESS;
    }
    fprintf(stderr,
            "usage: brokerpkg-helper [--version]\n"
            "Reads mtr-packet requests on stdin and writes replies on stdout;"
            " see brokerpkg-helper(8).\n");
    return 2;
}

int main(int argc, char **argv)
{
    static struct net_state net;
    static struct caller_policy caller;
    struct rate_state_failure no_rate_state = {0};
    bool sandboxed;

    clear_environment();
    sanitize_descriptors();
    sanitize_signals();
    set_limits();

    net_open(&net);
    caller.may_mark = caller_may_mark();
    if (!caller.may_mark) {
        net_open_address_list(&net);
    }
    /* rules for callers who are not root, where the helper has raw sockets */
    caller.restricted = getuid() != 0 && net.raw;
    if (caller.restricted && privilege_lent()) {
        /* the user's shared rate limit, which only our privilege can open */
        caller.rate_tat = rate_state_open(getuid(), &no_rate_state);
    }
    privilege_drop(caller.may_mark);

    if (argc > 1) {
        return handle_arguments(argc, argv);
    }
    if (!net_usable(&net)) {
        report_no_sockets(&net);
        return EXIT_FAILURE;
    }
    if (no_rate_state.step != NULL) {
        report_no_rate_state(&no_rate_state);
        return EXIT_FAILURE;
    }
    /* a fact about this process, neither caller policy nor socket state
       (see struct caller_policy): passed on by itself */
    sandboxed = sandbox_enter(caller.may_mark);
    return loop_run(&net, &caller, sandboxed);
}
