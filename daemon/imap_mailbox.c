/*
 * imap_mailbox: mailbox commands. LIST/LSUB (LIST-EXTENDED selection and
 * RETURN options, LIST-STATUS, SPECIAL-USE), CREATE, DELETE, RENAME,
 * SUBSCRIBE, UNSUBSCRIBE, STATUS (SIZE, DELETED-STORAGE), NAMESPACE and the
 * QUOTA commands. Each reads or changes the index in one storage job and
 * formats the answer on the loop thread.
 */
#define _GNU_SOURCE 1
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/imap_private.h"
#include "daemon/log.h"

enum mb_op { OP_LIST, OP_CREATE, OP_DELETE, OP_RENAME, OP_SUBSCRIBE, OP_UNSUBSCRIBE, OP_STATUS, OP_QUOTA };

#define LIST_SUBSCRIBED 0x1   /* selection SUBSCRIBED (or LSUB) */
#define LIST_SPECIALUSE 0x2   /* selection SPECIAL-USE */
#define LIST_RECURSIVE 0x4
#define LIST_RET_SUBSCRIBED 0x10
#define LIST_RET_CHILDREN 0x20
#define LIST_RET_SPECIALUSE 0x40
#define LIST_RET_STATUS 0x80
#define LIST_LSUB 0x100
#define LIST_EXTENDED 0x200   /* extended syntax used */

struct mb_job {
	struct imap_job j;
	enum mb_op op;
	char *name, *name2;
	struct idx_mailbox *list;
	size_t n;
	struct idx_mailbox mb;
	struct idx_account_info info;
	/* LIST */
	unsigned lflags;
	unsigned status_items;
	char **patterns;
	size_t npatterns;
	bool empty_pattern;
};

static void
mb_job_free(struct mb_job *mj)
{
	free(mj->name);
	free(mj->name2);
	if (mj->list != NULL)
		idx_mailbox_list_free(&mj->list, mj->n);
	idx_mailbox_clear(&mj->mb);
	for (size_t i = 0; i < mj->npatterns; i++)
		free(mj->patterns[i]);
	free(mj->patterns);
	free(mj);
}

static void
mb_work(struct imap_job *j, struct idx_account *a)
{
	struct mb_job *mj = (struct mb_job *)j;

	switch (mj->op) {
	case OP_LIST:
		j->rc = idx_mailbox_list(a, &mj->list, &mj->n, j->err, sizeof(j->err));
		break;
	case OP_CREATE:
		/* An existing mailbox is ALREADYEXISTS, whatever create would say. */
		if ((j->rc = idx_mailbox_get(a, mj->name, &mj->mb, j->err, sizeof(j->err))) != 0) {
			if (j->rc > 0)
				j->rc = 0;
			break;
		}
		j->rc = idx_mailbox_create(a, mj->name, 0, true, NULL, j->err, sizeof(j->err));
		break;
	case OP_DELETE:
		j->rc = idx_mailbox_delete(a, mj->name, j->err, sizeof(j->err));
		break;
	case OP_RENAME:
		j->rc = idx_mailbox_rename(a, mj->name, mj->name2, j->err, sizeof(j->err));
		break;
	case OP_SUBSCRIBE:
	case OP_UNSUBSCRIBE:
		j->rc = idx_mailbox_subscribe(a, mj->name, mj->op == OP_SUBSCRIBE, j->err, sizeof(j->err));
		break;
	case OP_STATUS:
		j->rc = idx_mailbox_get(a, mj->name, &mj->mb, j->err, sizeof(j->err));
		break;
	case OP_QUOTA:
		j->rc = idx_account_info(a, &mj->info, j->err, sizeof(j->err));
		if (j->rc > 0 && mj->name != NULL)
			j->rc = idx_mailbox_get(a, mj->name, &mj->mb, j->err, sizeof(j->err));
		break;
	}
}

/* Reply for a failed job: NO for client-level refusals, SERVERBUG otherwise. */
static void
job_error(struct imap_conn *c, struct imap_job *j)
{
	if (j->rc == IDX_REFUSED)
		imap_no(c, "%s", j->err);
	else
		imap_serverbug(c, "mailbox operation", j->err);
}

