/*
 * maildir: message files only. Unique file names, tmp/ -> new/ or cur/,
 * flags in the ":2," info, keyword letters (dovecot-keywords), durable
 * delivery designed for group commit, Maildir++ folders, scanning a folder
 * and opening a message. Knows nothing of UIDs, accounts or the network.
 * Never logs: every fallible function fills err (errlen bytes, may be 0)
 * with a message that names the path and errno text, for the caller to log.
 * Return convention: < 0 error, 0 nothing/not found, > 0 ok or a count.
 */
#ifndef MOX_MAILDIR_H
#define MOX_MAILDIR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Longest file or directory name we create or accept (one path component). */
#define MAILDIR_NAME_MAX 255
/* A buffer of this size holds any name/path component we return. */
#define MAILDIR_NAME_BUFSIZE (MAILDIR_NAME_MAX + 1)

/* Standard flags of the ":2," info, as bits. */
enum maildir_flag {
	MAILDIR_FLAG_DRAFT = 1 << 0,   /* 'D' */
	MAILDIR_FLAG_FLAGGED = 1 << 1, /* 'F' */
	MAILDIR_FLAG_PASSED = 1 << 2,  /* 'P' (forwarded) */
	MAILDIR_FLAG_REPLIED = 1 << 3, /* 'R' (answered) */
	MAILDIR_FLAG_SEEN = 1 << 4,    /* 'S' */
	MAILDIR_FLAG_TRASHED = 1 << 5, /* 'T' (deleted) */
};
#define MAILDIR_FLAGS_ALL 0x3fu
/* Keyword letters 'a'..'z' are bits 0..25 of a uint32_t mask. */
#define MAILDIR_KEYWORDS_ALL 0x3ffffffu

enum maildir_subdir {
	MAILDIR_NEW = 0,
	MAILDIR_CUR = 1,
};

/* ------------------------------------------------------------------ */
/* name.c: pure functions over file names.                             */

/*
 * A parsed file name:
 *   <base>[,<field>...][:<info>]
 * base is everything before the first ',' or ':' and identifies the message
 * (other tools add fields such as ",U=" and change flags, never the base).
 * All pointers are slices into the parsed string and stay valid as long as
 * that string does; nothing here is allocated.
 */
struct maildir_name {
	const char *base;
	size_t base_len;
	/* All ",X=..." fields verbatim, including their leading ','
	 * (e.g. ",S=120,W=123,U=5"); empty when there are none. */
	const char *fields;
	size_t fields_len;
	bool has_size; /* ",S=<n>" present */
	uint64_t size;
	bool has_vsize; /* ",W=<n>" present */
	uint64_t vsize;
	/* ":2,<flags>" present. */
	bool has_info;
	/* The flag characters after ":2," verbatim (unsorted, may repeat). */
	const char *flagstr;
	size_t flagstr_len;
	/* Text after ':' when it is not "2,..." (e.g. ":1,foo"); a flag
	 * change replaces it with ":2,<flags>". */
	const char *other_info;
	size_t other_info_len;
	unsigned flags;    /* MAILDIR_FLAG_* */
	uint32_t keywords; /* bit i = letter 'a' + i */
	bool has_unknown;  /* flagstr holds characters other than DFPRST a-z */
};

/*
 * Parse the file name name[0..len). Rejects (returns -1 with err set):
 * an empty name, one starting with '.', longer than MAILDIR_NAME_MAX, one
 * containing '/' or NUL, an empty base, and an S= or W= field whose value
 * is not 1-20 decimal digits fitting in 63 bits. The first S= and W= count;
 * every field (also unknown ones) is kept verbatim in n_r->fields.
 * Returns 1 on success.
 */
int maildir_name_parse(const char *name, size_t len, struct maildir_name *n_r,
		       char *err, size_t errlen);

/*
 * Write the unknown flag characters of n (those in flagstr other than
 * D F P R S T a-z), deduplicated, in ASCII order, NUL-terminated into buf.
 * Returns their count (0 when none), -1 when buf is too small.
 */
int maildir_name_unknown_flags(const struct maildir_name *n, char *buf, size_t size);

