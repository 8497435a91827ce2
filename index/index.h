/*
 * index: the account store. One Tokyo Cabinet B+tree per account beside its
 * Maildir (format in index/SCHEMA.md), and the API every protocol and tool
 * uses to read and change an account: mailboxes, messages, flags, UIDs and
 * modseqs, tombstones, counts, quota, threads, change notification, the sync
 * between the Maildir and the index, and a consistency checker.
 * Owns: all writes of an account (so files and index stay consistent).
 * Does not: log, touch sockets or libevent, or know about accounts' config
 * beyond the options passed in. Functions are thread-safe per account handle:
 * a mutex serializes them; the daemon calls them from its storage threads.
 * Return convention: < 0 error (err filled), 0 nothing/not found, > 0 ok.
 * IDX_REFUSED (-2) is a client-level refusal (mailbox exists, has children,
 * over quota, bad name or keyword): err holds a message fit for an IMAP NO,
 * nothing changed. -1 is an internal failure (err has path and cause).
 */
#ifndef MOX_INDEX_H
#define MOX_INDEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct maildir_writer;
struct idx_account;

/* Returned for client-level refusals (see above); never for I/O errors. */
#define IDX_REFUSED (-2)

/* System flags (bits of idx_message.flags). */
enum idx_flag {
	IDX_SEEN = 1 << 0,
	IDX_ANSWERED = 1 << 1,
	IDX_FLAGGED = 1 << 2,
	IDX_DELETED = 1 << 3,
	IDX_DRAFT = 1 << 4,
	IDX_FORWARDED = 1 << 5, /* the $Forwarded keyword, Maildir 'P' */
};
#define IDX_FLAGS_ALL 0x3fu

/* Special-use attributes (bits of idx_mailbox.special_use). */
enum idx_special_use {
	IDX_SU_SENT = 1 << 0,
	IDX_SU_DRAFTS = 1 << 1,
	IDX_SU_TRASH = 1 << 2,
	IDX_SU_JUNK = 1 << 3,
	IDX_SU_ARCHIVE = 1 << 4,
};

/* Thread flags (idx_message.tflags). */
enum idx_tflag {
	IDX_T_MISSING_LINK = 1 << 0,
	IDX_T_MUTED = 1 << 1,
	IDX_T_COLLAPSED = 1 << 2,
	IDX_T_IS_REJECT = 1 << 3,
};

/* Limits on what one account may hold. */
#define IDX_MAILBOX_NAME_MAX 1000   /* bytes of a mailbox name */
#define IDX_KEYWORD_MAX 200         /* bytes of one keyword */
#define IDX_KEYWORDS_PER_MAILBOX 1000
#define IDX_KEYWORDS_PER_MESSAGE 100

struct idx_counts {
	uint64_t total;   /* live messages */
	uint64_t deleted; /* with \Deleted */
	uint64_t unseen;  /* without \Seen */
	uint64_t unread;  /* without \Seen and without \Deleted */
	uint64_t size;    /* bytes */
};

/*
 * A mailbox. Strings and arrays are owned by the struct: release with
 * idx_mailbox_clear (embedded) — never shared with the index.
 */
struct idx_mailbox {
	uint32_t id;
	char *name;   /* IMAP name, "/" separated, UTF-8; "INBOX" for the inbox */
	char *folder; /* Maildir++ directory name, "" for INBOX */
	uint32_t parent_id;
	uint32_t uidvalidity;
	uint32_t uidnext;
	uint32_t special_use;
	bool subscribed;
	uint64_t highest_modseq;
	uint64_t created_modseq;
	struct idx_counts counts;
	char **keywords;
	size_t nkeywords;
};
void idx_mailbox_clear(struct idx_mailbox *mb);
void idx_mailbox_list_free(struct idx_mailbox **list, size_t n);

/*
 * A message as stored. Owned by the struct (release with idx_message_clear).
 */