/*
 * The common start of a done callback. -1: the session is gone, the job is
 * freed; 0: answered (a failure, or no such mailbox when missing_is_no);
 * 1: the caller answers. After 0 or 1 the caller frees the job and finishes.
 */
static int
job_outcome(struct mb_job *mj, bool missing_is_no)
{
	struct imap_conn *c = mj->j.c;

	if (imap_gone(c)) {
		mb_job_free(mj);
		return -1;
	}
	if (mj->j.rc < 0) {
		job_error(c, &mj->j);
		return 0;
	}
	if (mj->j.rc == 0 && missing_is_no) {
		imap_no(c, "[NONEXISTENT] no such mailbox");
		return 0;
	}
	return 1;
}

static struct mb_job *
mb_job_new(enum mb_op op)
{
	struct mb_job *mj = xcalloc(1, sizeof(*mj));
	mj->op = op;
	mj->j.work = mb_work;
	return mj;
}

/* ---- simple changes ---- */

static void
change_done(struct imap_job *j)
{
	struct mb_job *mj = (struct mb_job *)j;
	struct imap_conn *c = j->c;
	int o = job_outcome(mj, false);

	if (o < 0)
		return;
	if (o > 0 && j->rc == 0 && mj->op == OP_CREATE)
		imap_no(c, "[ALREADYEXISTS] mailbox already exists");
	else if (o > 0 && j->rc == 0 && mj->op != OP_UNSUBSCRIBE)
		imap_no(c, "[NONEXISTENT] no such mailbox");
	else if (o > 0) {
		if (mj->op == OP_RENAME) {
			/* Later LIST responses of this session carry OLDNAME (RFC 9051 7.3.1). */
			imap_renamed(c, mj->name2, mj->name);
			if (c->enabled & IMAP_EN_REV2) {
				struct mbuf b;
				mbuf_init(&b, 64 * 1024);
				mbuf_adds(&b, "* LIST () \"/\" ");
				imap_mailbox_out(c, &b, mj->name2);
				mbuf_adds(&b, " (\"OLDNAME\" (");
				imap_mailbox_out(c, &b, mj->name);
				mbuf_adds(&b, "))\r\n");
				imap_write(c, b.data, b.len);
				mbuf_clear(&b);
			}
		}
		imap_ok(c, "%s completed", c->cmd->name);
	}
	mb_job_free(mj);
	imap_cmd_finish(c);
}

static int
name_arg(struct imap_conn *c, struct imap_args *args, char **name_r, bool strip_slash)
{
	struct mbuf b;

	mbuf_init(&b, 4 * IDX_MAILBOX_NAME_MAX);
	if (imap_arg_mailbox(c, args, &b) < 0) {
		mbuf_clear(&b);
		imap_bad(c, "%s", args->err != NULL ? args->err : "bad mailbox name");
		return -1;
	}
	if (strip_slash && b.len > 1 && b.data[b.len - 1] == '/')
		b.data[--b.len] = 0;
	char canon[4 * IDX_MAILBOX_NAME_MAX + 8], err[256];
	if (idx_mailbox_name_check(b.data, canon, sizeof(canon), err, sizeof(err)) < 0) {
		mbuf_clear(&b);
		imap_no(c, "[CANNOT] %s", err);
		return -1;
	}
	mbuf_clear(&b);
	*name_r = xstrdup(canon);
	return 1;
}

static int
simple_change(struct imap_conn *c, struct imap_args *args, enum mb_op op)
{
	struct mb_job *mj = mb_job_new(op);

	if (name_arg(c, args, &mj->name, op == OP_CREATE) < 0)
		goto fail;
	if (op == OP_RENAME && name_arg(c, args, &mj->name2, false) < 0)
		goto fail;
	if (op == OP_CREATE && imap_args_peek(args) != NULL) {
		/* RFC 4466 create parameters: accept and ignore USE (RFC 6154 CREATE-SPECIAL-USE not announced). */
		const struct imap_arg *a;
		imap_args_any(args, &a);
	}
	if (imap_args_end(args) < 0) {
		imap_bad(c, "%s", args->err);
		goto fail;
	}
	if (op == OP_DELETE && strcmp(mj->name, "INBOX") == 0) {
		imap_no(c, "[CANNOT] cannot delete INBOX");
		goto fail;
	}
	if (op == OP_CREATE && strcmp(mj->name, "INBOX") == 0) {
		imap_no(c, "[ALREADYEXISTS] INBOX exists");
		goto fail;
	}
	mj->j.done = change_done;
	imap_submit(c, &mj->j);
	return IMAP_CMD_ASYNC;
fail:
	mb_job_free(mj);
	return IMAP_CMD_DONE;
}