/*
 * Format the flag characters for flags/keywords plus the extra characters in
 * unknown (may be NULL), deduplicated and in ASCII order (D F P R S T, then
 * a-z; unknown characters are sorted in among them by byte value).
 * Writes a NUL-terminated string; returns its length, -1 if buf is too small.
 */
int maildir_flags_format(char *buf, size_t size, unsigned flags, uint32_t keywords,
			 const char *unknown);

/*
 * Build a new unique base name "<secs>.M<usec>P<pid>Q<counter>.<host>".
 * In host, '/' is written as "\057", ':' as "\072" and ',' as "\054" (so the
 * base never contains a separator), as the Maildir specification does.
 * host must be non-empty; secs, usec and pid must be >= 0.
 * Returns the length written (NUL-terminated), -1 if it does not fit in
 * size or exceeds 200 bytes (which leaves room for fields and flags).
 */
int maildir_name_new_base(char *buf, size_t size, int64_t secs, long usec, long pid,
			  uint64_t counter, const char *host, char *err, size_t errlen);

/*
 * Rebuild the name n with a new flag set: base and all fields verbatim,
 * then ":2," and the flags for flags/keywords plus n's unknown flag
 * characters. Returns the length written (NUL-terminated), -1 if it does not
 * fit in size or would exceed MAILDIR_NAME_MAX.
 */
int maildir_name_with_flags(char *buf, size_t size, const struct maildir_name *n,
			    unsigned flags, uint32_t keywords, char *err, size_t errlen);

/*
 * Build the name of a newly delivered file: "<base>,S=<size>,W=<vsize>"
 * and, when with_info, ":2,<flags>". Returns the length, -1 if too long.
 */
int maildir_name_build(char *buf, size_t size, const char *base, uint64_t msgsize,
		       uint64_t vsize, bool with_info, unsigned flags, uint32_t keywords,
		       char *err, size_t errlen);

/* ------------------------------------------------------------------ */
/* keywords.c: the dovecot-keywords file in the Maildir root.          */

#define MAILDIR_KEYWORDS_FILE "dovecot-keywords"
#define MAILDIR_KEYWORD_MAX 200 /* longest keyword we accept, bytes */

/*
 * Keyword table: slot i (0..25) is letter 'a' + i; NULL when free. Embedded
 * by the caller: _init/_clear. Lines are "<index> <keyword>\n".
 */
struct maildir_keywords {
	char *names[26];
};

/* Error returned by maildir_keywords_assign when all 26 letters are taken. */
#define MAILDIR_KEYWORDS_FULL (-2)

void maildir_keywords_init(struct maildir_keywords *kw);
void maildir_keywords_clear(struct maildir_keywords *kw);

/*
 * Read maildir/dovecot-keywords into kw (cleared first). A missing file is
 * an empty table. Junk lines (bad index, index > 25, invalid keyword, no
 * newline at end is fine) are skipped; for a repeated index the first line
 * wins; a keyword listed under two indexes keeps both slots (so no letter
 * in use by files is ever reassigned) and lookups return the first.
 * Returns the number of keywords (>= 0), -1 on a read error.
 */
int maildir_keywords_read(struct maildir_keywords *kw, const char *maildir,
			  char *err, size_t errlen);

/* True if s is acceptable as a keyword: 1..MAILDIR_KEYWORD_MAX bytes of IMAP
 * atom characters (printable ASCII except ( ) { space % * " \ ]). */
bool maildir_keyword_valid(const char *s);

/*
 * Letter ('a'..'z', > 0) of keyword, compared ASCII case-insensitively;
 * 0 when not in the table.
 */
int maildir_keywords_lookup(const struct maildir_keywords *kw, const char *keyword);

/* Name for letter 'a'..'z' (original spelling), NULL when unassigned or not
 * a letter. Valid until the table changes. */
const char *maildir_keywords_name(const struct maildir_keywords *kw, int letter);

/*
 * Letter of keyword, assigning the first free letter when it is new (then
 * *added_r is set true, else false; added_r may be NULL). The caller writes
 * the file before any file name uses a new letter.
 * Returns the letter (> 0); MAILDIR_KEYWORDS_FULL when all 26 are taken;
 * -1 for an invalid keyword.
 */
int maildir_keywords_assign(struct maildir_keywords *kw, const char *keyword, bool *added_r,
			    char *err, size_t errlen);