struct idx_message {
	uint64_t id;
	uint32_t mailbox_id;
	uint32_t uid;
	uint64_t modseq;
	uint64_t createseq;
	uint32_t flags;
	char **keywords;
	size_t nkeywords;
	uint64_t size;
	char *filename; /* "new/<name>" or "cur/<name>" in the mailbox's folder */
	int64_t received;
	int32_t received_tz; /* minutes east of UTC */
	uint32_t prefix_len;
	char *message_id;
	char *subject_base;
	uint64_t thread_id;
	uint64_t *parents;
	size_t nparents;
	uint32_t tflags;
	uint32_t mailbox_orig;
	uint32_t mailbox_destined;
	int64_t savedate;
};
void idx_message_clear(struct idx_message *m);

/* Options for opening (and, the first time, creating) an account. */
struct idx_options {
	const char *host;        /* for new Maildir file names; default gethostname */
	/* Mailboxes created with a new account besides INBOX (NULL: none). */
	const char *sent, *archive, *trash, *drafts, *junk;
	const char *const *regular;
	size_t nregular;
	uint64_t quota;          /* account storage limit in bytes; 0 none */
	bool no_fsync;           /* tests and imports into a stopped server only */
	/* An index of an older schema is not upgraded: the open fails saying so
	 * (read-only checks such as verifydata without -fix). */
	bool no_upgrade;
	/* No delivery log (index.wal): every add takes its three flushes, as a
	 * message larger than IDX_LOGGED_MAX does. An existing log is still
	 * replayed at open. */
	bool no_log;
};

/* ---- account ---- */

/*
 * Open the account in directory dir (holding Maildir/ and index.tcb),
 * creating both when absent (then INBOX and the options' mailboxes are
 * created). Takes Tokyo Cabinet's file lock without blocking: a second
 * opener (another process) gets an error saying the account is in use.
 * Returns 1 with *acct_r (close with idx_account_close), -1 with err.
 */
/* opts may be NULL (defaults). */
int idx_account_open(const char *dir, const struct idx_options *opts, struct idx_account **acct_r,
    char *err, size_t errlen);
void idx_account_close(struct idx_account **acctp);

/* Paths of the account; valid while the account is open. */
const char *idx_account_dir(const struct idx_account *a);
const char *idx_account_maildir(const struct idx_account *a);

/*
 * False once an fdatasync of the index failed: no commit can be made durable
 * any more and every write fails until the account is opened again (a
 * restart; see index_private.h sync_failed). Any thread.
 */
bool idx_account_writable(struct idx_account *a);

/* Update the quota (config reload). */
void idx_account_set_quota(struct idx_account *a, uint64_t quota);

struct idx_account_info {
	uint64_t highest_modseq;
	uint64_t quota_used;
	uint64_t quota;
	uint32_t nmailboxes;
	/* The delivery log's replay when the account was opened: messages added
	 * again, files written again from the log, and (after a reboot) records
	 * dropped whose entry and file the power loss took (never acknowledged). */
	uint64_t wal_applied, wal_restored, wal_dropped;
	/* Why the account has no delivery log (it could not be created); "" fine. */
	char wal_error[256];
	/* Bytes of a torn entry cut from Tokyo Cabinet's own write-ahead log
	 * (index.tcb.wal) before its rollback at open: a process was killed while
	 * writing it (idx_tc_wal_mend in account.c). */
	uint64_t tc_wal_cut;
};
int idx_account_info(struct idx_account *a, struct idx_account_info *info_r, char *err, size_t errlen);

/* Opaque SASL secrets. get: 1 with *blob_r (caller frees), 0 none set. */
int idx_secrets_set(struct idx_account *a, const void *blob, size_t len, char *err, size_t errlen);
int idx_secrets_get(struct idx_account *a, void **blob_r, size_t *len_r, char *err, size_t errlen);

/* ---- mailboxes ---- */

