/*
 * imap_private: what the files of the IMAP server share. One struct
 * imap_conn per connection (kept small: buffers and the selected-mailbox view
 * are allocated only when used), the command table entry, the storage job
 * helper and the response writers.
 *
 * Threads: everything here runs on the loop thread except the work function
 * of a job, which runs on the account's storage thread and may touch only the
 * job's own fields and the index. A command that submits work marks the
 * connection busy; input is not processed until the command finishes.
 */
#ifndef MOX_IMAP_PRIVATE_H
#define MOX_IMAP_PRIVATE_H

#include <stdbool.h>
#include <stdint.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <openssl/ssl.h>

#include "daemon/imap.h"
#include "daemon/imap_parse.h"
#include "daemon/store.h"
#include "daemon/util.h"
#include "index/index.h"

struct auth_session;
struct maildir_writer;

enum imap_state {
	IMAP_ST_NOTAUTH = 1 << 0,
	IMAP_ST_AUTH = 1 << 1,
	IMAP_ST_SELECTED = 1 << 2,
	IMAP_ST_LOGOUT = 1 << 3,
};
#define IMAP_ST_ANY (IMAP_ST_NOTAUTH | IMAP_ST_AUTH | IMAP_ST_SELECTED)
#define IMAP_ST_LOGGEDIN (IMAP_ST_AUTH | IMAP_ST_SELECTED)

/* Enabled extensions (ENABLE) and connection flags. */
enum imap_enabled {
	IMAP_EN_REV2 = 1 << 0,
	IMAP_EN_UTF8 = 1 << 1,
	IMAP_EN_CONDSTORE = 1 << 2,
	IMAP_EN_QRESYNC = 1 << 3,
};

/* Handler results. */
enum imap_cmd_result {
	IMAP_CMD_DONE = 1,  /* the tagged reply was sent; the command is over */
	IMAP_CMD_ASYNC = 2, /* work is pending; imap_cmd_finish() ends it later */
};

struct imap_conn;
typedef int (*imap_cmd_fn)(struct imap_conn *c, struct imap_args *args);

/* Command flags. */
#define IMAP_CMDF_UID 0x1     /* may follow "UID" */
#define IMAP_CMDF_NOEXPUNGE 0x2 /* no EXPUNGE responses after it (non-UID FETCH/STORE/SEARCH/COPY) */

struct imap_cmd_def {
	const char *name;
	unsigned states;
	unsigned flags;
	imap_cmd_fn fn;
};

/*
 * The selected mailbox as the session sees it. An idle session keeps this for
 * as long as it stays selected, so the messages are kept compact and read
 * through imap_view_uid/flags/modseq: UIDs ascending (index + 1 is the
 * sequence number) as runs of consecutive UIDs (8 bytes a run: a mailbox
 * whose messages were never expunged is one run), system flags
 * (IDX_FLAGS_ALL fits a byte), and modseqs as one base plus exceptions:
 * a message without an exception is known to the view in its state as of
 * base_modseq (every change to it up to that modseq is reflected), one with
 * an exception in its state as of that exact modseq (> base_modseq; added
 * or changed since the view was loaded or last rebased). About 1 byte a
 * message; the exceptions are bounded (imap_select.c rebases them).
 */
struct imap_view {
	uint32_t mailbox_id;
	char *name;                 /* UTF-8 */
	bool readonly;
	uint32_t uidvalidity;
	uint32_t uidnext;
	uint64_t highest_modseq;
	uint32_t *run_uid;          /* first UID of each run of consecutive UIDs */
	uint32_t *run_at;           /* index of each run's first message; runs cover 0..n */
	size_t nruns, capruns;
	uint8_t *flags;             /* n of cap */
	size_t n, cap;
	uint64_t base_modseq;
	uint32_t *exc_uid;          /* exceptions: open addressing by UID (0: free slot), capexc a power of 2 */
	uint64_t *exc_modseq;
	size_t nexc, capexc;
	char **keywords;            /* of the mailbox, as last announced in FLAGS */
	size_t nkeywords;
	uint32_t *saved;            /* SEARCHRES "$": UIDs, ascending */
	size_t nsaved;
	uint32_t nrecent;           /* IMAP4rev1 RECENT count announced at select */
	struct idx_listener *listener; /* created on the storage thread; drained on the loop */
	struct idx_change *pending; /* changes not yet announced */
	size_t npending, cappending;
	bool overflow;
	bool applying;              /* a change-apply job runs */
	bool listener_done;
	bool stale;                 /* UIDVALIDITY changed under the view: the session ends (BYE) */
	uint32_t recent_from;       /* UIDs from here on are \Recent to this session (see imap_view_recent) */
	void (*waiting)(struct imap_conn *c); /* a flush waiting for the running apply job */
	bool waiting_allow;
};

