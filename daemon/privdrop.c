/* privdrop: switch from root to the configured user. */
#define _GNU_SOURCE 1
#include "daemon/privdrop.h"

#include <errno.h>
#include <ftw.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int
privdrop_lookup(const char *user, uid_t *uid_r, gid_t *gid_r, char *err, size_t errlen)
{
	struct passwd *pw;

	errno = 0;
	pw = getpwnam(user);
	if (pw == NULL) {
		snprintf(err, errlen, "user \"%s\" not found%s%s (create it, e.g. useradd -r -d /home/mox %s)",
		    user, errno ? ": " : "", errno ? strerror(errno) : "", user);
		return -1;
	}
	*uid_r = pw->pw_uid;
	*gid_r = pw->pw_gid;
	return 1;
}

static uid_t fix_uid;
static gid_t fix_gid;
static char fix_err[512];

static int
fix_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	if (st->st_uid == fix_uid && st->st_gid == fix_gid)
		return 0;
	if (lchown(path, fix_uid, fix_gid) < 0) {
		snprintf(fix_err, sizeof(fix_err), "chown %s: %s", path, strerror(errno));
		return 1;
	}
	return 0;
}

int
privdrop_fix_ownership(const char *dir, uid_t uid, gid_t gid, char *err, size_t errlen)
{
	fix_uid = uid;
	fix_gid = gid;
	fix_err[0] = '\0';
	if (nftw(dir, fix_one, 32, FTW_PHYS) != 0) {
		snprintf(err, errlen, "%s", fix_err[0] ? fix_err : strerror(errno));
		return -1;
	}
	return 1;
}

int
privdrop_switch(uid_t uid, gid_t gid, char *err, size_t errlen)
{
	if (uid == 0) {
		snprintf(err, errlen, "refusing to run as root: the configured User has uid 0");
		return -1;
	}
	if (setgroups(1, &gid) < 0 || setresgid(gid, gid, gid) < 0 || setresuid(uid, uid, uid) < 0) {
		snprintf(err, errlen, "dropping privileges to uid %d: %s", (int)uid, strerror(errno));
		return -1;
	}
	if (setuid(0) == 0 || geteuid() == 0 || getuid() == 0) {
		snprintf(err, errlen, "privileges not dropped: root could be regained");
		return -1;
	}
	return 1;
}
