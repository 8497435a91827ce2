/*
 * index internals shared by the files of index/: the account handle, key
 * builders, record encoding (rec.c), transactions and error helpers
 * (account.c), the change queue (notify.c), threading (thread.c).
 * Nothing here is part of the public contract; tests may use it.
 */
#ifndef MOX_INDEX_PRIVATE_H
#define MOX_INDEX_PRIVATE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <tcutil.h>
#include <tcbdb.h>

#include "index/index.h"
#include "index/mime.h"
#include "maildir/maildir.h"

#define IDX_SCHEMA 2
#define IDX_REC_VERSION 1
/* Longest ancestor list we keep (the root stays first, the nearest last). */
#define IDX_PARENTS_MAX 64
/* Unknown referenced Message-IDs we remember per message ('R' keys). */
#define IDX_REFS_MAX 20
/* Longest normalized Message-ID we index. */
#define IDX_MSGID_MAX 998
/* Messages re-parented at most when a referenced message arrives. */
#define IDX_REPARENT_MAX 1000
/* Bytes of a base subject in its 'J' key (longer ones are cut at a UTF-8
 * character boundary; a match still compares the whole subject). */
#define IDX_SUBJECT_KEY_MAX 200
/* A reply without a known parent joins by subject only a message received
 * at most this long before it (thread.c says why 4 weeks). */
#define IDX_SUBJECT_WINDOW ((int64_t)28 * 24 * 3600)
/* 'J' keys of one base subject a subject match reads, newest first. */
#define IDX_SUBJECT_SCAN 16
#define IDX_PATH_MAX 4096

/* Record types (first key byte), index/SCHEMA.md. */
#define K_ACCOUNT 'A'
#define K_MAILBOX 'B'
#define K_NAME 'N'
#define K_MSG 'U'
#define K_ID 'M'
#define K_CACHE 'C'
#define K_TOMB 'X'
#define K_FILE 'F'
#define K_MSGID 'I'
#define K_THREAD 'T'
#define K_STAMP 'S' /* S mbid:u32 -> folder stamp (sync.c): the folder matched the index */
#define K_REF 'R' /* R message-id 0x00 msgid:u64 -> u8 direct: unresolved references */
#define K_SUBJECT 'J' /* J base-subject 0x00 msgid:u64 -> empty: messages by base subject (schema 2) */
#define K_WAL 'W'     /* W -> seq:u64: the last delivery log entry applied (wal.c) */

struct acct_rec {
	uint64_t schema;
	uint64_t next_uidvalidity;
	uint64_t highest_modseq;
	uint64_t next_msgid;
	uint64_t next_mbid;
	uint64_t quota_used;
	void *secrets;
	size_t secrets_len;
};

struct idx_account {
	pthread_mutex_t mu; /* serializes every call on the handle */
	TCBDB *db;
	char *dir, *maildir, *dbpath;
	char host[256];
	uint64_t quota;
	bool no_fsync;
	bool no_log; /* idx_options.no_log */
	int syncfd; /* index.tcb, for the fdatasync that makes a commit durable */
	bool in_tx;
	bool rec_dirty;     /* rec changed inside the transaction */
	uint64_t tx_writes; /* db_put/db_out calls inside the transaction */
	uint64_t op_modseq; /* modseq of the running operation, 0 none yet */
	struct acct_rec rec;
	/* Changes of the running operation, handed to listeners after commit. */
	struct idx_change *pend;
	size_t npend, cappend;
	/* Listeners; lmu is taken after mu, never before. */
	pthread_mutex_t lmu;
	struct idx_listener *listeners;
	uint64_t name_counter;
	/*
	 * Durability of commits whose fdatasync was deferred (idx_add_nosync,
	 * idx_durable_wait). committed and synced count writing commits; dmu
	 * guards synced and sync_failed, committed is written under mu and dmu;
	 * the deferred fdatasync runs under mu (no transaction open).
	 */
	pthread_mutex_t dmu;
	uint64_t committed;
	uint64_t synced;
	bool sync_failed; /* an fdatasync of the index failed: no commit is durable any more */
	bool defer_sync;  /* op_end leaves the fdatasync to idx_durable_wait */
	/* Folders known to match the index (sync.c): skip a SELECT's rescan. */
	struct sync_stamp *stamps;
	size_t nstamps;
	/* The delivery log (wal.c); NULL without fsync (tests, imports). */
	struct idx_wal *wal;
	uint64_t wal_applied, wal_restored, wal_dropped; /* what the replay at open did */
	char wal_error[256]; /* why the open left the account without a log ("" none) */
	uint64_t tcwal_cut;  /* bytes of a torn entry cut from index.tcb.wal at open */
	bool wal_test_exit; /* tests: _exit(0) right after the log's fdatasync (a crash) */
};