int imap_cmd_create(struct imap_conn *c, struct imap_args *args) { return simple_change(c, args, OP_CREATE); }
int imap_cmd_delete(struct imap_conn *c, struct imap_args *args) { return simple_change(c, args, OP_DELETE); }
int imap_cmd_rename(struct imap_conn *c, struct imap_args *args) { return simple_change(c, args, OP_RENAME); }
int imap_cmd_subscribe(struct imap_conn *c, struct imap_args *args) { return simple_change(c, args, OP_SUBSCRIBE); }
int imap_cmd_unsubscribe(struct imap_conn *c, struct imap_args *args) { return simple_change(c, args, OP_UNSUBSCRIBE); }

/* ---- STATUS ---- */

int
imap_status_items(struct imap_args *list, unsigned *items_r)
{
	static const struct { const char *name; unsigned bit; } items[] = {
		{"MESSAGES", IMAP_STATUS_MESSAGES}, {"UIDNEXT", IMAP_STATUS_UIDNEXT},
		{"UIDVALIDITY", IMAP_STATUS_UIDVALIDITY}, {"UNSEEN", IMAP_STATUS_UNSEEN},
		{"DELETED", IMAP_STATUS_DELETED}, {"SIZE", IMAP_STATUS_SIZE}, {"RECENT", IMAP_STATUS_RECENT},
		{"HIGHESTMODSEQ", IMAP_STATUS_HIGHESTMODSEQ}, {"APPENDLIMIT", IMAP_STATUS_APPENDLIMIT},
		{"DELETED-STORAGE", IMAP_STATUS_DELETED_STORAGE},
	};
	unsigned v = 0;

	while (imap_args_peek(list) != NULL) {
		const char *s;
		size_t len;
		if (imap_args_atom(list, &s, &len) < 0)
			return -1;
		size_t i;
		for (i = 0; i < ARRAY_LEN(items); i++)
			if (str_ieq(s, items[i].name))
				break;
		if (i == ARRAY_LEN(items)) {
			list->err = "unknown status item";
			return -1;
		}
		v |= items[i].bit;
	}
	if (v == 0) {
		list->err = "no status items";
		return -1;
	}
	*items_r = v;
	return 1;
}

void
imap_status_out(struct imap_conn *c, struct mbuf *b, const struct idx_mailbox *mb, unsigned items)
{
	mbuf_adds(b, "* STATUS ");
	imap_mailbox_out(c, b, mb->name);
	mbuf_adds(b, " (");
	const char *sp = "";
#define ITEM(bit, fmt, val) \
	if (items & (bit)) { mbuf_printf(b, "%s" fmt, sp, val); sp = " "; }
	ITEM(IMAP_STATUS_MESSAGES, "MESSAGES %llu", (unsigned long long)mb->counts.total);
	ITEM(IMAP_STATUS_UIDNEXT, "UIDNEXT %u", mb->uidnext);
	ITEM(IMAP_STATUS_UIDVALIDITY, "UIDVALIDITY %u", mb->uidvalidity);
	ITEM(IMAP_STATUS_UNSEEN, "UNSEEN %llu", (unsigned long long)mb->counts.unseen);
	ITEM(IMAP_STATUS_DELETED, "DELETED %llu", (unsigned long long)mb->counts.deleted);
	ITEM(IMAP_STATUS_SIZE, "SIZE %llu", (unsigned long long)mb->counts.size);
	ITEM(IMAP_STATUS_RECENT, "RECENT %u", 0u);
	ITEM(IMAP_STATUS_HIGHESTMODSEQ, "HIGHESTMODSEQ %llu", (unsigned long long)(mb->highest_modseq ? mb->highest_modseq : 1));
	ITEM(IMAP_STATUS_APPENDLIMIT, "APPENDLIMIT %llu", (unsigned long long)c->append_limit);
	ITEM(IMAP_STATUS_DELETED_STORAGE, "DELETED-STORAGE %u", 0u);
#undef ITEM
	mbuf_adds(b, ")\r\n");
}