/*
 * Write kw to maildir/dovecot-keywords atomically: a temporary file in the
 * same directory, fsync, rename, fsync of the directory. Returns 1, or -1.
 */
int maildir_keywords_write(const struct maildir_keywords *kw, const char *maildir,
			   char *err, size_t errlen);

/* ------------------------------------------------------------------ */
/* folder.c: Maildir++ folders.                                       */

/*
 * Mailbox name <-> directory name. INBOX (any case, whole name only) is the
 * Maildir root, directory name "". Any other name is '.' followed by its
 * levels joined with '.': "Sent" -> ".Sent", "Lists/mox" -> ".Lists.mox"
 * ('/' is the IMAP hierarchy separator). Inside a level '~' is the escape:
 * '.' -> "~2e", '~' -> "~7e", and every control byte (0x00-0x1f, 0x7f) ->
 * "~" + two lowercase hex digits. Nothing else is escaped: UTF-8, spaces,
 * & * % # stay as they are. Decoding accepts only this canonical form, so
 * both directions are exact inverses. A child of INBOX is ".INBOX.child".
 * Rejected: an empty name, an empty level ("a//b", "/a", "a/"), invalid
 * UTF-8, a directory name over MAILDIR_NAME_MAX bytes; on decode also ""
 * and "." alone, non-canonical escapes, and ".INBOX" (any case), which
 * would collide with the root.
 */

/* Encode mailbox name into buf. Returns 1 (buf may be "" for INBOX), -1. */
int maildir_folder_encode(const char *name, char *buf, size_t size, char *err, size_t errlen);

/* Decode directory name (starting with '.') into the mailbox name; ""
 * decodes to "INBOX". Returns 1, or -1 when it is not a name we produce. */
int maildir_folder_decode(const char *dirname, char *buf, size_t size, char *err,
			  size_t errlen);

/*
 * Create the folder dirname ("" for the root itself) under root: the
 * directory (0700), cur/ new/ tmp/, and for subfolders the empty
 * "maildirfolder" marker file; then fsync root (and the folder).
 * root itself must exist unless dirname is "". Existing parts are kept.
 * Returns 1 when created, 0 when it already existed complete, -1 on error.
 */
int maildir_folder_create(const char *root, const char *dirname, char *err, size_t errlen);

/* One folder found by maildir_folder_list. */
struct maildir_folder_entry {
	char *dirname; /* ".Lists.mox" */
	char *name;    /* "Lists/mox", or NULL when the directory name is not
			* one we produce (other tools' names: caller decides) */
};

struct maildir_folder_list {
	struct maildir_folder_entry *entries;
	size_t count;
};

/*
 * List the subfolders of root: directories whose name starts with '.' (not
 * "." or "..", nor ".." prefixes, which we use while deleting) and that
 * contain cur/ new/ and tmp/. INBOX is not listed. Sorted by dirname.
 * Returns the count (>= 0) and fills *list_r (free with _list_clear), -1.
 */
int maildir_folder_list(const char *root, struct maildir_folder_list *list_r, char *err,
			size_t errlen);
void maildir_folder_list_clear(struct maildir_folder_list *list);

/*
 * Delete folder dirname (never "" the root) with everything in it: it is
 * first renamed to a ".."-prefixed name (so it vanishes from listings
 * atomically), then its files and subdirectories are removed. Children in
 * the hierarchy (".Lists.mox" for ".Lists") are separate directories and
 * are not touched. Returns 1 deleted, 0 not found, -1 on error.
 */
int maildir_folder_delete(const char *root, const char *dirname, char *err, size_t errlen);

/*
 * Rename folder from -> to (both non-empty dirnames) and fsync root.
 * Fails when to exists. Children are not renamed (caller loops).
 * Returns 1 renamed, 0 from not found, -1 on error.
 */
int maildir_folder_rename(const char *root, const char *from, const char *to, char *err,
			  size_t errlen);

/* ------------------------------------------------------------------ */
/* deliver.c: writing, linking, flag renames, opening messages.       */

