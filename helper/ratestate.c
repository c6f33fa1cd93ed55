/*
 * ratestate.c - opening and mapping a user's shared rate-limit word (see
 * ratestate.h).  Runs once, before the privilege drop.
 */
#include "ratestate.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define RATE_STATE_BYTES ((off_t)sizeof(uint64_t))
#define RATE_STATE_MODE (S_IRUSR | S_IWUSR | S_IRGRP | S_IWGRP)
#define WRONG_SHAPE "not a regular file of 8 bytes with one link"

void rate_state_path(uid_t uid, char *path, size_t size)
{
    snprintf(path, size, "%s/%u", RATE_STATE_DIRECTORY, (unsigned)uid);
}

static uint64_t *fail(struct rate_state_failure *failure, const char *step,
                      int error, int fd)
{
    failure->step = step;
    failure->error = error;
    if (fd >= 0) {
        close(fd);
    }
    return NULL;
}

/*
 * O_NOFOLLOW: a symbolic link in the directory is refused (ELOOP).  The
 * caller's umask must not take the group's rights away (the next helper of
 * a set-group-id install opens the file through them), so it is set for
 * the one file this process ever creates.
 */
static int open_state_file(const char *path)
{
    mode_t caller_umask = umask(S_IRWXO);
    int fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC,
                  RATE_STATE_MODE);

    umask(caller_umask);
    return fd;
}

static bool has_state_shape(const struct stat *info)
{
    return S_ISREG(info->st_mode) && info->st_nlink == 1
           && (info->st_size == 0 || info->st_size == RATE_STATE_BYTES);
}

uint64_t *rate_state_open(uid_t uid, struct rate_state_failure *failure)
{
    char path[RATE_STATE_PATH_BYTES];
    struct stat info;
    void *word;
    int fd;

    rate_state_path(uid, path, sizeof(path));
    fd = open_state_file(path);
    if (fd < 0) {
        return fail(failure, "open", errno, -1);
    }
    if (fstat(fd, &info) != 0) {
        return fail(failure, "fstat", errno, fd);
    }
    if (!has_state_shape(&info)) {
        return fail(failure, WRONG_SHAPE, 0, fd);
    }
    /* two helpers creating it at once both extend it: the second changes nothing */
    if (info.st_size == 0 && ftruncate(fd, RATE_STATE_BYTES) != 0) {
        return fail(failure, "ftruncate", errno, fd);
    }
    word = mmap(NULL, (size_t)RATE_STATE_BYTES, PROT_READ | PROT_WRITE,
                MAP_SHARED, fd, 0);
    if (word == MAP_FAILED) {
        return fail(failure, "mmap", errno, fd);
    }
    close(fd);
    return word;
}