enum imap_mode {
	IMAP_MODE_COMMAND = 0,
	IMAP_MODE_AUTH_LINE,  /* waiting for an AUTHENTICATE response line */
	IMAP_MODE_IDLE,       /* waiting for DONE */
};

/* An APPEND message being received or added. */
struct imap_append_msg {
	struct maildir_writer *w;
	uint64_t size;
};

struct imap_conn {
	struct server *srv;
	struct conn_info *ci;
	struct bufferevent *bev;
	SSL *ssl;                   /* non-NULL once TLS */
	struct imap_parser *p;
	struct event *ev_timer;     /* inactivity timeout and auth failure delay */
	struct event *ev_defer;     /* resume input, free: outside nested callbacks */
	struct event *ev_notify;    /* changes to the selected mailbox (from storage threads) */
	struct imap_conn *next, *prev;

	enum imap_state state;
	enum imap_mode mode;
	unsigned enabled;           /* imap_enabled bits */
	bool busy;                  /* a command is in progress */
	bool closing;               /* no more input; free once output flushed and jobs done */
	bool freeing;
	bool lit_begun;             /* literal placement decided */
	bool lit_external;          /* the current literal is an APPEND message */
	bool ncommands_nonzero;     /* a command was completed once (first-garbage rule) */
	bool append_failed;         /* a literal of this APPEND was refused */
	bool auth_delay;            /* ev_timer is delaying a failure reply */
	bool auth_final;            /* server-final SASL data sent; expecting an empty line */
	bool uid;                   /* the current command came with UID */
	int jobs;                   /* storage jobs in flight */
	uint64_t append_limit;
	const struct imap_cmd_def *cmd; /* current command */
	char *tag;                  /* current command's tag (copy) */
	char *account;              /* logged-in account name */
	struct store_account *sa;
	struct auth_session *as;    /* AUTHENTICATE in progress */
	char *delayed_reply;        /* failure reply sent when the delay ends */
	struct imap_view *sel;
	struct imap_append_msg *app;/* APPEND messages of the current command */
	size_t napp;
	struct maildir_writer *app_cur; /* the literal being streamed, also in app[] */
	uint64_t app_left;
	char *tmpdir;
	void (*resume_fn)(struct imap_conn *c); /* producer waiting for output to drain */
	void *fetch_pending;        /* FETCH job waiting for output to drain */
	char *held;                 /* tagged reply held until pending changes are announced */
	char **renames;             /* OLDNAME: pairs (new, old) of renames this session saw */
	size_t nrenames;
};

/* A unit of storage work for a connection. Embed as the first member. */
struct imap_job {
	struct imap_conn *c;
	void (*work)(struct imap_job *j, struct idx_account *a);
	/* On the loop thread; also when the connection is closing (check imap_gone). Frees j. */
	void (*done)(struct imap_job *j);
	int rc;                 /* result of work, by convention */
	int error;              /* IDX_E_* */
	char err[256];
};

/* ---- imap_session.c ---- */
/* Queue j on the account's storage thread (counts it against closing). */
void imap_submit(struct imap_conn *c, struct imap_job *j);
/* True when the connection is closing: a done callback must only clean up. */
bool imap_gone(const struct imap_conn *c);
/* The current command is over: reset the parser, resume input. */
void imap_cmd_finish(struct imap_conn *c);
/* Output. */
void imap_printf(struct imap_conn *c, const char *fmt, ...) MOX_PRINTF(2, 3);
void imap_write(struct imap_conn *c, const void *data, size_t len);
struct evbuffer *imap_out(struct imap_conn *c);
/* Tagged replies: "tag OK msg"; NO/BAD carry " (cid x)". */
void imap_ok(struct imap_conn *c, const char *fmt, ...) MOX_PRINTF(2, 3);
void imap_no(struct imap_conn *c, const char *fmt, ...) MOX_PRINTF(2, 3);
void imap_bad(struct imap_conn *c, const char *fmt, ...) MOX_PRINTF(2, 3);
/* "tag NO [SERVERBUG] internal error" and a log line with what. */
void imap_serverbug(struct imap_conn *c, const char *what, const char *err);
/* Close after flushing output (BYE already sent by the caller if any). */
void imap_close(struct imap_conn *c);
void imap_set_state(struct imap_conn *c, enum imap_state st);
/* Restart the inactivity timer for the state. */
void imap_touch(struct imap_conn *c);
bool imap_utf8(const struct imap_conn *c);
/* Mailbox name from args (mUTF-7 or UTF-8 per session) into out; BAD/NO message in *err_r. */
int imap_arg_mailbox(struct imap_conn *c, struct imap_args *args, struct mbuf *out);
/* Append a mailbox name for a response (quoted, mUTF-7 unless UTF-8 enabled). */
void imap_mailbox_out(struct imap_conn *c, struct mbuf *b, const char *name);
const char *imap_capabilities(struct imap_conn *c, struct mbuf *b);
/* Output above which producers pause (backpressure). */
#define IMAP_OUT_HIGH (256 * 1024)
/* Called when output drained below the mark while a producer waits. */
void imap_wait_output(struct imap_conn *c, void (*resume)(struct imap_conn *c));