/*
 * State of a mailbox's folder (the folder directory, new/ and cur/: inode
 * and ctime) when a complete sync found it equal to the index. Any entry
 * created, removed or renamed in them, and a rename of the folder, moves a
 * ctime (which, unlike mtime, no tool can set back).
 */
struct sync_stamp {
	uint32_t mbid;
	uint64_t ino[3];
	int64_t sec[3], nsec[3];
	int64_t taken_ms; /* CLOCK_MONOTONIC when taken (idx_sync_names' refresh rule) */
};

/* ---- rec.c: keys and records ---- */

void be32_put(uint8_t *p, uint32_t v);
void be64_put(uint8_t *p, uint64_t v);
uint32_t be32_get(const uint8_t *p);
uint64_t be64_get(const uint8_t *p);

/* Fixed-size keys; return the key length. k needs 17 bytes. */
size_t key_mb(uint8_t *k, uint32_t mbid);                         /* B */
size_t key_mbuid(uint8_t *k, char type, uint32_t mbid, uint32_t uid); /* U, X */
size_t key_id(uint8_t *k, char type, uint64_t id);                /* M, C */
size_t key_thread(uint8_t *k, uint64_t tid, uint64_t id);        /* T (id 0: prefix of 9) */
/* Variable keys, built into x (cleared first). */
void key_name(TCXSTR *x, const char *name);                       /* N */
void key_file(TCXSTR *x, uint32_t mbid, const char *base, size_t len); /* F */
/* I / R: message-id 0x00 [msgid]; with_id false gives the range prefix. */
void key_msgid(TCXSTR *x, char type, const char *msgid, uint64_t id, bool with_id);

void rec_account_encode(const struct acct_rec *r, TCXSTR *x);
int rec_account_decode(const void *p, size_t len, struct acct_rec *r_r);
void rec_account_clear(struct acct_rec *r);
void rec_mailbox_encode(const struct idx_mailbox *mb, TCXSTR *x);
/* Fills mb_r (id set to mbid); 1, or -1 (corrupt; mb_r cleared). */
int rec_mailbox_decode(const void *p, size_t len, uint32_t mbid, struct idx_mailbox *mb_r);
void rec_message_encode(const struct idx_message *m, TCXSTR *x);
int rec_message_decode(const void *p, size_t len, uint32_t mbid, uint32_t uid, struct idx_message *m_r);
/* Only id, modseq, createseq, flags and keywords (the rest of m_r zero; mailbox_id
 * and uid set): 1, or -1 (corrupt leading fields; m_r cleared). */
int rec_message_decode_flags(const void *p, size_t len, uint32_t mbid, uint32_t uid, struct idx_message *m_r);
/* Only the leading modseq and flags of a message record (the SELECT scan):
 * 1, or -1 when those fields are corrupt (the rest is not checked). */
int rec_message_decode_state(const void *p, size_t len, uint32_t *flags_r, uint64_t *modseq_r);
/* Deep copies. */
void idx_message_copy(struct idx_message *dst, const struct idx_message *src);
void idx_mailbox_copy(struct idx_mailbox *dst, const struct idx_mailbox *src);

/* ---- account.c: errors, db access, transactions ---- */