static void
status_done(struct imap_job *j)
{
	struct mb_job *mj = (struct mb_job *)j;
	struct imap_conn *c = j->c;
	int o = job_outcome(mj, true);

	if (o < 0)
		return;
	if (o > 0) {
		struct mbuf b;
		mbuf_init(&b, 1 << 20);
		imap_status_out(c, &b, &mj->mb, mj->status_items);
		imap_write(c, b.data, b.len);
		mbuf_clear(&b);
		if (mj->status_items & IMAP_STATUS_HIGHESTMODSEQ)
			c->enabled |= IMAP_EN_CONDSTORE;
		imap_ok(c, "STATUS completed");
	}
	mb_job_free(mj);
	imap_cmd_finish(c);
}

int
imap_cmd_status(struct imap_conn *c, struct imap_args *args)
{
	struct mb_job *mj = mb_job_new(OP_STATUS);
	struct imap_args sub = {0};

	if (name_arg(c, args, &mj->name, false) < 0)
		goto fail;
	if (imap_args_list(args, &sub) < 0 || imap_status_items(&sub, &mj->status_items) < 0 ||
	    imap_args_end(args) < 0) {
		imap_bad(c, "%s", sub.err != NULL ? sub.err : args->err);
		goto fail;
	}
	mj->j.done = status_done;
	imap_submit(c, &mj->j);
	return IMAP_CMD_ASYNC;
fail:
	mb_job_free(mj);
	return IMAP_CMD_DONE;
}

/* ---- LIST ---- */

/* Does name match pattern ('*' anything, '%' anything but '/')? */
static bool
match(const char *p, const char *s)
{
	for (; *p != 0; p++, s++) {
		if (*p == '*' || *p == '%') {
			bool pct = *p == '%';
			for (;;) {
				if (match(p + 1, s))
					return true;
				if (*s == 0 || (pct && *s == '/'))
					return false;
				s++;
			}
		}
		if (*p != *s)
			return false;
	}
	return *s == 0;
}

static bool
match_name(const char *pattern, const char *name)
{
	/* INBOX is case-insensitive, also as the first level of a pattern. */
	if (strncasecmp(pattern, "INBOX", 5) == 0 && (pattern[5] == 0 || pattern[5] == '/')) {
		char *pp = xstrdup(pattern);
		memcpy(pp, "INBOX", 5);
		bool r = match(pp, name);
		free(pp);
		return r;
	}
	return match(pattern, name);
}

static void
special_use_out(struct mbuf *b, uint32_t su, const char **sp)
{
	static const struct { uint32_t bit; const char *name; } sus[] = {
		{IDX_SU_SENT, "\\Sent"}, {IDX_SU_DRAFTS, "\\Drafts"}, {IDX_SU_TRASH, "\\Trash"},
		{IDX_SU_JUNK, "\\Junk"}, {IDX_SU_ARCHIVE, "\\Archive"},
	};
	for (size_t i = 0; i < ARRAY_LEN(sus); i++)
		if (su & sus[i].bit) {
			mbuf_printf(b, "%s%s", *sp, sus[i].name);
			*sp = " ";
		}
}

static bool
has_children(const struct mb_job *mj, size_t i)
{
	size_t len = strlen(mj->list[i].name);
	/* Sorted by name: children follow; but "a b" sorts before "a/b", so scan on. */
	for (size_t k = i + 1; k < mj->n; k++) {
		if (strncmp(mj->list[k].name, mj->list[i].name, len) != 0)
			break;
		if (mj->list[k].name[len] == '/')
			return true;
	}
	return false;
}

