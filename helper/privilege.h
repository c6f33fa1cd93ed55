/*
 * privilege.h - giving up privilege once the sockets are open, and proving
 * it was given up.
 */
#ifndef BROKERPKG_PRIVILEGE_H
#define BROKERPKG_PRIVILEGE_H

#include <stdbool.h>

/*
 * True when exec raised this process's privilege (AT_SECURE: set-user-id,
 * set-group-id or file capabilities): what it can do beyond its caller is
 * lent to the caller.  False after a plain exec, as by a caller whose
 * capabilities are its own (ambient).
 */
bool privilege_lent(void);

/*
 * True when the caller could set SO_MARK without us: its real uid is 0, or
 * it was not elevated by exec (no setuid/file-capability gain) and holds
 * CAP_NET_ADMIN itself.  Call before privilege_drop().
 */
bool caller_may_mark(void);

/*
 * Drop every privilege: bounding and ambient capability sets emptied (where
 * CAP_SETPCAP allows), supplementary groups dropped, real/effective/saved
 * ids set to the caller's real ids, effective/inheritable/permitted sets
 * emptied (permitted keeps CAP_NET_ADMIN only when KEEP_NET_ADMIN, for
 * callers entitled to marks), no_new_privs set, process made non-dumpable.
 * Each step is checked afterwards; on any mismatch the process aborts.
 */
void privilege_drop(bool keep_net_admin);

/*
 * Raise / lower CAP_NET_ADMIN in the effective set around one call that
 * sets a mark (one capset each, no capget).  Raising fails (false) unless
 * privilege_drop() kept it; call them only then, as the sandbox allows
 * capset only to callers entitled to marks.
 */
bool privilege_raise_net_admin(void);
void privilege_lower_net_admin(void);

#endif
