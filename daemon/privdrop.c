/* privdrop: switch from root to the configured user. */
#define _GNU_SOURCE 1
#include "daemon/privdrop.h"
#include "daemon/util.h"

#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
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

/*
 * Walk with directory descriptors (openat O_NOFOLLOW, fchownat
 * AT_SYMLINK_NOFOLLOW): the tree is writable by the unprivileged user, who
 * must not be able to make root's chown follow a symlink swapped in during the
 * walk (e.g. to /etc/passwd).
 */
static int
fix_dir(int dfd, const char *path, uid_t uid, gid_t gid, int depth, char *err, size_t errlen)
{
	DIR *d;
	struct dirent *e;
	int r = 1;

	if (depth > 64) {
		snprintf(err, errlen, "%s: directories nested too deeply", path);
		return -1;
	}
	if ((d = fdopendir(dfd)) == NULL) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		close(dfd);
		return -1;
	}
	while (r > 0 && (e = readdir(d)) != NULL) {
		struct stat st;
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno == ENOENT)
				continue;
			snprintf(err, errlen, "%s/%s: %s", path, e->d_name, strerror(errno));
			r = -1;
			break;
		}
		if ((st.st_uid != uid || st.st_gid != gid) &&
		    fchownat(dirfd(d), e->d_name, uid, gid, AT_SYMLINK_NOFOLLOW) < 0 && errno != ENOENT) {
			snprintf(err, errlen, "chown %s/%s: %s", path, e->d_name, strerror(errno));
			r = -1;
			break;
		}
		if (S_ISDIR(st.st_mode)) {
			int sub = openat(dirfd(d), e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (sub < 0) {
				if (errno == ENOENT || errno == ELOOP || errno == ENOTDIR)
					continue; /* replaced meanwhile: not followed */
				snprintf(err, errlen, "%s/%s: %s", path, e->d_name, strerror(errno));
				r = -1;
				break;
			}
			char *subpath = xasprintf("%s/%s", path, e->d_name);
			r = fix_dir(sub, subpath, uid, gid, depth + 1, err, errlen);
			free(subpath);
		}
	}
	closedir(d);
	return r;
}

int
privdrop_fix_ownership(const char *dir, uid_t uid, gid_t gid, char *err, size_t errlen)
{
	struct stat st;
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

	if (fd < 0 || fstat(fd, &st) < 0) {
		snprintf(err, errlen, "%s: %s", dir, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	if ((st.st_uid != uid || st.st_gid != gid) && fchown(fd, uid, gid) < 0) {
		snprintf(err, errlen, "chown %s: %s", dir, strerror(errno));
		close(fd);
		return -1;
	}
	return fix_dir(fd, dir, uid, gid, 0, err, errlen);
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