static bool
subscribed_child(const struct mb_job *mj, size_t i)
{
	size_t len = strlen(mj->list[i].name);
	for (size_t k = i + 1; k < mj->n; k++) {
		if (strncmp(mj->list[k].name, mj->list[i].name, len) != 0)
			break;
		if (mj->list[k].name[len] == '/' && mj->list[k].subscribed)
			return true;
	}
	return false;
}

static void
list_done(struct imap_job *j)
{
	struct mb_job *mj = (struct mb_job *)j;
	struct imap_conn *c = j->c;
	unsigned f = mj->lflags;
	int o = job_outcome(mj, false);

	if (o < 0)
		return;
	if (o == 0)
		goto out;
	imap_view_notified(c); /* renames other sessions made, for OLDNAME */
	struct mbuf b;
	mbuf_init(&b, 64 * 1024 * 1024);
	const char *verb = (f & LIST_LSUB) ? "LSUB" : "LIST";
	if (mj->empty_pattern)
		mbuf_printf(&b, "* %s (\\Noselect) \"/\" \"\"\r\n", verb);
	for (size_t i = 0; i < mj->n; i++) {
		const struct idx_mailbox *mb = &mj->list[i];
		bool m = false;
		for (size_t k = 0; k < mj->npatterns && !m; k++)
			m = match_name(mj->patterns[k], mb->name);
		if (!m)
			continue;
		bool childmatch = false;
		if ((f & LIST_SUBSCRIBED) && !mb->subscribed) {
			if (!(f & LIST_RECURSIVE) || !subscribed_child(mj, i))
				continue;
			childmatch = true;
		}
		if ((f & LIST_SPECIALUSE) && mb->special_use == 0)
			continue;
		const char *sp = "";
		mbuf_printf(&b, "* %s (", verb);
		if (!(f & LIST_LSUB)) {
			mbuf_printf(&b, "%s", has_children(mj, i) ? "\\HasChildren" : "\\HasNoChildren");
			sp = " ";
		}
		if (mb->subscribed && (f & (LIST_SUBSCRIBED | LIST_RET_SUBSCRIBED)) && !(f & LIST_LSUB)) {
			mbuf_printf(&b, "%s\\Subscribed", sp);
			sp = " ";
		}
		if (!(f & LIST_LSUB))
			special_use_out(&b, mb->special_use, &sp);
		mbuf_adds(&b, ") \"/\" ");
		imap_mailbox_out(c, &b, mb->name);
		const char *oldname = NULL;
		if (!(f & LIST_LSUB) && (f & LIST_EXTENDED || c->enabled & IMAP_EN_REV2))
			oldname = imap_oldname(c, mb->name);
		if (childmatch || oldname != NULL) {
			mbuf_adds(&b, " (");
			if (childmatch)
				mbuf_adds(&b, "\"CHILDINFO\" (\"SUBSCRIBED\")");
			if (oldname != NULL) {
				mbuf_adds(&b, childmatch ? " \"OLDNAME\" (" : "\"OLDNAME\" (");
				imap_mailbox_out(c, &b, oldname);
				mbuf_adds(&b, ")");
			}
			mbuf_adds(&b, ")");
		}
		mbuf_adds(&b, "\r\n");
		if ((f & LIST_RET_STATUS) && !childmatch)
			imap_status_out(c, &b, mb, mj->status_items);
	}
	imap_write(c, b.data, b.len);
	mbuf_clear(&b);
	imap_ok(c, "%s completed", verb);
out:
	mb_job_free(mj);
	imap_cmd_finish(c);
}

static int
add_pattern(struct imap_conn *c, struct mb_job *mj, const char *ref, const char *s, size_t len)
{
	struct mbuf dec;
	const char *err = NULL;

	mbuf_init(&dec, 16384);
	if (imap_utf8(c)) {
		if (!imap_utf8_valid(s, len) || memchr(s, 0, len) != NULL) {
			mbuf_clear(&dec);
			return -1;
		}
		mbuf_add(&dec, s, len);
	} else if (imap_utf7_decode(s, len, &dec, &err) < 0) {
		mbuf_clear(&dec);
		return -1;
	}
	if (len == 0 && ref[0] == 0) {
		mj->empty_pattern = true;
		mbuf_clear(&dec);
		return 1;
	}
	mj->patterns = xrealloc(mj->patterns, (mj->npatterns + 1) * sizeof(*mj->patterns));
	mj->patterns[mj->npatterns++] = xasprintf("%s%s", ref, dec.data != NULL ? dec.data : "");
	mbuf_clear(&dec);
	return 1;
}