/*
 * Check and canonicalize a mailbox name: INBOX in any case (also as the
 * first level, "inbox/x") becomes "INBOX"; rejects empty names and levels,
 * leading/trailing "/", invalid UTF-8, control characters, names over
 * IDX_MAILBOX_NAME_MAX. Writes the canonical form into buf.
 * Also rejects control characters U+0080-U+009F, U+2028/2029, a leading '#'
 * (IMAP namespaces), and names whose Maildir++ directory name would be too
 * long, so a name that passes can always be created.
 * Returns 1, or -1 with err (a message fit for an IMAP NO).
 */
int idx_mailbox_name_check(const char *name, char *buf, size_t size, char *err, size_t errlen);

/* All mailboxes, sorted by name. Returns the count (>= 0), -1. */
int idx_mailbox_list(struct idx_account *a, struct idx_mailbox **list_r, size_t *n_r, char *err,
    size_t errlen);
/* By name (canonicalized) or id: 1 found (fills *mb_r), 0 not found, -1. */
int idx_mailbox_get(struct idx_account *a, const char *name, struct idx_mailbox *mb_r, char *err,
    size_t errlen);
int idx_mailbox_get_id(struct idx_account *a, uint32_t id, struct idx_mailbox *mb_r, char *err,
    size_t errlen);

/*
 * Create mailbox name (and any missing parents, as IMAP CREATE does) with
 * special_use bits; subscribed as given (parents created here too).
 * Returns 1 created (*id_r set, may be NULL), 0 already exists (*id_r set),
 * IDX_REFUSED for a bad name or special-use bit, -1 error.
 */
int idx_mailbox_create(struct idx_account *a, const char *name, uint32_t special_use, bool subscribe,
    uint32_t *id_r, char *err, size_t errlen);

/*
 * Delete mailbox name and its messages (files removed). INBOX cannot be
 * deleted; a mailbox with children cannot either (IMAP: \Noselect is not
 * kept; the client deletes children first). Returns 1, 0 not found,
 * IDX_REFUSED (INBOX, has children), -1.
 */
int idx_mailbox_delete(struct idx_account *a, const char *name, char *err, size_t errlen);

/*
 * Rename from -> to, children too. Renaming INBOX moves all its messages to
 * a new mailbox `to` (new UIDs from 1, UIDVALIDITY of the new mailbox) and
 * leaves INBOX empty, as RFC 9051 says (its children stay; INBOX gets
 * tombstones for the moved UIDs). Returns 1, 0 from not found, IDX_REFUSED
 * (to or a child's new name exists, to is below from, bad name), -1.
 */
int idx_mailbox_rename(struct idx_account *a, const char *from, const char *to, char *err, size_t errlen);

/* Subscription and special-use flags of an existing mailbox: 1, 0 not found,
 * IDX_REFUSED (unknown special-use bit), -1. */
int idx_mailbox_subscribe(struct idx_account *a, const char *name, bool subscribe, char *err, size_t errlen);
int idx_mailbox_set_special_use(struct idx_account *a, const char *name, uint32_t special_use, char *err,
    size_t errlen);

/* ---- adding messages (delivery, APPEND, import) ---- */

/*
 * One message to add. The caller has written the file with a maildir
 * writer (finished, possibly with MAILDIR_FINISH_NOSYNC: idx_add syncs the
 * filesystem once for the batch) anywhere on the account's filesystem.
 * The same writer may appear in several items (one per recipient mailbox
 * of this account). idx_add neither removes nor frees the writers: the
 * caller does that after idx_add returns (the index has committed).
 */
struct idx_add {
	struct maildir_writer *w;
	uint32_t mailbox_id;
	uint32_t flags;
	const char *const *keywords;
	size_t nkeywords;
	int64_t received;     /* unix seconds; 0: now */
	int32_t received_tz;  /* minutes east of UTC */
	uint32_t prefix_len;
	uint32_t mailbox_destined; /* 0 none */
	bool is_reject;
	/* The writer was finished with fsync (not MAILDIR_FINISH_NOSYNC): the
	 * batch needs no syncfs for it. Default false: idx_add syncs once. */
	bool synced;
	/* results */
	int result;           /* 1 added, -1 failed (err_r says why) */
	int error;            /* IDX_E_* for failed items */
	uint32_t uid_r;
	uint64_t id_r;
	char err_r[160];
};

