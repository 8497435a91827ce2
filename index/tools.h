/*
 * index tools: what the data commands (import, export, backup, verifydata
 * and the fix* commands) need beyond the account store API: a pure mbox
 * reader and quoter, batch import from Maildir and mbox, export to both,
 * a consistent copy of an open account, and repairs of UID metadata,
 * message sizes and mailbox counts.
 * Owns nothing across calls except the import/export state it returns.
 * Does not: log, read the config or talk to a server; callers run these on
 * the account's storage thread (daemon) or with the account opened directly
 * (offline commands).
 * Return convention as in index/index.h: < 0 error (err filled), >= 0 ok.
 */
#ifndef MOX_INDEX_TOOLS_H
#define MOX_INDEX_TOOLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "index/index.h"

/* ---- mbox.c: pure mbox reader and writer helpers ---- */

/*
 * Reading is mboxrd: a line starting with "From " separates messages (the
 * empty line before it, which writers add, is not part of the message), and
 * one '>' is removed from every line matching ^>+"From ". An mboxo file
 * (only "From " quoted, as ">From ") reads the same except for body lines
 * that already started with ">From " before quoting, which mboxo cannot
 * tell apart. Bytes before the first "From " line are not a message (the
 * parser counts them in junk). Line endings (LF or CRLF) are passed through.
 */
#define MBOX_FROMLINE_MAX 1000 /* bytes of a "From " line kept for start() */

struct mbox_sink {
	/* A message begins; fromline is the "From " line without its line end. */
	void (*start)(void *arg, const char *fromline, size_t len);
	/* Message bytes, unquoted, in order; chunks are not line-aligned. */
	void (*data)(void *arg, const char *p, size_t n);
	/* The message that began with the last start() is complete. */
	void (*end)(void *arg);
};

struct mbox_parser {
	int state;
	bool in_msg;
	bool at_start;      /* nothing but junk seen yet */
	unsigned gts;       /* '>' counted at the start of the current line */
	size_t nhold;       /* bytes of "From " matched / of the From line held */
	char hold[MBOX_FROMLINE_MAX + 2];
	bool cr_held;       /* a CR at the end of the held From line / blank line */
	int blank;          /* held empty line: 0 none, 1 "\n", 2 "\r\n" */
	uint64_t messages;  /* start() calls */
	uint64_t junk;      /* bytes before the first message */
};

void mbox_parser_init(struct mbox_parser *p);
/* Consume all of in[0..len), calling sink functions. Never fails. */
void mbox_parse(struct mbox_parser *p, const char *in, size_t len, const struct mbox_sink *s, void *arg);
/* End of input: flushes a partial line and ends the last message. */
void mbox_parse_finish(struct mbox_parser *p, const struct mbox_sink *s, void *arg);

/*
 * The time in a "From sender Www Mmm dd hh:mm:ss yyyy" line (asctime, UTC),
 * as unix seconds; 0 when the line holds no such date.
 */
int64_t mbox_fromline_time(const char *line, size_t len);

/*
 * mboxrd quoting for writing a message: CRLF becomes LF and a line matching
 * ^>*"From " gets one more '>'. Streaming: feed chunks, then _finish, which
 * ends an unterminated last line with LF. Output is appended to the
 * caller's buffer through emit.
 */
struct mbox_quoter {
	int state;
	unsigned gts;
	size_t matched;
	bool cr;
	bool any;      /* something written */
	bool lf_last;  /* the last byte written was LF */
};
void mbox_quoter_init(struct mbox_quoter *q);
void mbox_quote(struct mbox_quoter *q, const char *in, size_t len, void (*emit)(void *arg, const char *p, size_t n),
    void *arg);
void mbox_quote_finish(struct mbox_quoter *q, void (*emit)(void *arg, const char *p, size_t n), void *arg);

/* ---- import.c: adding messages from a Maildir or an mbox file ---- */

enum idx_tool_format { IDX_FMT_MAILDIR, IDX_FMT_MBOX };

/* Messages per idx_add (one group commit). Writers hold a 64 KiB buffer each. */
#define IDX_IMPORT_BATCH 256

struct idx_import;

/*
 * Prepare importing from path (a Maildir directory holding cur/ and new/,
 * or an mbox file) into mailbox of an account. Spool files are written in
 * tmpdir (same filesystem as the account). Nothing is read yet.
 * Returns 1 with *imp_r (free with idx_import_free), -1 with err (path
 * unreadable, not a Maildir).
 */
int idx_import_new(struct idx_import **imp_r, enum idx_tool_format fmt, const char *path, const char *mailbox,
    const char *tmpdir, char *err, size_t errlen);

