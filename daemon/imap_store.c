/*
 * imap_store: commands that change messages or the session: STORE, COPY,
 * MOVE, EXPUNGE, CLOSE/UNSELECT, APPEND (the literal streams into a maildir
 * writer; the add is group-committed by the store), ENABLE, ID, LOGOUT.
 */
#define _GNU_SOURCE 1
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/imap_private.h"
#include "daemon/log.h"

/* ---- ENABLE, ID, LOGOUT ---- */

int
imap_cmd_enable(struct imap_conn *c, struct imap_args *args)
{
	const char *cap;
	size_t len;
	struct mbuf b;

	if (imap_args_peek(args) == NULL) {
		imap_bad(c, "missing capability");
		return IMAP_CMD_DONE;
	}
	mbuf_init(&b, 4096);
	while (imap_args_peek(args) != NULL) {
		if (imap_args_atom(args, &cap, &len) < 0) {
			mbuf_clear(&b);
			imap_bad(c, "%s", args->err);
			return IMAP_CMD_DONE;
		}
		unsigned bit = 0;
		const char *name = NULL;
		if (str_ieq(cap, "IMAP4rev2"))
			bit = IMAP_EN_REV2, name = "IMAP4rev2";
		else if (str_ieq(cap, "UTF8=ACCEPT"))
			bit = IMAP_EN_UTF8, name = "UTF8=ACCEPT";
		else if (str_ieq(cap, "CONDSTORE"))
			bit = IMAP_EN_CONDSTORE, name = "CONDSTORE";
		else if (str_ieq(cap, "QRESYNC"))
			bit = IMAP_EN_QRESYNC | IMAP_EN_CONDSTORE, name = "QRESYNC";
		if (bit == 0 || (c->enabled & bit) == bit)
			continue;
		c->enabled |= bit;
		mbuf_printf(&b, " %s", name);
	}
	if (imap_utf8(c))
		imap_parse_set_utf8(c->p, true);
	imap_printf(c, "* ENABLED%s\r\n", b.len > 0 ? b.data : "");
	mbuf_clear(&b);
	imap_ok(c, "ENABLE completed");
	return IMAP_CMD_DONE;
}

int
imap_cmd_id(struct imap_conn *c, struct imap_args *args)
{
	const struct imap_arg *a = imap_args_peek(args);
	struct imap_args sub;

	if (a != NULL && a->type == IMAP_ARG_LIST) {
		imap_args_list(args, &sub);
		/* Field/value pairs: RFC 2971 limits them to 30; we only log them. */
		int n = 0;
		while (imap_args_peek(&sub) != NULL && n < 60) {
			const char *k, *v;
			size_t kl, vl;
			if (imap_args_string(&sub, &k, &kl) < 0 || imap_args_nstring(&sub, &v, &vl) < 0) {
				imap_bad(c, "bad ID field list");
				return IMAP_CMD_DONE;
			}
			log_debug("imap", c->ci->cid, "client id", "field", k, "value", v);
			n += 2;
		}
	} else if (a == NULL || a->type != IMAP_ARG_NIL) {
		imap_bad(c, "ID expects a list or NIL");
		return IMAP_CMD_DONE;
	} else {
		imap_args_any(args, &a);
	}
	if (imap_args_end(args) < 0) {
		imap_bad(c, "%s", args->err);
		return IMAP_CMD_DONE;
	}
	imap_printf(c, "* ID (\"name\" \"mox\")\r\n");
	imap_ok(c, "ID completed");
	return IMAP_CMD_DONE;
}

int
imap_cmd_logout(struct imap_conn *c, struct imap_args *args)
{
	if (imap_args_end(args) < 0) {
		imap_bad(c, "%s", args->err);
		return IMAP_CMD_DONE;
	}
	imap_printf(c, "* BYE thanks\r\n");
	imap_ok(c, "LOGOUT completed");
	imap_set_state(c, IMAP_ST_LOGOUT);
	return IMAP_CMD_DONE;
}
#define STUB(n) int n(struct imap_conn *c, struct imap_args *args) { imap_no(c, "not implemented yet"); return IMAP_CMD_DONE; }
STUB(imap_cmd_fetch) STUB(imap_cmd_search)
STUB(imap_cmd_store) STUB(imap_cmd_copy) STUB(imap_cmd_move) STUB(imap_cmd_expunge) STUB(imap_cmd_close)
STUB(imap_cmd_unselect) STUB(imap_cmd_append)
int imap_append_begin(struct imap_conn *c, uint64_t size, char *err, size_t errlen) { snprintf(err, errlen, "no"); return -1; }
int imap_append_data(struct imap_conn *c, const void *data, size_t len) { return -1; }
void imap_append_clear(struct imap_conn *c) {}