/* Why one item of a batch failed (idx_add.error). */
enum idx_error {
	IDX_E_NONE = 0,
	IDX_E_INTERNAL,  /* I/O or index error: temporary for the client */
	IDX_E_OVERQUOTA, /* the account's quota would be exceeded */
	IDX_E_NOMAILBOX, /* the mailbox does not exist (any more) */
	IDX_E_INVALID,   /* bad keyword, flags, ... */
};

/*
 * Add a batch of messages: sync the files once, link each into its
 * mailbox's folder, fsync each directory once, parse each message (MIME
 * cache, threading), assign UIDs, and commit all in one transaction. Items
 * fail individually (quota, vanished mailbox): their result is -1; the
 * others are added. Returns the number added (>= 0), or -1 when nothing
 * could be done (err). Never leaves an item half-added: a linked file
 * whose index commit failed is unlinked again. A file goes to new/ when it
 * has no flags and no keywords, else to cur/ with its flags and keyword
 * letters (dovecot-keywords of the folder, written before the link). In a
 * muted thread a new message gets \Seen.
 */
int idx_add(struct idx_account *a, struct idx_add *items, size_t n, char *err, size_t errlen);

/*
 * What must still reach the disk before messages added with idx_add_nosync
 * may be acknowledged: the index up to commit number commit (0: nothing)
 * and the new/ or cur/ directories the files were linked into.
 */
struct idx_durable {
	uint64_t commit;
	char **dirs;
	size_t ndirs;
};

/*
 * idx_add without its last two waits: the files are durable and linked,
 * the transaction committed (listeners hear of the messages), but the
 * directory fsyncs and the index's fdatasync are left to idx_durable_wait,
 * which any thread may run while this account's thread goes on with the
 * next batch; one index fdatasync then covers every commit before it.
 * Nothing may be acknowledged before idx_durable_wait returned 1. When it
 * fails, the messages stay (they may be durable or not): report a
 * temporary failure (a retry may deliver a duplicate, never lose one).
 */
int idx_add_nosync(struct idx_account *a, struct idx_add *items, size_t n, struct idx_durable *d_r, char *err,
    size_t errlen);
/* Any thread, while a is open. 1, -1 (err). Releases d's memory either way. */
int idx_durable_wait(struct idx_account *a, struct idx_durable *d, char *err, size_t errlen);

/*
 * The delivery log (index.wal, SCHEMA.md): a batch of messages of at most
 * IDX_LOGGED_MAX bytes each is durable after one fdatasync of the log, made
 * by idx_add itself (idx_add_nosync then leaves nothing to wait for); the
 * files, directories and index are synced later by a checkpoint, and the
 * next open replays what a crash left. A checkpoint runs when the log is
 * full, before copies, moves and the UID tools, and at close.
 */
#define IDX_LOGGED_MAX (128 * 1024)
/* Checkpoint now: 1, -1 (err; the log keeps its entries for the next open). */
int idx_checkpoint(struct idx_account *a, char *err, size_t errlen);
/* Checkpoint when the log holds entries and the last came idle_ms or more
 * ago: 1 done, 0 nothing to do, -1. For a storage thread with nothing to do. */
int idx_checkpoint_idle(struct idx_account *a, int64_t idle_ms, char *err, size_t errlen);

/* ---- reading messages ---- */

/* One message by mailbox and UID: 1 found, 0 not (or expunged), -1. */
int idx_message_get(struct idx_account *a, uint32_t mailbox_id, uint32_t uid, struct idx_message *m_r,
    char *err, size_t errlen);
/* One message by id: 1 found, 0 not, -1. */
int idx_message_get_id(struct idx_account *a, uint64_t id, struct idx_message *m_r, char *err, size_t errlen);