/*
 * Import the next batch (at most max messages, 0: IDX_IMPORT_BATCH) into
 * account a: the mailbox is created when missing; every message is written
 * to a spool file (bare LF and CR become CRLF), then all are added with
 * one idx_add. Memory stays flat: an mbox is streamed.
 * Flags and keywords: from a Maildir, the names' letters (keywords through
 * its dovecot-keywords; 'P' or the "$Forwarded" keyword is $Forwarded);
 * from an mbox, the header fields Status: (R), X-Status: (A F T D) and
 * X-Keywords: (keywords separated by spaces or commas, as Dovecot and mutt
 * write them; invalid ones are skipped). The message bytes are not changed.
 * Returns the number of messages added by this call (> 0), 0 when the
 * source is exhausted, -1 with err (a failed message fails the import).
 */
int idx_import_step(struct idx_import *imp, struct idx_account *a, size_t max, char *err, size_t errlen);

/* Messages added so far. */
uint64_t idx_import_count(const struct idx_import *imp);
void idx_import_free(struct idx_import **impp);

/* ---- export.c ---- */

/*
 * Export mailbox (NULL: every mailbox) of account a to dest.
 * Maildir: dest becomes a Maildir (created; must not hold messages yet):
 * one mailbox is written into dest itself; all mailboxes as Maildir++
 * (INBOX in dest, others in dest/.Name folders). File names keep flags and
 * keyword letters; each folder gets a dovecot-keywords file.
 * mbox: one mailbox is written to the file dest; all mailboxes to
 * dest/<name>.mbox ('/' in names becomes a directory level). Quoting is
 * mboxrd, lines end in LF, and each message is followed by an empty line,
 * so importing the export gives byte-identical message files back. For
 * that reason no header is added: flags and keywords are not written as
 * Status:, X-Status: or X-Keywords: fields. A message imported from an mbox
 * keeps the fields it came with (its bytes are unchanged), so they carry
 * its flags and keywords of that time through export and import again.
 * progress (may be NULL) is called after every 1000 messages.
 * Returns the number of messages exported (>= 0), 0 also when mailbox does
 * not exist (*missing_r set, may be NULL), -1 with err.
 */
int idx_export(struct idx_account *a, enum idx_tool_format fmt, const char *mailbox, const char *dest,
    void (*progress)(void *arg, uint64_t n), void *arg, bool *missing_r, char *err, size_t errlen);

/* ---- backup.c ---- */

struct idx_backup_stats {
	uint64_t linked;  /* message files hard-linked */
	uint64_t copied;  /* copied because link() failed */
};

/*
 * Consistent copy of account a into the new directory dest: the index is
 * copied by Tokyo Cabinet under the account lock (valid while the account
 * is in use), then the Maildir tree is reproduced with hard links (copies
 * where linking fails). Must run on the thread that owns the account's
 * writes, so no add happens between the two steps. Returns 1, -1 with err.
 */
int idx_backup(struct idx_account *a, const char *dest, struct idx_backup_stats *st, char *err, size_t errlen);

/* ---- fix.c: repairs; each reports what it changed through report ---- */

typedef void (*idx_report_fn)(void *arg, const char *text);

/* UIDNEXT above every UID (also of tombstones); the account's next
 * UIDVALIDITY above every mailbox's. Returns the number of fixes, -1. */
int idx_fix_uidmeta(struct idx_account *a, idx_report_fn report, void *arg, char *err, size_t errlen);

/* Record sizes equal to file sizes (counts and quota follow); the MIME
 * cache of a message whose size was wrong is rebuilt. Returns fixes, -1. */
int idx_fix_msgsize(struct idx_account *a, idx_report_fn report, void *arg, char *err, size_t errlen);

/* New UIDs 1..n in UID order and a new UIDVALIDITY for mailbox (NULL:
 * all); tombstones are dropped. Returns the number of mailboxes, 0 when
 * mailbox does not exist, -1. */
int idx_reassign_uids(struct idx_account *a, const char *mailbox, idx_report_fn report, void *arg, char *err,
    size_t errlen);

/* A new UIDVALIDITY for mailbox (NULL: all). Returns mailboxes changed,
 * 0 when mailbox does not exist, -1. */
int idx_bump_uidvalidity(struct idx_account *a, const char *mailbox, idx_report_fn report, void *arg, char *err,
    size_t errlen);

/* Recount every mailbox's counts and the account's quota use from the
 * message records. Returns the number of fixes, -1. */
int idx_recalculate_counts(struct idx_account *a, idx_report_fn report, void *arg, char *err, size_t errlen);

#endif
