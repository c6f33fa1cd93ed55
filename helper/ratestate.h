/*
 * ratestate.h - the rate-limit state a user's helpers share: one 64-bit
 * word per user in RATE_STATE_DIRECTORY/<uid>, mapped shared by every
 * helper that lends its privilege to that user (see policy.h for what the
 * word means).  The directory belongs to root and the group brokerpkg
 * (mode 2770): only a helper that is set-group-id brokerpkg or setuid root
 * can open it, so the user can neither open nor replace its own state.
 */
#ifndef BROKERPKG_RATESTATE_H
#define BROKERPKG_RATESTATE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define RATE_STATE_DIRECTORY "/var/lib/brokerpkg"
/* room for the directory, a slash and any uid */
#define RATE_STATE_PATH_BYTES (sizeof(RATE_STATE_DIRECTORY) + 12)

/* Why the state could not be used, for the one line the helper prints. */
struct rate_state_failure {
    const char *step;               /* "open", "ftruncate", "mmap", or a
                                       description of a file of the wrong shape */
    int error;                      /* its errno, 0 for a wrong shape */
};

/* The state file of UID, written to PATH (RATE_STATE_PATH_BYTES long). */
void rate_state_path(uid_t uid, char *path, size_t size);

/*
 * Open (creating it, mode 0660, when missing) the state file of UID and
 * map its word shared, read and write.  Call while privileged (effective
 * gid brokerpkg or effective uid 0), before any input is read.  A file
 * that is not regular, has more than one link or is neither 0 nor 8 bytes
 * long is refused untouched (a setuid-root helper must not write whatever
 * someone linked there); an empty one is extended to 8 zero bytes, a full
 * bucket.  No descriptor stays open: the mapping is all that remains, and
 * it needs no system call.  Returns the word, or NULL with FAILURE filled.
 */
uint64_t *rate_state_open(uid_t uid, struct rate_state_failure *failure);

#endif