/*
 * Call fn for every live message of a mailbox with uid >= from_uid, in UID
 * order. fn returns > 0 to go on, 0 to stop, < 0 to stop with an error
 * (returned). The message passed is valid only during the call. The account
 * lock is held during the walk: fn must not call back into this account.
 * Returns the number of messages visited (>= 0), or < 0.
 */
typedef int (*idx_message_fn)(void *arg, const struct idx_message *m);
int idx_message_each(struct idx_account *a, uint32_t mailbox_id, uint32_t from_uid, idx_message_fn fn,
    void *arg, char *err, size_t errlen);
/* The same, cheaper: the message passed has only id, mailbox_id, uid,
 * modseq, createseq, flags and keywords (other fields zero/NULL), and a
 * record corrupt beyond those fields is not skipped. */
int idx_message_each_flags(struct idx_account *a, uint32_t mailbox_id, uint32_t from_uid, idx_message_fn fn,
    void *arg, char *err, size_t errlen);

/* Compact per-message state for an IMAP session's view of a mailbox. */
struct idx_uidstate {
	uint32_t uid;
	uint32_t flags;
	uint64_t modseq;
};
/*
 * All live messages of a mailbox as (uid, flags, modseq), UID order, in one
 * sequential scan that decodes only those fields (a record corrupt beyond
 * them is listed; the checker reports it). Keywords are not included (see
 * idx_message_get). Returns
 * the count with *list_r (caller frees), -1.
 */
int idx_mailbox_uids(struct idx_account *a, uint32_t mailbox_id, struct idx_uidstate **list_r, size_t *n_r,
    char *err, size_t errlen);

/*
 * Tombstones of a mailbox with modseq > since: calls fn(arg, uid, modseq) in
 * UID order. Returns the count, -1.
 */
int idx_tombstones(struct idx_account *a, uint32_t mailbox_id, uint64_t since,
    int (*fn)(void *arg, uint32_t uid, uint64_t modseq), void *arg, char *err, size_t errlen);

/* The cached MIME structure of a message (index/mime.h mime_cache_decode). 1 with a
 * copy in *blob_r (caller frees), 0 none, -1. */
int idx_message_mime(struct idx_account *a, uint64_t id, void **blob_r, size_t *len_r, char *err, size_t errlen);

/*
 * Open the file of message m for reading (tolerating renames by other
 * tools). When the file is found under another name than m's and the
 * index's (renamed by another tool), or not at all, the mailbox is synced
 * first (idx_sync_mailbox: the record takes the new name and its flags, or
 * becomes a tombstone). The caller must not hold the account (no call from
 * an idx_message_each callback). Returns 1 with *fd_r (caller closes),
 * 2 with *fd_r when the record was brought up to date (re-read it for the
 * current flags), 0 when the file is gone, -1.
 */
int idx_message_open(struct idx_account *a, const struct idx_message *m, int *fd_r, char *err, size_t errlen);

/* ---- changing messages ---- */

enum idx_store_mode { IDX_STORE_SET, IDX_STORE_ADD, IDX_STORE_REMOVE };

/*
 * Change flags and keywords of messages uids[0..n) of a mailbox (all
 * with one new modseq). Messages whose modseq is > unchangedsince (when
 * non-zero) are not changed and their UIDs are written to failed_r (caller
 * provides room for n; may be NULL when unchangedsince is 0), counted in
 * *nfailed_r. Keywords not yet in the mailbox's list are added to it.
 * UIDs not present are skipped; messages whose flags and keywords would
 * not change are not counted and get no new modseq. The keyword
 * "$Forwarded" (any case) is the IDX_FORWARDED flag. *modseq_r (may be
 * NULL) is the new modseq, 0 when nothing changed.
 * Returns the number changed, IDX_REFUSED (invalid keyword or flags, no
 * such mailbox), -1.
 */
