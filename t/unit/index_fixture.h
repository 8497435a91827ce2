/*
 * A fresh account in a temporary directory for the index unit tests
 * (test_index_stamp.c, test_index_durable.c): setup opens it, teardown
 * closes and removes it. Header-only: each test binary includes it once.
 */
#ifndef MOX_T_INDEX_FIXTURE_H
#define MOX_T_INDEX_FIXTURE_H

#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "index/index.h"

struct fx {
	char root[64];
	char dir[128];
	struct idx_options opts;
	struct idx_account *a;
};

static int fx_rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

/* Open a new account under /tmp/<name>.XXXXXX; 0 or -1 (cmocka setup convention). */
static int fx_open_log(void **state, const char *name, bool no_fsync, bool no_log)
{
	struct fx *f = calloc(1, sizeof(*f));
	char err[256];

	snprintf(f->root, sizeof(f->root), "/tmp/%s.XXXXXX", name);
	if (mkdtemp(f->root) == NULL)
		return -1;
	snprintf(f->dir, sizeof(f->dir), "%s/acct", f->root);
	f->opts.host = "test.example";
	f->opts.no_fsync = no_fsync;
	f->opts.no_log = no_log;
	if (idx_account_open(f->dir, &f->opts, &f->a, err, sizeof(err)) < 0) {
		fprintf(stderr, "open: %s\n", err);
		return -1;
	}
	*state = f;
	return 0;
}

static inline int fx_open(void **state, const char *name, bool no_fsync)
{
	return fx_open_log(state, name, no_fsync, false);
}

static int fx_teardown(void **state)
{
	struct fx *f = *state;

	idx_account_close(&f->a);
	nftw(f->root, fx_rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

static uint32_t fx_inbox(struct idx_account *a)
{
	struct idx_mailbox mb;
	char err[256];
	uint32_t id;

	if (idx_mailbox_get(a, "INBOX", &mb, err, sizeof(err)) <= 0)
		abort();
	id = mb.id;
	idx_mailbox_clear(&mb);
	return id;
}

#endif
