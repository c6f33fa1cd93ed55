/*
 * privilege.c - privilege drop and verification (see privilege.h).
 *
 * No libcap: the capability sets are read and written with the capget and
 * capset system calls (version 3, two 32-bit words per set).
 */
#include "privilege.h"

#include <errno.h>
#include <grp.h>
#include <linux/capability.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/auxv.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

struct capability_sets {
    struct __user_cap_header_struct header;
    struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];
};

static void read_capabilities(struct capability_sets *sets)
{
    sets->header.version = _LINUX_CAPABILITY_VERSION_3;
    sets->header.pid = 0;
    if (syscall(SYS_capget, &sets->header, sets->data) != 0) {
        perror("brokerpkg-helper: capget");
        abort();
    }
}

static int write_capabilities(struct capability_sets *sets)
{
    sets->header.version = _LINUX_CAPABILITY_VERSION_3;
    sets->header.pid = 0;
    return (int)syscall(SYS_capset, &sets->header, sets->data);
}

static bool has_bit(const __u32 words[2], int capability)
{
    return (words[capability / 32] >> (capability % 32)) & 1u;
}

static bool effective_has(int capability)
{
    struct capability_sets sets;
    __u32 effective[2];

    read_capabilities(&sets);
    effective[0] = sets.data[0].effective;
    effective[1] = sets.data[1].effective;
    return has_bit(effective, capability);
}

bool privilege_lent(void)
{
    return getauxval(AT_SECURE) != 0;
}

bool caller_may_mark(void)
{
    if (getuid() == 0) {
        return true;
    }
    /* lent: CAP_NET_ADMIN is not the caller's */
    return !privilege_lent() && effective_has(CAP_NET_ADMIN);
}

static void fail(const char *step)
{
    fprintf(stderr, "brokerpkg-helper: privilege drop failed at %s\n", step);
    abort();
}

/* The highest capability number this kernel knows (prctl answers EINVAL past it). */
static int last_capability(void)
{
    int cap = CAP_LAST_CAP;

    while (prctl(PR_CAPBSET_READ, cap + 1, 0, 0, 0) >= 0) {
        cap++;
    }
    return cap;
}

/*
 * Empty the bounding set.  This needs CAP_SETPCAP, which root and
 * setuid-root have; a helper with only file capabilities cannot, and relies
 * on no_new_privs instead (no exec can gain privilege then).
 */
static bool drop_bounding_set(void)
{
    if (!effective_has(CAP_SETPCAP)) {
        return false;
    }
    for (int cap = 0; cap <= last_capability(); cap++) {
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0) {
            fail("PR_CAPBSET_DROP");
        }
    }
    return true;
}

static void drop_ids(void)
{
    uid_t uid = getuid();
    gid_t gid = getgid();

    /* EPERM here means we never had the privilege to hold other groups */
    if (setgroups(0, NULL) != 0 && errno != EPERM) {
        fail("setgroups");
    }
    if (setresgid(gid, gid, gid) != 0) {
        fail("setresgid");
    }
    if (setresuid(uid, uid, uid) != 0) {
        fail("setresuid");
    }
}

static void drop_capability_sets(bool keep_net_admin)
{
    struct capability_sets sets = {0};

    if (keep_net_admin) {
        sets.data[CAP_NET_ADMIN / 32].permitted = 1u << (CAP_NET_ADMIN % 32);
    }
    if (write_capabilities(&sets) != 0) {
        fail("capset");
    }
}

static void verify_ids(void)
{
    uid_t ruid, euid, suid;
    gid_t rgid, egid, sgid;

    if (getresuid(&ruid, &euid, &suid) != 0 || euid != ruid || suid != ruid) {
        fail("verify uids");
    }
    if (getresgid(&rgid, &egid, &sgid) != 0 || egid != rgid || sgid != rgid) {
        fail("verify gids");
    }
}

static void verify_capabilities(bool keep_net_admin, bool bounding_dropped)
{
    struct capability_sets sets;
    __u32 expected_permitted = keep_net_admin ? 1u << (CAP_NET_ADMIN % 32) : 0;
    int last = last_capability();

    read_capabilities(&sets);
    for (int word = 0; word < _LINUX_CAPABILITY_U32S_3; word++) {
        __u32 permitted = word == CAP_NET_ADMIN / 32 ? expected_permitted : 0;

        if (sets.data[word].effective != 0 || sets.data[word].inheritable != 0
            || sets.data[word].permitted != permitted) {
            fail("verify capability sets");
        }
    }
    for (int cap = 0; cap <= last; cap++) {
        if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, cap, 0, 0) != 0) {
            fail("verify ambient set");
        }
        if (bounding_dropped && prctl(PR_CAPBSET_READ, cap, 0, 0, 0) != 0) {
            fail("verify bounding set");
        }
    }
    if (prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1) {
        fail("verify no_new_privs");
    }
}

void privilege_drop(bool keep_net_admin)
{
    bool bounding_dropped = drop_bounding_set();

    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0) {
        fail("PR_CAP_AMBIENT_CLEAR_ALL");
    }
    drop_ids();
    drop_capability_sets(keep_net_admin);
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
        fail("PR_SET_NO_NEW_PRIVS");
    }
    /* the caller must not ptrace its way to our raw sockets */
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) {
        fail("PR_SET_DUMPABLE");
    }
    verify_ids();
    verify_capabilities(keep_net_admin, bounding_dropped);
}

/*
 * The sets privilege_drop(true) left, written whole with CAP_NET_ADMIN
 * effective or not: no capget in the loop (the sandbox allows none).
 */
static bool set_net_admin_effective(bool raised)
{
    struct capability_sets sets = {0};
    __u32 bit = 1u << (CAP_NET_ADMIN % 32);

    sets.data[CAP_NET_ADMIN / 32].permitted = bit;
    if (raised) {
        sets.data[CAP_NET_ADMIN / 32].effective = bit;
    }
    return write_capabilities(&sets) == 0;
}

bool privilege_raise_net_admin(void)
{
    return set_net_admin_effective(true);
}

void privilege_lower_net_admin(void)
{
    if (!set_net_admin_effective(false)) {
        fail("lowering CAP_NET_ADMIN");
    }
}