/* ---- imap_auth.c ---- */
int imap_cmd_capability(struct imap_conn *c, struct imap_args *args);
int imap_cmd_starttls(struct imap_conn *c, struct imap_args *args);
int imap_cmd_login(struct imap_conn *c, struct imap_args *args);
int imap_cmd_authenticate(struct imap_conn *c, struct imap_args *args);
/* An AUTHENTICATE response line arrived. */
void imap_auth_line(struct imap_conn *c, const char *line, size_t len);

/* ---- imap_mailbox.c ---- */
int imap_cmd_list(struct imap_conn *c, struct imap_args *args);
int imap_cmd_lsub(struct imap_conn *c, struct imap_args *args);
int imap_cmd_create(struct imap_conn *c, struct imap_args *args);
int imap_cmd_delete(struct imap_conn *c, struct imap_args *args);
int imap_cmd_rename(struct imap_conn *c, struct imap_args *args);
int imap_cmd_subscribe(struct imap_conn *c, struct imap_args *args);
int imap_cmd_unsubscribe(struct imap_conn *c, struct imap_args *args);
int imap_cmd_status(struct imap_conn *c, struct imap_args *args);
int imap_cmd_namespace(struct imap_conn *c, struct imap_args *args);
int imap_cmd_getquota(struct imap_conn *c, struct imap_args *args);
int imap_cmd_getquotaroot(struct imap_conn *c, struct imap_args *args);
int imap_cmd_setquota(struct imap_conn *c, struct imap_args *args);
/* Append the STATUS attribute list for mb (items: bit set of IMAP_STATUS_*). */
#define IMAP_STATUS_MESSAGES 0x1
#define IMAP_STATUS_UIDNEXT 0x2
#define IMAP_STATUS_UIDVALIDITY 0x4
#define IMAP_STATUS_UNSEEN 0x8
#define IMAP_STATUS_DELETED 0x10
#define IMAP_STATUS_SIZE 0x20
#define IMAP_STATUS_RECENT 0x40
#define IMAP_STATUS_HIGHESTMODSEQ 0x80
#define IMAP_STATUS_APPENDLIMIT 0x100
#define IMAP_STATUS_DELETED_STORAGE 0x200
int imap_status_items(struct imap_args *list, unsigned *items_r);
void imap_status_out(struct imap_conn *c, struct mbuf *b, const struct idx_mailbox *mb, unsigned items);

/* ---- imap_select.c ---- */
int imap_cmd_select(struct imap_conn *c, struct imap_args *args);
int imap_cmd_examine(struct imap_conn *c, struct imap_args *args);
int imap_cmd_idle(struct imap_conn *c, struct imap_args *args);
int imap_cmd_noop(struct imap_conn *c, struct imap_args *args);
/* Free the view (unselect); the listener is removed on the storage thread. */
void imap_view_free(struct imap_conn *c);
/* Before the tagged reply of a command in SELECTED: announce pending changes. */
void imap_view_flush(struct imap_conn *c, bool allow_expunge, void (*then)(struct imap_conn *c));
void imap_idle_line(struct imap_conn *c, const char *line, size_t len);
void imap_view_notified(struct imap_conn *c);
/*
 * Take queued changes; when the selected mailbox's UIDVALIDITY changed (its
 * UIDs were reassigned) the view cannot go on: send "* BYE", close and
 * return 1. 0 when the view is valid or nothing is selected. Call only
 * between responses.
 */
int imap_view_check_uidvalidity(struct imap_conn *c);
/*
 * Storage thread, at the start of a job that acts on messages named by the
 * view's UIDs (or sequence numbers): whether mailbox_id still has the view's
 * UIDVALIDITY. One record read. The account's jobs and the tools that change
 * UIDs (reassignuids, bumpuidvalidity) run one after the other on that
 * thread, so the answer holds for the rest of the job. 1 unchanged (also
 * when the mailbox is gone: its UIDs then name nothing), 0 changed (the job
 * must leave the mailbox alone), -1 with err.
 */