void idx_seterr(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Fill err with "<what>: <index path>: <tc message>"; returns -1. */
int idx_dberr(struct idx_account *a, char *err, size_t errlen, const char *what);
void *idx_xmalloc(size_t n);
void *idx_xrealloc(void *p, size_t n);
char *idx_xstrdup(const char *s);
/*
 * Before Tokyo Cabinet opens dbpath: cut a torn last entry from its
 * write-ahead log (dbpath.wal), left by a process killed while writing it.
 * Only when no other process and no handle of this one has the file open.
 * *cut_r: bytes cut (0: nothing to mend). 1 ok, -1 error (err set).
 */
int idx_tc_wal_mend(const char *dbpath, uint64_t *cut_r, char *err, size_t errlen);

/* get: 1 with *val_r (tcfree) and *len_r, 0 absent, -1. */
int db_get(struct idx_account *a, const void *k, size_t klen, void **val_r, size_t *len_r, char *err,
    size_t errlen);
int db_put(struct idx_account *a, const void *k, size_t klen, const void *v, size_t vlen, char *err,
    size_t errlen);
/* out: 1 removed, 0 absent, -1. */
int db_out(struct idx_account *a, const void *k, size_t klen, char *err, size_t errlen);

/* Lock the handle and begin a transaction (1, -1 unlocked again). */
int op_begin(struct idx_account *a, char *err, size_t errlen);
/*
 * End the operation started by op_begin: r >= 0 commits (a commit failure
 * turns r into -1), r < 0 aborts. Writes the account record when changed.
 * Does not unlock: op_unlock does, after which the changes go to listeners.
 * Returns r.
 */
int op_end(struct idx_account *a, int r, char *err, size_t errlen);
void op_unlock(struct idx_account *a);
/*
 * fdatasync the index: the lock held and no transaction open (Tokyo
 * Cabinet's own log is not synced, so half a transaction's pages must never
 * be flushed). Commits up to target are then durable. A failure is final for
 * the handle (sync_failed): the kernel reports a lost writeback once, so a
 * later fdatasync could succeed without those pages. 1, -1 (err).
 */
int index_sync_locked(struct idx_account *a, uint64_t target, char *err, size_t errlen);
/* The modseq of the running operation (taken from the account on first use). */
uint64_t op_modseq(struct idx_account *a);

/*
 * Schema upgrades (index/SCHEMA.md "Upgrades"). A step takes an index at
 * schema `from` to from + 1. It runs at open, inside the one transaction of
 * the whole upgrade, with the handle locked and a->rec loaded (it may change
 * a->rec and set a->rec_dirty; the schema number is set by the caller). It
 * returns 1, or -1 with err, and then nothing of the upgrade stays.
 */
struct idx_upgrade {
	uint64_t from;
	const char *what; /* a few words for the error text */
	int (*run)(struct idx_account *a, char *err, size_t errlen);
};
/*
 * idx_account_open with an upgrade table: steps[i].from must be i + 1 and the
 * current schema is nsteps + 1 (a new account is created at it).
 * idx_account_open passes the real table (IDX_SCHEMA - 1 steps); tests pass
 * their own. With upgrade false an older index is left as it is and the open
 * fails with "needs upgrade" in err. Returns as idx_account_open.
 */
int idx_account_open_upgrades(const char *dir, const struct idx_options *opts, const struct idx_upgrade *steps,
    size_t nsteps, bool upgrade, struct idx_account **acct_r, char *err, size_t errlen);

/* Folder directory of a mailbox into buf. 1, -1. */
int idx_folder_path(struct idx_account *a, const char *folder, char *buf, size_t size, char *err, size_t errlen);

/* mailbox.c: read/write a mailbox record. get: 1, 0 absent, -1 (corrupt too). */
int mb_load(struct idx_account *a, uint32_t mbid, struct idx_mailbox *mb_r, char *err, size_t errlen);
int mb_store(struct idx_account *a, const struct idx_mailbox *mb, char *err, size_t errlen);
int mb_lookup(struct idx_account *a, const char *canon, uint32_t *mbid_r, char *err, size_t errlen);
/* Add keyword to mb's list unless present (case-insensitive). true when added. */
bool mb_keyword_add(struct idx_mailbox *mb, const char *kw);
/* Create a mailbox record + folder, with parents (inside a transaction). */
int mb_create_locked(struct idx_account *a, const char *canon, const char *folder_or_null, uint32_t special_use,
    bool subscribe, uint32_t *id_r, char *err, size_t errlen);

void counts_apply(struct idx_counts *c, uint32_t flags, uint64_t size, int sign);

/* message.c helpers shared with sync.c and mailbox.c. */
/* Load the live message (mbid, uid): 1, 0 absent, -1 (corrupt too). */
int msg_load(struct idx_account *a, uint32_t mbid, uint32_t uid, struct idx_message *m_r, char *err, size_t errlen);
int msg_load_id_locked(struct idx_account *a, uint64_t id, struct idx_message *m_r, char *err, size_t errlen);
int msg_store(struct idx_account *a, const struct idx_message *m, char *err, size_t errlen);
/* Write all keys of a new message m (U, M, F, I, J, T, optionally C). */
int msg_insert(struct idx_account *a, const struct idx_message *m, const void *cache, size_t cachelen, char *err,
    size_t errlen);
/* Remove all keys of m; with tomb_modseq != 0 leave a tombstone; keep_id
 * keeps M, C, I, J, T and R (a move re-inserts them). */
int msg_remove(struct idx_account *a, const struct idx_message *m, uint64_t tomb_modseq, bool keep_id, char *err,
    size_t errlen);
/*
 * Maildir names of flags and keywords: every path that builds or reads a
 * file name (add, store, copy, sync, import, export) goes through these.
 * IDX_FORWARDED is written as 'P' and as the letter of the keyword
 * "$Forwarded" in the folder's dovecot-keywords (Dovecot reads only the
 * keyword, mutt and mblaze only 'P'); either one reads as the flag.
 */
#define IDX_KW_FORWARDED "$Forwarded"
/* True for "$Forwarded" in any case (the IDX_FORWARDED flag, never a keyword). */
bool kw_is_forwarded(const char *kw);
/* Maildir flags of flags (returned) and keyword letters (*letters_r) of
 * keywords plus $Forwarded when flagged. assign: keywords without a letter
 * get the next free one (*grew_r, may be NULL, says the table changed: the
 * caller writes it before a name uses the letters); else existing letters
 * only. Keywords that find no letter are left out (index only). */
unsigned msg_name_letters(struct maildir_keywords *kw, uint32_t flags, char *const *keywords, size_t n, bool assign,
    uint32_t *letters_r, bool *grew_r);
/* Index flags of a name's Maildir flags and keyword letters. */
uint32_t msg_name_flags(const struct maildir_keywords *kw, unsigned mflags, uint32_t letters);
/* Keyword of letter 'a' + i if set in letters and known, NULL otherwise and
 * for $Forwarded (the flag). Valid until the table changes. */
const char *msg_name_keyword(const struct maildir_keywords *kw, uint32_t letters, int i);
/* The file name (without "new/"/"cur/") of a stored filename. */
const char *msg_basename(const char *filename);
/* All live (uid, flags, modseq) of a mailbox; corrupt records skipped. Count, -1. */
int msg_uids_locked(struct idx_account *a, uint32_t mbid, struct idx_uidstate **list_r, size_t *n_r);
/* File operations of a copy/move, reverted when the transaction fails. */
struct xfer_undo {
	struct {
		char src[IDX_PATH_MAX + MAILDIR_NAME_BUFSIZE + 8];
		char dst[IDX_PATH_MAX + MAILDIR_NAME_BUFSIZE + 8];
		bool move;
	} *v;
	size_t n;
};
void xfer_undo_add(struct xfer_undo *u, const char *src, const char *dst, bool move);
void xfer_undo_run(struct xfer_undo *u);
void xfer_undo_clear(struct xfer_undo *u);
/* Copy (move false) or move messages inside a running operation (copy.c).
 * Returns the count, -1, or IDX_REFUSED (*error_r says why; may be NULL). */
int msg_transfer_locked(struct idx_account *a, uint32_t from_mb, const uint32_t *uids, size_t n, uint32_t to_mb,
    bool move, uint32_t *newuids_r, int *error_r, struct xfer_undo *u, char *err, size_t errlen);
/* Parse a message file (fd) for the cache and threading; *msg_r NULL on an empty file. */
int msg_parse_fd(int fd, uint64_t size, struct mime_msg **msg_r, char *err, size_t errlen);

/* The delivery log's replay of entry seq: idx_add with the UID each item
 * should get (0: the next one; a UID below the mailbox's UIDNEXT is not
 * given), setting the `W` key to seq in the same transaction, so that a
 * replay cut short and run again does not add the message twice. */
int msg_add_replayed(struct idx_account *a, struct idx_add *items, size_t n, const uint32_t *uids, uint64_t seq,
    char *err, size_t errlen);

/* ---- wal.c: the delivery log (SCHEMA.md "Delivery log") ---- */

/* Size of index.wal; entries start at WAL_DATA (the two header copies are before). */
#define WAL_SIZE (1024 * 1024)
#define WAL_DATA 4096
/* Largest message that goes through the log; larger ones take three flushes. */
#define WAL_MSG_MAX IDX_LOGGED_MAX

/* One target (mailbox) of a logged message, as add_one recorded it. */
struct wal_target {
	uint32_t mbid, uid, flags, destined, prefix_len;
	int32_t received_tz;
	int64_t received;
	bool is_reject;
	const char *name; /* the file's base name (the part before ',' or ':'; maildir_writer_base) */
	const char *const *keywords;
	size_t nkeywords;
};
/* One message file (path, size bytes) and its targets. */
struct wal_msg {
	const char *path;
	uint64_t size;
	const uint8_t *data; /* the file's size bytes, already read; NULL: read from path */
	struct wal_target *t;
	size_t nt;
};
/* A parsed entry, pointing into the buffer it was parsed from. */
struct wal_entry {
	uint64_t seq, arg;
	uint32_t total, content_len, count;
	uint16_t type, ntargets;
	const uint8_t *body;
	size_t body_len;
};
struct wal_target_dec {
	uint32_t mbid, uid, flags, destined, prefix_len;
	int32_t received_tz;
	int64_t received;
	bool is_reject;
	char *name;
	char **keywords;
	size_t nkeywords;
};

uint32_t wal_crc32c(const void *data, size_t n);
/* Pure: the entry at p with salt and seq, 1 (e_r points into p), or 0 none. */
int wal_entry_parse(const uint8_t *p, size_t avail, uint64_t salt, uint64_t seq, struct wal_entry *e_r);
/* Next target of an add entry: 1, -1 corrupt (strings copied; wal_target_clear). */
int wal_target_next(const struct wal_entry *e, size_t *off, struct wal_target_dec *t);
void wal_target_clear(struct wal_target_dec *t);
/* Open (create) index.wal and replay it (idx_account_open, unlocked). 1, -1. */
int wal_open(struct idx_account *a, char *err, size_t errlen);
/* Checkpoint and close (idx_account_close). */
void wal_close(struct idx_account *a);
/* bytes fit behind what is logged / in an empty log (false without a usable log). */
bool wal_room(struct idx_account *a, size_t bytes);
bool wal_fits_empty(struct idx_account *a, size_t bytes);
bool wal_empty(struct idx_account *a);
/*
 * Inside the add's transaction (lock held): write the entries, and
 * fdatasync them (ss_r NULL) or start that fdatasync on the sync pool
 * (*ss_r: the caller waits for it, and calls wal_failed when it failed).
 * 1 with the entries' sequence numbers, 0 no room, -1 (the log is failed).
 */
/* pread until n bytes or end of file (*got_r says how many); -1 with errno on a read error. */
int full_pread(int fd, void *p, size_t n, off_t off, size_t *got_r);
int wal_append(struct idx_account *a, const struct wal_msg *msgs, size_t n, uint64_t *first_r, uint64_t *last_r,
    struct maildir_syncset **ss_r, char *err, size_t errlen);
/* A write or sync of the log failed: no more entries until the account is reopened. */
void wal_failed(struct idx_account *a);
/* Entries first..last will not be applied (their transaction failed). */
void wal_cancel(struct idx_account *a, uint64_t first, uint64_t last);
/* A file linked / a directory changed without a sync: the checkpoint syncs them. */
void wal_note_file(struct idx_account *a, const char *path);
void wal_note_dir(struct idx_account *a, const char *path);
/* Lock held, no transaction open. 1, -1 (the log is failed then). */
int wal_checkpoint_locked(struct idx_account *a, char *err, size_t errlen);

/* thread.c */
/* Assign thread_id/parents/tflags of new message m (id set) from its parsed
 * msg (may be NULL); then write R keys. Called inside the transaction before
 * msg_insert. Adds IDX_SEEN to m->flags for a muted thread. */
int thread_assign(struct idx_account *a, struct idx_message *m, const struct mime_msg *msg, char *err,
    size_t errlen);
/* After m was inserted: re-parent messages waiting for m's Message-ID. */
int thread_resolve(struct idx_account *a, const struct idx_message *m, char *err, size_t errlen);
/*
 * The 'J' key of a message with base subject base and id into x (cleared
 * first): the base cut to IDX_SUBJECT_KEY_MAX bytes, 0x00, id (with_id
 * false: the range prefix of all messages with that base). Returns false,
 * and builds nothing, for an empty base: such messages have no 'J' key.
 */
bool key_subject(TCXSTR *x, const char *base, uint64_t id, bool with_id);

/* notify.c */
void change_push(struct idx_account *a, enum idx_change_kind kind, uint32_t mbid, uint32_t uid, uint64_t modseq,
    uint32_t flags, const char *name, const char *oldname);
void changes_drop(struct idx_account *a);
/* Hand the pending changes to every listener (lmu held by the caller). */
void changes_dispatch(struct idx_account *a);
/* Tests: lower a listener's queue limit. */
void idx_listener_set_limit(struct idx_listener *l, size_t max);

/* sync.c: adopt one file of a folder (used by the sync). */

/* check.c uses only the above. */

#endif