int idx_store(struct idx_account *a, uint32_t mailbox_id, const uint32_t *uids, size_t n, enum idx_store_mode mode,
    uint32_t flags, const char *const *keywords, size_t nkeywords, uint64_t unchangedsince,
    uint32_t *failed_r, size_t *nfailed_r, uint64_t *modseq_r, char *err, size_t errlen);

/*
 * Expunge messages uids[0..n) of a mailbox, with or without \Deleted (the
 * caller filters for UID EXPUNGE); uids == NULL: every message with
 * \Deleted. Files removed first, then records become tombstones. The
 * expunged UIDs are written to expunged_r (may be NULL): room for n, or
 * when uids is NULL room for n when n > 0 (at most n are expunged; call
 * again for more) else for the mailbox's total.
 * Returns the number expunged, IDX_REFUSED (no such mailbox), -1.
 */
int idx_expunge(struct idx_account *a, uint32_t mailbox_id, const uint32_t *uids, size_t n,
    uint32_t *expunged_r, char *err, size_t errlen);

/*
 * Copy (hard links) or move messages uids[0..n) to another mailbox. New
 * UIDs, in order, go to newuids_r (room for n). For a move the sources get
 * tombstones; moving out of the account's rejects mailbox clears is-reject
 * and records the origin. Quota applies to copies. A move keeps the
 * message id (and MIME cache); a copy gets a new id. Files: a copy is a
 * hard link, a move a rename; a name already taken in the target gets a
 * new unique base. Messages whose file vanished are skipped (the sync
 * tombstones them). Returns the number copied/moved, IDX_REFUSED with
 * *error_r (may be NULL) IDX_E_OVERQUOTA or IDX_E_NOMAILBOX, -1.
 */
int idx_copy(struct idx_account *a, uint32_t from_mb, const uint32_t *uids, size_t n, uint32_t to_mb,
    uint32_t *newuids_r, int *error_r, char *err, size_t errlen);
int idx_move(struct idx_account *a, uint32_t from_mb, const uint32_t *uids, size_t n, uint32_t to_mb,
    uint32_t *newuids_r, char *err, size_t errlen);

/* ---- Maildir sync ---- */

struct idx_sync_stats {
	uint64_t added;   /* files the index did not know: adopted with new UIDs */
	uint64_t flagged; /* files renamed by another tool: flags updated */
	uint64_t removed; /* records whose file is gone: tombstoned */
	uint64_t mailboxes_added; /* folders without a mailbox record */
};

/* Compare one mailbox's folder with its records and repair the index
 * (st may be NULL). A missing folder is recreated (records tombstoned).
 * Returns 1, -1 (also for an unknown mailbox). */
int idx_sync_mailbox(struct idx_account *a, uint32_t mailbox_id, struct idx_sync_stats *st, char *err, size_t errlen);
/* The same, but returns 1 at once (st zeroed) when the folder's directories
 * are unchanged since this handle's last complete sync of the mailbox found
 * them equal to the index (inode and ctime of the folder, new/ and cur/). */
int idx_sync_mailbox_changed(struct idx_account *a, uint32_t mailbox_id, struct idx_sync_stats *st, char *err,
    size_t errlen);
/*
 * Check the names of files that changed in a mailbox's folder (entries of
 * new/ and cur/ as "new/<name>" or "cur/<name>", e.g. from inotify) against
 * the index; only when one disagrees (a file the index does not have under
 * that name, or a record whose file is gone) run idx_sync_mailbox. Our own
 * deliveries, flag changes and expunges agree, so this costs a lookup per
 * name instead of a scan of the folder. *synced_r (may be NULL) tells
 * whether the complete sync ran.
 * watched_since_ms (CLOCK_MONOTONIC ms, or -1): the caller has seen every
 * change of new/ and cur/ since then and will pass its names too. When the
 * folder's stamp (see idx_sync_mailbox_changed) was taken after that and
 * everything agrees, the stamp moves to the folder's current state, so the
 * next SELECT skips its rescan although our own deliveries changed the
 * folder. Returns 1, -1.
 */