int imap_view_uids_valid(struct idx_account *a, uint32_t mailbox_id, uint32_t uidvalidity, char *err,
    size_t errlen);
/*
 * Loop thread: a job found the UIDVALIDITY of mailbox_id changed. The view
 * (if it still shows that mailbox) becomes stale: imap_cmd_finish then ends
 * the session with BYE instead of the command's reply.
 */
void imap_view_stale(struct imap_conn *c, uint32_t mailbox_id);
/* UID FETCH ... (CHANGEDSINCE since VANISHED): "* VANISHED (EARLIER)" for the UIDs of set
 * expunged after since, then then(c); on failure NO and the command ends. */
void imap_vanished_earlier(struct imap_conn *c, const struct imap_seqset *set, uint64_t since,
    void (*then)(struct imap_conn *c));
/* Message i (0-based: sequence number - 1) of the view. */
uint32_t imap_view_uid(const struct imap_view *v, size_t i);
static inline uint32_t imap_view_flags(const struct imap_view *v, size_t i) { return v->flags[i]; }
/*
 * The modseq of the state in which the view knows message i: its exception,
 * else base_modseq (possibly above the message's own modseq: what counts is
 * that no change up to it is missing from the view).
 */
uint64_t imap_view_modseq(const struct imap_view *v, size_t i);
/*
 * Message i of the view is now known in its state as of modseq (with these
 * flags). A modseq above base_modseq is kept as an exception; past the
 * exception limit the view is marked for a resynchronization, which
 * rebases it.
 */
void imap_view_set(struct imap_view *v, size_t i, uint32_t flags, uint64_t modseq);
/* Sequence number of uid (1-based), 0 if not in view. */
uint32_t imap_view_seq(const struct imap_view *v, uint32_t uid);
/* Resolve a seqset (sequence numbers or UIDs per uid) into view UIDs, ascending. Caller frees. */
int imap_view_resolve(struct imap_conn *c, struct imap_seqset *set, bool uid, uint32_t **uids_r, size_t *n_r);
/* Remove uids from the view, announcing EXPUNGE or VANISHED. */
void imap_view_expunged(struct imap_conn *c, const uint32_t *uids, size_t n);
/* True when uid counts as \Recent for this session (added since it selected). */
bool imap_view_recent(const struct imap_view *v, uint32_t uid);
/* Remember a rename for OLDNAME in later LIST responses of this session. */
void imap_renamed(struct imap_conn *c, const char *newname, const char *oldname);
/* The old name of a mailbox this session saw renamed, NULL if none. */
const char *imap_oldname(const struct imap_conn *c, const char *name);
/* Flag string of system flags + keywords. */
void imap_flags_out(struct mbuf *b, uint32_t flags, char *const *kw, size_t nkw, bool recent);
/* Parse a flag list into flags/keywords (kw pointers into args). -1 with BAD sent. */
int imap_flags_parse(struct imap_conn *c, struct imap_args *list, uint32_t *flags_r, const char ***kw_r,
    size_t *nkw_r);

/* ---- imap_fetch.c ---- */
int imap_cmd_fetch(struct imap_conn *c, struct imap_args *args);

/* ---- imap_search.c ---- */
int imap_cmd_search(struct imap_conn *c, struct imap_args *args);

/* ---- imap_store.c ---- */
int imap_cmd_store(struct imap_conn *c, struct imap_args *args);
int imap_cmd_copy(struct imap_conn *c, struct imap_args *args);
int imap_cmd_move(struct imap_conn *c, struct imap_args *args);
int imap_cmd_expunge(struct imap_conn *c, struct imap_args *args);
int imap_cmd_close(struct imap_conn *c, struct imap_args *args);
int imap_cmd_unselect(struct imap_conn *c, struct imap_args *args);
int imap_cmd_append(struct imap_conn *c, struct imap_args *args);
int imap_cmd_enable(struct imap_conn *c, struct imap_args *args);
int imap_cmd_id(struct imap_conn *c, struct imap_args *args);
int imap_cmd_logout(struct imap_conn *c, struct imap_args *args);
int imap_cmd_check(struct imap_conn *c, struct imap_args *args);
/* APPEND literal streaming (imap_session.c calls these). */
int imap_append_begin(struct imap_conn *c, uint64_t size, char *err, size_t errlen);
int imap_append_data(struct imap_conn *c, const void *data, size_t len);
void imap_append_clear(struct imap_conn *c);

#endif
