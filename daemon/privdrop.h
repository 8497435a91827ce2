/*
 * privdrop: leaving root after the ports are bound. Owns looking up the
 * configured user, fixing ownership of the data directory, and the switch
 * (setgroups, setgid, setuid) with a check that root cannot be regained.
 */
#ifndef MOX_PRIVDROP_H
#define MOX_PRIVDROP_H

#include <stddef.h>
#include <sys/types.h>

/* Look up user name. Returns 1 with uid/gid, or -1 with err. */
int privdrop_lookup(const char *user, uid_t *uid_r, gid_t *gid_r, char *err, size_t errlen);

/* Recursively chown dir and everything below it (symlinks not followed). 1 or -1 with err. */
int privdrop_fix_ownership(const char *dir, uid_t uid, gid_t gid, char *err, size_t errlen);

/*
 * Switch to uid/gid (supplementary groups: only gid). Refuses uid 0. Verifies
 * afterwards that setuid(0) fails. Returns 1 or -1 with err.
 */
int privdrop_switch(uid_t uid, gid_t gid, char *err, size_t errlen);

#endif
