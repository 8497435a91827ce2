/*
 * A consistent copy of an open account: Tokyo Cabinet copies the index under
 * the account lock (tcbdbcopy syncs and blocks writers while it copies, and
 * keeps the file lock, unlike a plain copy of a live .tcb), then the Maildir
 * tree is reproduced with hard links. The caller runs this on the thread that
 * owns the account's writes, so no message is added between the two steps;
 * messages are never rewritten, so linking is as good as copying.
 */
#define _GNU_SOURCE
#include "index/index_private.h"
#include "index/tools.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int copy_file(const char *from, const char *to, char *err, size_t errlen)
{
	int in = open(from, O_RDONLY | O_CLOEXEC), r;

	if (in < 0) {
		if (errno == ENOENT)
			return 0; /* renamed or removed by another tool meanwhile */
		idx_seterr(err, errlen, "open %s: %s", from, strerror(errno));
		return -1;
	}
	r = maildir_copy_fd(in, to, true, err, errlen);
	close(in);
	return r;
}

/* Reproduce directory from in to (created), depth-limited: Maildir, folders, cur/new/tmp. */
static int tree(const char *from, const char *to, int depth, bool skip_files, struct idx_backup_stats *st, char *err,
    size_t errlen)
{
	DIR *d;
	struct dirent *de;
	int r = 1;

	if (mkdir(to, 0700) < 0 && errno != EEXIST) {
		idx_seterr(err, errlen, "mkdir %s: %s", to, strerror(errno));
		return -1;
	}
	d = opendir(from);
	if (d == NULL) {
		if (errno == ENOENT)
			return 1;
		idx_seterr(err, errlen, "opendir %s: %s", from, strerror(errno));
		return -1;
	}
	while (r > 0 && (de = readdir(d)) != NULL) {
		char src[IDX_PATH_MAX], dst[IDX_PATH_MAX];
		struct stat sb;

		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (strncmp(de->d_name, "..", 2) == 0)
			continue; /* a folder being deleted */
		if (snprintf(src, sizeof(src), "%s/%s", from, de->d_name) >= (int)sizeof(src) ||
		    snprintf(dst, sizeof(dst), "%s/%s", to, de->d_name) >= (int)sizeof(dst)) {
			idx_seterr(err, errlen, "path too long in %s", from);
			r = -1;
			break;
		}
		if (lstat(src, &sb) < 0) {
			if (errno == ENOENT)
				continue;
			idx_seterr(err, errlen, "stat %s: %s", src, strerror(errno));
			r = -1;
			break;
		}
		if (S_ISDIR(sb.st_mode)) {
			if (depth > 0)
				r = tree(src, dst, depth - 1, strcmp(de->d_name, "tmp") == 0, st, err, errlen);
			continue;
		}
		if (!S_ISREG(sb.st_mode) || skip_files)
			continue;
		if (link(src, dst) == 0) {
			st->linked++;
			continue;
		}
		if (errno == ENOENT)
			continue;
		if (errno == EEXIST) {
			idx_seterr(err, errlen, "%s exists already", dst);
			r = -1;
			break;
		}
		r = copy_file(src, dst, err, errlen);
		if (r > 0)
			st->copied++;
		else if (r == 0)
			r = 1;
	}
	closedir(d);
	return r;
}

int idx_backup(struct idx_account *a, const char *dest, struct idx_backup_stats *st, char *err, size_t errlen)
{
	char dbdest[IDX_PATH_MAX], mdest[IDX_PATH_MAX];
	struct idx_backup_stats dummy;
	bool ok;

	/* Messages may get another identity: first make the delivery log unneeded (wal.c). */
	if (idx_checkpoint(a, err, errlen) < 0)
		return -1;

	if (st == NULL)
		st = &dummy;
	memset(st, 0, sizeof(*st));
	if (snprintf(dbdest, sizeof(dbdest), "%s/index.tcb", dest) >= (int)sizeof(dbdest) ||
	    snprintf(mdest, sizeof(mdest), "%s/Maildir", dest) >= (int)sizeof(mdest)) {
		idx_seterr(err, errlen, "path too long: %s", dest);
		return -1;
	}
	if (mkdir(dest, 0700) < 0 && errno != EEXIST) {
		idx_seterr(err, errlen, "mkdir %s: %s", dest, strerror(errno));
		return -1;
	}
	if (access(dbdest, F_OK) == 0) {
		idx_seterr(err, errlen, "%s exists already", dbdest);
		return -1;
	}
	pthread_mutex_lock(&a->mu);
	ok = tcbdbcopy(a->db, dbdest);
	if (!ok)
		idx_dberr(a, err, errlen, "copy index");
	pthread_mutex_unlock(&a->mu);
	if (!ok)
		return -1;
	return tree(a->maildir, mdest, 2, false, st, err, errlen);
}