static int
list_common(struct imap_conn *c, struct imap_args *args, bool lsub)
{
	struct mb_job *mj = mb_job_new(OP_LIST);
	const struct imap_arg *a = imap_args_peek(args);
	struct imap_args sub = {0};
	const char *ref, *s;
	size_t reflen, len;
	struct mbuf refdec;

	mbuf_init(&refdec, 16384);
	if (lsub)
		mj->lflags |= LIST_LSUB | LIST_SUBSCRIBED;
	if (!lsub && a != NULL && a->type == IMAP_ARG_LIST) {
		mj->lflags |= LIST_EXTENDED;
		imap_args_list(args, &sub);
		while (imap_args_peek(&sub) != NULL) {
			if (imap_args_atom(&sub, &s, &len) < 0)
				goto bad;
			if (str_ieq(s, "SUBSCRIBED"))
				mj->lflags |= LIST_SUBSCRIBED | LIST_RET_SUBSCRIBED;
			else if (str_ieq(s, "SPECIAL-USE"))
				mj->lflags |= LIST_SPECIALUSE;
			else if (str_ieq(s, "RECURSIVEMATCH"))
				mj->lflags |= LIST_RECURSIVE;
			else if (!str_ieq(s, "REMOTE")) {
				args->err = "unknown list selection option";
				goto bad;
			}
		}
		if ((mj->lflags & LIST_RECURSIVE) && !(mj->lflags & LIST_SUBSCRIBED)) {
			args->err = "RECURSIVEMATCH requires another selection option";
			goto bad;
		}
	}
	if (imap_args_astring(args, &ref, &reflen) < 0)
		goto bad;
	{
		const char *err = NULL;
		if (imap_utf8(c) ? mbuf_add(&refdec, ref, reflen) < 0 : imap_utf7_decode(ref, reflen, &refdec, &err) < 0) {
			imap_bad(c, "bad reference name encoding");
			goto fail;
		}
	}
	a = imap_args_peek(args);
	if (a != NULL && a->type == IMAP_ARG_LIST && !lsub) {
		imap_args_list(args, &sub);
		mj->lflags |= LIST_EXTENDED;
		while (imap_args_peek(&sub) != NULL) {
			if (imap_args_astring(&sub, &s, &len) < 0)
				goto bad;
			if (add_pattern(c, mj, refdec.data != NULL ? refdec.data : "", s, len) < 0) {
				imap_bad(c, "bad mailbox pattern encoding");
				goto fail;
			}
		}
	} else {
		if (a != NULL && (a->type == IMAP_ARG_ATOM || a->type == IMAP_ARG_NIL)) {
			imap_args_any(args, &a);
			s = a->str;
			len = a->len;
		} else if (imap_args_string(args, &s, &len) < 0) {
			goto bad;
		}
		if (add_pattern(c, mj, refdec.data != NULL ? refdec.data : "", s, len) < 0) {
			imap_bad(c, "bad mailbox pattern encoding");
			goto fail;
		}
	}
	if (!lsub && imap_args_keyword(args, "RETURN") == 1) {
		if (imap_args_list(args, &sub) < 0)
			goto bad;
		while (imap_args_peek(&sub) != NULL) {
			if (imap_args_atom(&sub, &s, &len) < 0)
				goto bad;
			if (str_ieq(s, "SUBSCRIBED"))
				mj->lflags |= LIST_RET_SUBSCRIBED;
			else if (str_ieq(s, "CHILDREN"))
				mj->lflags |= LIST_RET_CHILDREN;
			else if (str_ieq(s, "SPECIAL-USE"))
				mj->lflags |= LIST_RET_SPECIALUSE;
			else if (str_ieq(s, "STATUS")) {
				struct imap_args st;
				if (imap_args_list(&sub, &st) < 0 || imap_status_items(&st, &mj->status_items) < 0) {
					args->err = st.err != NULL ? st.err : sub.err;
					goto bad;
				}
				mj->lflags |= LIST_RET_STATUS;
			} else {
				args->err = "unknown list return option";
				goto bad;
			}
		}
	}
	if (imap_args_end(args) < 0)
		goto bad;
	mbuf_clear(&refdec);
	mj->j.done = list_done;
	imap_submit(c, &mj->j);
	return IMAP_CMD_ASYNC;
bad:
	imap_bad(c, "%s", args->err != NULL ? args->err : (sub.err != NULL ? sub.err : "syntax error"));
fail:
	mbuf_clear(&refdec);
	mb_job_free(mj);
	return IMAP_CMD_DONE;
}