/*
 * Durable delivery with group commit:
 *   for each message: maildir_writer_open, _write..., _finish(NOSYNC);
 *   maildir_syncfs once (or _finish with fsync, possibly in parallel);
 *   maildir_writer_link into each target folder (one per recipient);
 *   maildir_fsync_dir once per target new/ or cur/ directory;
 *   the caller commits its index; then maildir_writer_remove / _free.
 * A crash leaves at most a linked file the index does not know.
 */
struct maildir_writer;

/*
 * Create a new unique file in directory tmpdir (O_EXCL, mode 0600) named by
 * maildir_name_new_base with the current time, pid, a process-wide atomic
 * counter and host. Returns 1 and *w_r, or -1.
 */
int maildir_writer_open(struct maildir_writer **w_r, const char *tmpdir, const char *host,
			char *err, size_t errlen);

/* Raw mode: bytes are written unchanged (W= then counts bare LFs). Default:
 * normalization, bare LF -> CRLF and bare CR -> CRLF. Set before writing. */
void maildir_writer_set_raw(struct maildir_writer *w, bool raw);

/*
 * Append len bytes. Normalization state carries across calls (a CR ending
 * one chunk and an LF starting the next are one CRLF). Output is buffered.
 * Returns 1, or -1 (the writer is then only good for _free).
 */
int maildir_writer_write(struct maildir_writer *w, const void *data, size_t len, char *err,
			 size_t errlen);

enum maildir_finish_flags {
	MAILDIR_FINISH_NOSYNC = 1 << 0, /* caller syncs the batch (syncfs) */
};

/*
 * Complete the file: a pending CR becomes CRLF, flush, fsync (unless
 * MAILDIR_FINISH_NOSYNC), verify the file size equals the counted size,
 * close. Returns 1, or -1.
 */
int maildir_writer_finish(struct maildir_writer *w, unsigned flags, char *err, size_t errlen);

/* Bytes in the file (the ,S= value). */
uint64_t maildir_writer_size(const struct maildir_writer *w);
/* Size with CRLF line endings (the ,W= value); equals size unless raw. */
uint64_t maildir_writer_vsize(const struct maildir_writer *w);
/* The base name; the tmp file's path. Valid until _free. */
const char *maildir_writer_base(const struct maildir_writer *w);
const char *maildir_writer_path(const struct maildir_writer *w);

/*
 * Sync sets (sync.c): fdatasync of files, fsync of directories or a syncfs,
 * run in parallel on a small process-wide pool of threads while the caller
 * does other work; _wait blocks until every one finished and frees the set.
 * Any thread may own a set; one owner per set.
 */
struct maildir_syncset;
struct maildir_syncset *maildir_syncset_new(void);
/*
 * A set whose syncs run in the caller, in maildir_syncset_wait: for a single
 * sync the pool's two thread handoffs cost more than running it beside the
 * caller's other work saves (a one-message delivery, measured on 2 cores).
 */
struct maildir_syncset *maildir_syncset_new_deferred(void);
void maildir_syncset_file(struct maildir_syncset *s, const char *path); /* fdatasync */
void maildir_syncset_dir(struct maildir_syncset *s, const char *path);  /* fsync */
void maildir_syncset_fs(struct maildir_syncset *s, const char *path);   /* syncfs */
/* 1 all succeeded, -1 (err: the first failure). *sp becomes NULL; NULL set: 1. */
int maildir_syncset_wait(struct maildir_syncset **sp, char *err, size_t errlen);

/*
 * Copy what remains to be read from in to a new file dst (O_EXCL, mode
 * 0600), fsynced when sync. 1, or -1 with dst removed.
 */
int maildir_copy_fd(int in, const char *dst, bool sync, char *err, size_t errlen);

/*
 * The name maildir_writer_link will give w in sub with flags and keyword
 * letters (so an index can record it before the link). 1, -1.
 */
int maildir_writer_name(const struct maildir_writer *w, enum maildir_subdir sub, unsigned flags, uint32_t keywords,
			char *name_r, size_t name_size, char *err, size_t errlen);

enum maildir_link_flags {
	MAILDIR_LINK_FORCE_COPY = 1 << 0, /* copy as if link() failed (tests) */
};