int idx_sync_names(struct idx_account *a, uint32_t mailbox_id, const char *const *names, size_t n,
    int64_t watched_since_ms, bool *synced_r, struct idx_sync_stats *st, char *err, size_t errlen);
/*
 * Confirm without changing anything that a mailbox's folder holds exactly
 * the files its records name, streaming the directories (memory does not
 * grow with the folder), and if so store the folder's stamp so the next
 * SELECT (also after a restart) skips its scan. For tools that just wrote a
 * large mailbox (import). 1 confirmed and stamped, 0 not (a difference, or
 * the folder changed too recently to keep a stamp), -1 error.
 */
int idx_sync_confirm(struct idx_account *a, uint32_t mailbox_id, char *err, size_t errlen);
/* All folders, also ones created by other tools. 1, -1. */
int idx_sync_all(struct idx_account *a, struct idx_sync_stats *st, char *err, size_t errlen);

/* ---- consistency ---- */

/*
 * Check every invariant (counts, UIDNEXT above every UID, UIDVALIDITY below
 * the account's next, sizes equal file sizes, every live record has its file
 * and every file a record, thread ids valid, quota_used). Each problem is
 * passed to report(arg, text). Returns the number of problems (0 clean), -1.
 */
int idx_check(struct idx_account *a, void (*report)(void *arg, const char *problem), void *arg,
    char *err, size_t errlen);

/* ---- change notification ---- */

enum idx_change_kind {
	IDX_CH_ADD,            /* message added: mailbox, uid, modseq, flags */
	IDX_CH_REMOVE,         /* message expunged: mailbox, uid, modseq */
	IDX_CH_FLAGS,          /* flags/keywords changed: mailbox, uid, modseq, flags */
	IDX_CH_MAILBOX_ADD,    /* mailbox, name */
	IDX_CH_MAILBOX_REMOVE, /* mailbox, name */
	IDX_CH_MAILBOX_RENAME, /* mailbox, name (new), oldname */
	IDX_CH_MAILBOX_COUNTS, /* mailbox: counts changed */
	IDX_CH_MAILBOX_KEYWORDS,/* mailbox: its keyword list grew */
	/* mailbox: its UIDVALIDITY changed (reassignuids, bumpuidvalidity); UIDs
	 * seen before mean nothing now: a session with it selected must end */
	IDX_CH_MAILBOX_UIDVALIDITY,
};

struct idx_change {
	enum idx_change_kind kind;
	uint32_t mailbox_id;
	uint32_t uid;
	uint64_t modseq;
	uint32_t flags;
	char *name;    /* mailbox changes; owned by the change */
	char *oldname;
};

/*
 * Listeners get every change made through this account handle (IMAP
 * sessions, IDLE, webmail). notify is called from the writing thread after
 * the commit, without the account lock: it must only signal (e.g. activate
 * a libevent event) and never block. The listener then drains its queue
 * from its own thread. A queue that grows past IDX_LISTENER_QUEUE_MAX is
 * dropped and marked overflowed: the listener must resynchronize fully;
 * nothing is queued until it drains. notify (may be NULL) is called with
 * the listener list locked: it must not call idx_listen/idx_unlisten.
 * Changes of one operation arrive together, in commit order.
 */
#define IDX_LISTENER_QUEUE_MAX 100000
struct idx_listener;
struct idx_listener *idx_listen(struct idx_account *a, void (*notify)(void *arg), void *arg);
void idx_unlisten(struct idx_listener **lp);
/*
 * Take all queued changes: *changes_r (free with idx_changes_free) and *n_r;
 * *overflow_r set when changes were lost. Returns n.
 */
size_t idx_listener_drain(struct idx_listener *l, struct idx_change **changes_r, size_t *n_r, bool *overflow_r);
void idx_changes_free(struct idx_change *changes, size_t n);

/* Flags <-> Maildir letters. */
unsigned idx_flags_to_maildir(uint32_t flags);
uint32_t idx_flags_from_maildir(unsigned mflags);

#endif