int imap_cmd_list(struct imap_conn *c, struct imap_args *args) { return list_common(c, args, false); }
int imap_cmd_lsub(struct imap_conn *c, struct imap_args *args) { return list_common(c, args, true); }

int
imap_cmd_namespace(struct imap_conn *c, struct imap_args *args)
{
	if (imap_args_end(args) < 0) {
		imap_bad(c, "%s", args->err);
		return IMAP_CMD_DONE;
	}
	imap_printf(c, "* NAMESPACE ((\"\" \"/\")) NIL NIL\r\n");
	imap_ok(c, "NAMESPACE completed");
	return IMAP_CMD_DONE;
}

/* ---- QUOTA (RFC 9208): one root "" for the whole account ---- */

static void
quota_done(struct imap_job *j)
{
	struct mb_job *mj = (struct mb_job *)j;
	struct imap_conn *c = j->c;
	int o = job_outcome(mj, true);

	if (o < 0)
		return;
	if (o > 0) {
		struct mbuf b;
		mbuf_init(&b, 1 << 20);
		if (mj->name != NULL) {
			mbuf_adds(&b, "* QUOTAROOT ");
			imap_mailbox_out(c, &b, mj->mb.name);
			mbuf_adds(&b, " \"\"\r\n");
		}
		if (mj->info.quota > 0)
			mbuf_printf(&b, "* QUOTA \"\" (STORAGE %llu %llu)\r\n",
			    (unsigned long long)((mj->info.quota_used + 1023) / 1024),
			    (unsigned long long)(mj->info.quota / 1024));
		else
			mbuf_adds(&b, "* QUOTA \"\" ()\r\n");
		imap_write(c, b.data, b.len);
		mbuf_clear(&b);
		imap_ok(c, "%s completed", c->cmd->name);
	}
	mb_job_free(mj);
	imap_cmd_finish(c);
}

int
imap_cmd_getquota(struct imap_conn *c, struct imap_args *args)
{
	const char *root;
	size_t len;

	if (imap_args_astring(args, &root, &len) < 0 || imap_args_end(args) < 0) {
		imap_bad(c, "%s", args->err);
		return IMAP_CMD_DONE;
	}
	if (len != 0) {
		imap_no(c, "[NONEXISTENT] no such quota root");
		return IMAP_CMD_DONE;
	}
	struct mb_job *mj = mb_job_new(OP_QUOTA);
	mj->j.done = quota_done;
	imap_submit(c, &mj->j);
	return IMAP_CMD_ASYNC;
}

int
imap_cmd_getquotaroot(struct imap_conn *c, struct imap_args *args)
{
	struct mb_job *mj = mb_job_new(OP_QUOTA);

	if (name_arg(c, args, &mj->name, false) < 0) {
		mb_job_free(mj);
		return IMAP_CMD_DONE;
	}
	if (imap_args_end(args) < 0) {
		imap_bad(c, "%s", args->err);
		mb_job_free(mj);
		return IMAP_CMD_DONE;
	}
	mj->j.done = quota_done;
	imap_submit(c, &mj->j);
	return IMAP_CMD_ASYNC;
}

int
imap_cmd_setquota(struct imap_conn *c, struct imap_args *args)
{
	imap_no(c, "[NOPERM] quota is set by the administrator");
	return IMAP_CMD_DONE;
}