/*
 * Hard-link the finished tmp file into folderdir/new/ (sub MAILDIR_NEW,
 * flags ignored) or folderdir/cur/ with ":2,<flags>", named
 * "<base>,S=<size>,W=<vsize>". If link() fails with EXDEV, EPERM, EMLINK,
 * ENOTSUP or EOPNOTSUPP the file is copied and the copy fsynced. The
 * directory itself is not fsynced (see maildir_fsync_dir). Writes the new
 * name into name_r (may be NULL). Returns 1 linked, 2 copied, -1 error
 * (EEXIST too: the same message is already in that folder).
 */
int maildir_writer_link(struct maildir_writer *w, const char *folderdir, enum maildir_subdir sub,
			unsigned flags, uint32_t keywords, unsigned lflags, char *name_r,
			size_t name_size, char *err, size_t errlen);

/* Unlink the tmp file (after the index commit). Returns 1, 0 if it was
 * already gone, -1. The writer stays valid for the size/base getters. */
int maildir_writer_remove(struct maildir_writer *w, char *err, size_t errlen);

/* Close and, unless removed already, unlink the tmp file (abort), free.
 * Accepts NULL and *w == NULL; sets *w = NULL. */
void maildir_writer_free(struct maildir_writer **w);

/* fsync a directory. Returns 1, or -1. */
int maildir_fsync_dir(const char *path, char *err, size_t errlen);
/* syncfs() the filesystem holding path / fd. Returns 1, or -1. */
int maildir_syncfs(const char *path, char *err, size_t errlen);
int maildir_syncfs_fd(int fd, char *err, size_t errlen);

/*
 * Find a message in folderdir by name (a full file name or just its base):
 * tries new/name and cur/name (cur/ first when name has ":2,"), then
 * (renamed by another tool) searches cur/ and new/ for a file with the same
 * base (part before the first ',' or ':'). Writes the current name into
 * name_r and its place into *sub_r (may be NULL).
 * Returns 1 found, 0 not found, -1 error.
 */
int maildir_msg_find(const char *folderdir, const char *name, enum maildir_subdir *sub_r,
		     char *name_r, size_t name_size, char *err, size_t errlen);

/*
 * Change the flags of message name (found as by maildir_msg_find) by
 * renaming it to cur/<name with new flags>, keeping its fields and unknown
 * flag characters as they are on disk now. Retries when the file is renamed
 * by someone else meanwhile. The directory is not fsynced.
 * Writes the new name into name_r. Returns 1 done (also when nothing had to
 * change), 0 message not found, -1 error.
 */
int maildir_msg_set_flags(const char *folderdir, const char *name, unsigned flags,
			  uint32_t keywords, char *name_r, size_t name_size, char *err,
			  size_t errlen);

/*
 * Open message name for reading (O_RDONLY|O_CLOEXEC), found as by
 * maildir_msg_find; retries when it is renamed between find and open.
 * On 1 *fd_r is the caller's to close and name_r/sub_r (may be NULL) hold
 * where it was found. Returns 1, 0 not found, -1 error.
 */
int maildir_msg_open(const char *folderdir, const char *name, int *fd_r,
		     enum maildir_subdir *sub_r, char *name_r, size_t name_size, char *err,
		     size_t errlen);

/* ------------------------------------------------------------------ */
/* scan.c: list the messages of a folder.                             */

struct maildir_entry {
	enum maildir_subdir subdir;
	const char *filename; /* owned by the scan, valid until _clear */
	bool valid;           /* name parsed; else name is zeroed */
	struct maildir_name name; /* slices into filename */
	uint64_t size; /* S= value; from stat when S= is missing or invalid */
};

struct maildir_scan {
	struct maildir_entry *entries;
	size_t count;
	char *names; /* one arena holding all file names */
	size_t names_len;
	size_t names_cap;
};

/*
 * Read new/ then cur/ of folderdir. Skips dot-files, tmp/, non-regular
 * entries (when the directory reports types) and files that vanish while
 * we stat them. stat() is only called when a name carries no valid S=.
 * A missing new/ or cur/ is an error. Returns the count (>= 0), -1.
 * *scan_r is initialized here; free with maildir_scan_clear.
 */
int maildir_scan(const char *folderdir, struct maildir_scan *scan_r, char *err, size_t errlen);
void maildir_scan_clear(struct maildir_scan *scan);

#endif
