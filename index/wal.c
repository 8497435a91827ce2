/*
 * The delivery log (index.wal, index/SCHEMA.md "Delivery log"): a delivery
 * is durable after one flush.
 *
 * Without it a delivered message needs three flushes before it may be
 * acknowledged, one after the other: its file's data, the directory entry
 * of its link, the index. A flush on the disk costs the same whether it
 * carries 4 KB or 400, so the log carries everything a delivery needs in one
 * write to a file that never changes size (its blocks were written at
 * creation, so fdatasync flushes data only):
 *
 *   transaction open -> records written -> log entries written, their
 *   fdatasync started on the sync pool -> files linked (not synced),
 *   transaction committed (not synced) -> wait for the log's fdatasync -> ack.
 *
 * The index records the last applied entry (`W` key) in the same
 * transaction. A checkpoint later makes the files, their directories and the
 * index durable (one syncfs, or one fdatasync per file on the pool when other
 * processes have much dirty data) and only then marks the log empty. A log
 * sync that fails makes the batch durable the unlogged way instead. Opening the account replays what the last checkpoint did not
 * cover:
 * - an entry after `W` was not committed: it is added again, with the UID
 *   it had (a client may have seen it), from the bytes in the log;
 * - an entry up to `W` was committed: its file is checked byte for byte and
 *   written again when the power loss took its data or its link;
 * - after a reboot the index is not trusted (entries are handled as after
 *   `W`), and a message committed after the last durable state whose file
 *   is broken and which no entry holds is dropped: it was never acknowledged.
 * Operations that give a message another identity (copy, move, renaming
 * INBOX, the UID tools, backup) checkpoint first, so that replay finds every
 * logged message by its mailbox and UID, or by its file name in any mailbox.
 *
 * The log is written from its start after each checkpoint; replay reads
 * entries while each is intact (CRC-32C) and has the next sequence number.
 * Each entry carries the file's random salt: message bytes left over from an
 * older round cannot pass for an entry, whatever a sender put in them.
 */
#define _GNU_SOURCE
#include "index/index_private.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define WAL_NAME "index.wal"
#define WAL_HDR_MAGIC "MOXWAL01"
#define WAL_HDR_SIZE 64
#define WAL_ENT_MAGIC 0x4d58574cu /* "MXWL" */
#define WAL_ENT_HDR 48
/*
 * How a checkpoint makes the linked files durable: one syncfs is one flush
 * for all of them, but it also writes back every other process's dirty data
 * on the filesystem (measured with a build and a test suite writing beside
 * it: logged deliveries fell from ~2,500 to ~270 msg/s). One fdatasync per
 * file on the sync pool does not wait for others, but each is a flush (those
 * in flight together share one). So: syncfs when more than WAL_SYNC_FEW files
 * wait and the system's dirty and writeback pages are not much more than our
 * own (WAL_OTHERS_DIRTY_MAX besides three times the logged bytes: files, log,
 * index), else per file, up to WAL_SYNC_FILES files and WAL_SYNC_DIRS
 * directories (more always take a syncfs).
 */
#define WAL_SYNC_FEW 16
#define WAL_OTHERS_DIRTY_MAX ((uint64_t)8 << 20)
#define WAL_SYNC_FILES 4096
#define WAL_SYNC_DIRS 64

enum { WAL_T_ADD = 1, WAL_T_CANCEL = 2 };

struct idx_wal {
	int fd;
	uint64_t salt;
	uint64_t gen;      /* generation of the newest header copy */
	uint64_t next_seq; /* of the next entry */
	uint64_t head;     /* offset of the next entry; WAL_DATA: empty */
	bool failed;       /* a write or sync failed: no more entries until reopened */
	bool replaying;
	uint8_t boot[16];  /* this boot's id, written into every header */
	int64_t last_ms;   /* CLOCK_MONOTONIC of the last append */
	/* What the next checkpoint syncs besides the index. */
	char **files;
	size_t nfiles;
	char *dirs[WAL_SYNC_DIRS];
	size_t ndirs;
	bool use_syncfs;
	uint64_t pending_bytes; /* logged since the last checkpoint */
	uint64_t hdr_modseq;    /* durable modseq in the newest header */
};

/* ---- CRC-32C (Castagnoli), with the SSE 4.2 instruction where there is one ---- */

static uint32_t crc_table[256];

static void crc_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
		crc_table[i] = c;
	}
}

static uint32_t crc32c_soft(uint32_t crc, const uint8_t *p, size_t n)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;

	pthread_once(&once, crc_init);
	while (n-- > 0)
		crc = crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return crc;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t crc32c_hw(uint32_t crc, const uint8_t *p, size_t n)
{
	uint64_t c = crc;

	for (; n >= 8; n -= 8, p += 8) {
		uint64_t v;
		memcpy(&v, p, 8);
		c = __builtin_ia32_crc32di(c, v);
	}
	crc = (uint32_t)c;
	for (; n > 0; n--)
		crc = __builtin_ia32_crc32qi(crc, *p++);
	return crc;
}
#endif

uint32_t wal_crc32c(const void *data, size_t n)
{
	uint32_t crc = 0xffffffffu;

#if defined(__x86_64__)
	if (__builtin_cpu_supports("sse4.2"))
		return ~crc32c_hw(crc, data, n);
#endif
	return ~crc32c_soft(crc, data, n);
}

/* ---- entry encoding ---- */

static void put16(TCXSTR *x, uint16_t v)
{
	uint8_t b[2] = {(uint8_t)(v >> 8), (uint8_t)v};
	tcxstrcat(x, b, 2);
}

static void put32(TCXSTR *x, uint32_t v)
{
	uint8_t b[4];
	be32_put(b, v);
	tcxstrcat(x, b, 4);
}

static void put64(TCXSTR *x, uint64_t v)
{
	uint8_t b[8];
	be64_put(b, v);
	tcxstrcat(x, b, 8);
}

/* Append one entry of type to x: header, body, padding to 8; fills in the CRC. */
static void ent_finish(TCXSTR *x, size_t start, uint64_t salt)
{
	uint8_t *p;
	size_t total;

	while ((tcxstrsize(x) - start) % 8 != 0)
		tcxstrcat(x, "", 1);
	total = (size_t)tcxstrsize(x) - start;
	p = (uint8_t *)tcxstrptr(x) + start;
	be32_put(p + 24, (uint32_t)total);
	be64_put(p + 8, salt);
	be32_put(p + 4, wal_crc32c(p + 8, total - 8));
}

static size_t ent_begin(TCXSTR *x, uint64_t seq, uint16_t type, uint16_t ntargets, uint32_t content_len,
    uint32_t count, uint64_t arg)
{
	size_t start = (size_t)tcxstrsize(x);

	put32(x, WAL_ENT_MAGIC);
	put32(x, 0);   /* crc */
	put64(x, 0);   /* salt */
	put64(x, seq);
	put32(x, 0);   /* total */
	put16(x, type);
	put16(x, ntargets);
	put32(x, content_len);
	put32(x, count);
	put64(x, arg);
	return start;
}

/*
 * Parse the entry at p (avail bytes): 1 with *e_r (pointing into p), 0 when
 * there is no valid entry with salt and seq there (the end of the log).
 */
int wal_entry_parse(const uint8_t *p, size_t avail, uint64_t salt, uint64_t seq, struct wal_entry *e_r)
{
	uint32_t total;

	memset(e_r, 0, sizeof(*e_r));
	if (avail < WAL_ENT_HDR || be32_get(p) != WAL_ENT_MAGIC || be64_get(p + 8) != salt ||
	    be64_get(p + 16) != seq)
		return 0;
	total = be32_get(p + 24);
	if (total < WAL_ENT_HDR || total % 8 != 0 || total > avail || wal_crc32c(p + 8, total - 8) != be32_get(p + 4))
		return 0;
	e_r->seq = seq;
	e_r->total = total;
	e_r->type = (uint16_t)(p[28] << 8 | p[29]);
	e_r->ntargets = (uint16_t)(p[30] << 8 | p[31]);
	e_r->content_len = be32_get(p + 32);
	e_r->count = be32_get(p + 36);
	e_r->arg = be64_get(p + 40);
	if (e_r->content_len > total - WAL_ENT_HDR)
		return 0;
	e_r->body = p + WAL_ENT_HDR;
	e_r->body_len = total - WAL_ENT_HDR;
	if (e_r->type == WAL_T_ADD && e_r->ntargets == 0)
		return 0;
	return 1;
}

/* Next target of an add entry from *off in e's body: 1, 0 none left, -1 corrupt. Strings are copied. */
int wal_target_next(const struct wal_entry *e, size_t *off, struct wal_target_dec *t)
{
	const uint8_t *b = e->body;
	size_t end = e->body_len; /* targets come first, then the content, then padding */
	size_t o = *off;
	uint16_t namelen, nkw;

	memset(t, 0, sizeof(*t));
	if (o + 36 > end)
		return -1;
	t->mbid = be32_get(b + o);
	t->uid = be32_get(b + o + 4);
	t->flags = be32_get(b + o + 8);
	t->received_tz = (int32_t)be32_get(b + o + 12);
	t->received = (int64_t)be64_get(b + o + 16);
	t->destined = be32_get(b + o + 24);
	t->prefix_len = be32_get(b + o + 28);
	t->is_reject = b[o + 32] != 0;
	nkw = b[o + 33];
	namelen = (uint16_t)(b[o + 34] << 8 | b[o + 35]);
	o += 36;
	if (namelen == 0 || namelen >= IDX_PATH_MAX || o + namelen > end || memchr(b + o, 0, namelen) != NULL)
		return -1;
	t->name = idx_xmalloc(namelen + 1);
	memcpy(t->name, b + o, namelen);
	t->name[namelen] = '\0';
	o += namelen;
	/* A file's base name: the replay looks for it in new/ and cur/ of a folder. */
	if (t->name[0] == '.' || strpbrk(t->name, "/,:") != NULL) {
		free(t->name);
		t->name = NULL;
		return -1;
	}
	t->keywords = idx_xmalloc(sizeof(*t->keywords) * (nkw ? nkw : 1));
	for (uint16_t k = 0; k < nkw; k++) {
		uint16_t kl;
		if (o + 2 > end)
			goto bad;
		kl = (uint16_t)(b[o] << 8 | b[o + 1]);
		o += 2;
		if (kl == 0 || o + kl > end || memchr(b + o, 0, kl) != NULL)
			goto bad;
		t->keywords[k] = idx_xmalloc(kl + 1u);
		memcpy(t->keywords[k], b + o, kl);
		t->keywords[k][kl] = '\0';
		t->nkeywords++;
		o += kl;
	}
	*off = o;
	return 1;
bad:
	wal_target_clear(t);
	return -1;
}

void wal_target_clear(struct wal_target_dec *t)
{
	for (size_t k = 0; k < t->nkeywords; k++)
		free(t->keywords[k]);
	free(t->keywords);
	free(t->name);
	memset(t, 0, sizeof(*t));
}

/* The content of an add entry: it follows the targets. */
static int ent_targets(const struct wal_entry *e, struct wal_target_dec **ts_r, const uint8_t **content_r)
{
	struct wal_target_dec *ts = idx_xmalloc(sizeof(*ts) * e->ntargets);
	size_t off = 0, i;

	for (i = 0; i < e->ntargets; i++)
		if (wal_target_next(e, &off, &ts[i]) <= 0)
			break;
	if (i < e->ntargets || off + e->content_len > e->body_len) {
		for (size_t k = 0; k < i; k++)
			wal_target_clear(&ts[k]);
		free(ts);
		return -1;
	}
	*ts_r = ts;
	*content_r = e->body + off;
	return 1;
}

static void ts_free(struct wal_target_dec *ts, size_t n)
{
	for (size_t i = 0; i < n; i++)
		wal_target_clear(&ts[i]);
	free(ts);
}

/* ---- the file ---- */

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int full_pwrite(int fd, const void *p, size_t n, off_t off)
{
	const uint8_t *b = p;

	while (n > 0) {
		ssize_t w = pwrite(fd, b, n, off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			if (w == 0)
				errno = EIO;
			return -1;
		}
		b += w;
		n -= (size_t)w;
		off += w;
	}
	return 0;
}

int full_pread(int fd, void *p, size_t n, off_t off, size_t *got_r)
{
	uint8_t *b = p;
	size_t got = 0;

	while (got < n) {
		ssize_t r = pread(fd, b + got, n - got, off + (off_t)got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		if (r == 0)
			break;
		got += (size_t)r;
	}
	*got_r = got;
	return 0;
}

/* This boot of the machine (the kernel's random boot id; zeros when unknown). */
static void boot_id(uint8_t out[16])
{
	char buf[64];
	int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
	ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;
	size_t k = 0;

	memset(out, 0, 16);
	if (fd >= 0)
		close(fd);
	for (ssize_t i = 0; i < n && k < 32; i++) {
		int v = buf[i] >= '0' && buf[i] <= '9' ? buf[i] - '0' : buf[i] >= 'a' && buf[i] <= 'f' ? buf[i] - 'a' + 10 : -1;
		if (v < 0)
			continue;
		out[k / 2] |= (uint8_t)(k % 2 == 0 ? v << 4 : v);
		k++;
	}
}

/* Header copy gen % 2 (at 0 or 512): magic, gen, salt, next seq, size, boot id, durable modseq, crc. */
static void hdr_encode(uint8_t *b, uint64_t gen, uint64_t salt, uint64_t seq, const uint8_t boot[16], uint64_t modseq)
{
	memset(b, 0, WAL_HDR_SIZE);
	memcpy(b, WAL_HDR_MAGIC, 8);
	be64_put(b + 8, gen);
	be64_put(b + 16, salt);
	be64_put(b + 24, seq);
	be32_put(b + 32, WAL_SIZE);
	memcpy(b + 36, boot, 16);
	be64_put(b + 52, modseq);
	be32_put(b + 60, wal_crc32c(b, 60));
}

static bool hdr_decode(const uint8_t *b, uint64_t *gen_r, uint64_t *salt_r, uint64_t *seq_r, uint8_t boot_r[16],
    uint64_t *modseq_r)
{
	if (memcmp(b, WAL_HDR_MAGIC, 8) != 0 || be32_get(b + 60) != wal_crc32c(b, 60) || be32_get(b + 32) != WAL_SIZE)
		return false;
	*modseq_r = be64_get(b + 52);
	*gen_r = be64_get(b + 8);
	*salt_r = be64_get(b + 16);
	*seq_r = be64_get(b + 24);
	memcpy(boot_r, b + 36, 16);
	return *seq_r > 0;
}

static char *wal_path(struct idx_account *a, const char *suffix)
{
	size_t n = strlen(a->dir) + sizeof(WAL_NAME) + strlen(suffix) + 2;
	char *p = idx_xmalloc(n);

	snprintf(p, n, "%s/%s%s", a->dir, WAL_NAME, suffix);
	return p;
}

/* A new log: zeros written (so later writes change no metadata), synced, renamed into place. */
static int wal_create(struct idx_account *a, uint64_t first_seq, char *err, size_t errlen)
{
	char *tmp = wal_path(a, ".new"), *path = wal_path(a, "");
	uint8_t *zero = calloc(1, 65536), hdr[2][WAL_HDR_SIZE], boot[16];
	uint64_t salt = 0;
	int fd = -1, r = -1;

	if (zero == NULL)
		abort();
	if (getrandom(&salt, sizeof(salt), 0) != (ssize_t)sizeof(salt)) {
		idx_seterr(err, errlen, "getrandom: %s", strerror(errno));
		goto out;
	}
	fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		idx_seterr(err, errlen, "%s: %s", tmp, strerror(errno));
		goto out;
	}
	for (off_t off = 0; off < WAL_SIZE; off += 65536)
		if (full_pwrite(fd, zero, 65536, off) < 0)
			goto ioerr;
	/* Both copies, so that a checkpoint's torn header write always leaves one. */
	boot_id(boot);
	hdr_encode(hdr[0], 0, salt, first_seq, boot, a->rec.highest_modseq);
	hdr_encode(hdr[1], 1, salt, first_seq, boot, a->rec.highest_modseq);
	if (full_pwrite(fd, hdr[0], WAL_HDR_SIZE, 0) < 0 || full_pwrite(fd, hdr[1], WAL_HDR_SIZE, 512) < 0 ||
	    fsync(fd) < 0 || rename(tmp, path) < 0)
		goto ioerr;
	if (maildir_fsync_dir(a->dir, err, errlen) < 0)
		goto out;
	r = 1;
	goto out;
ioerr:
	idx_seterr(err, errlen, "%s: %s", tmp, strerror(errno));
	(void)unlink(tmp);
out:
	if (fd >= 0)
		close(fd);
	free(zero);
	free(tmp);
	free(path);
	return r;
}

static void wal_free(struct idx_wal *w)
{
	if (w == NULL)
		return;
	if (w->fd >= 0)
		close(w->fd);
	for (size_t i = 0; i < w->nfiles; i++)
		free(w->files[i]);
	free(w->files);
	for (size_t i = 0; i < w->ndirs; i++)
		free(w->dirs[i]);
	free(w);
}

/* Write the header copy after the newest with first seq w->next_seq, and fdatasync. 1, -1. */
static int hdr_write(struct idx_account *a, char *err, size_t errlen)
{
	struct idx_wal *w = a->wal;
	uint8_t hdr[WAL_HDR_SIZE];
	uint64_t gen = w->gen + 1;

	/* Every commit is durable here (a checkpoint, or the open): so is every
	 * message up to this modseq (a reboot's replay checks those after it). */
	hdr_encode(hdr, gen, w->salt, w->next_seq, w->boot, a->rec.highest_modseq);
	if (full_pwrite(w->fd, hdr, sizeof(hdr), (off_t)((gen % 2) * 512)) < 0 || fdatasync(w->fd) < 0) {
		idx_seterr(err, errlen, "%s/%s: %s", a->dir, WAL_NAME, strerror(errno));
		return -1;
	}
	w->gen = gen;
	w->hdr_modseq = a->rec.highest_modseq;
	return 1;
}

/* ---- appending ---- */

static bool wal_usable(struct idx_account *a, uint64_t from, size_t bytes)
{
	struct idx_wal *w = a->wal;
	bool ok;

	pthread_mutex_lock(&a->mu);
	ok = w != NULL && !w->failed && !w->replaying && !a->no_fsync && (from ? from : w->head) + bytes <= WAL_SIZE;
	pthread_mutex_unlock(&a->mu);
	return ok;
}

bool wal_room(struct idx_account *a, size_t bytes)
{
	return wal_usable(a, 0, bytes);
}

bool wal_fits_empty(struct idx_account *a, size_t bytes)
{
	return wal_usable(a, WAL_DATA, bytes);
}

bool wal_empty(struct idx_account *a)
{
	return a->wal == NULL || a->wal->head == WAL_DATA;
}

/* Read the whole file at path into x (its size is known: sz). */
static int read_file_into(const char *path, uint64_t sz, TCXSTR *x, char *err, size_t errlen)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	size_t start = (size_t)tcxstrsize(x), got = 0;
	uint8_t buf[16384];
	int r = 1;

	if (fd < 0) {
		idx_seterr(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	while (r > 0) {
		ssize_t n = read(fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			idx_seterr(err, errlen, "read %s: %s", path, strerror(errno));
			r = -1;
		} else if (n == 0) {
			break;
		} else {
			tcxstrcat(x, buf, (int)n);
			got += (size_t)n;
		}
	}
	close(fd);
	if (r > 0 && got != sz) {
		idx_seterr(err, errlen, "%s: %zu bytes, expected %llu", path, got, (unsigned long long)sz);
		r = -1;
	}
	(void)start;
	return r;
}

int wal_append(struct idx_account *a, const struct wal_msg *msgs, size_t n, uint64_t *first_r, uint64_t *last_r,
    struct maildir_syncset **ss_r, char *err, size_t errlen)
{
	struct idx_wal *w = a->wal;
	TCXSTR *x = tcxstrnew();
	uint64_t seq = w->next_seq;
	int r = 1;

	for (size_t i = 0; i < n && r > 0; i++) {
		const struct wal_msg *m = &msgs[i];
		size_t start = ent_begin(x, seq + i, WAL_T_ADD, (uint16_t)m->nt, (uint32_t)m->size, 0, 0);

		for (size_t k = 0; k < m->nt; k++) {
			const struct wal_target *t = &m->t[k];
			size_t nl = strlen(t->name);

			put32(x, t->mbid);
			put32(x, t->uid);
			put32(x, t->flags);
			put32(x, (uint32_t)t->received_tz);
			put64(x, (uint64_t)t->received);
			put32(x, t->destined);
			put32(x, t->prefix_len);
			tcxstrcat(x, (uint8_t[]){t->is_reject ? 1 : 0, (uint8_t)t->nkeywords}, 2);
			put16(x, (uint16_t)nl);
			tcxstrcat(x, t->name, (int)nl);
			for (size_t q = 0; q < t->nkeywords; q++) {
				size_t kl = strlen(t->keywords[q]);
				put16(x, (uint16_t)kl);
				tcxstrcat(x, t->keywords[q], (int)kl);
			}
		}
		if (m->data != NULL)
			tcxstrcat(x, m->data, (int)m->size);
		else
			r = read_file_into(m->path, m->size, x, err, errlen);
		if (r > 0)
			ent_finish(x, start, w->salt);
	}
	if (r > 0 && w->head + (uint64_t)tcxstrsize(x) > WAL_SIZE) {
		idx_seterr(err, errlen, "%s/%s: no room", a->dir, WAL_NAME);
		r = 0; /* the caller checked wal_room with a bound: not reached */
	}
	if (r > 0) {
		if (full_pwrite(w->fd, tcxstrptr(x), (size_t)tcxstrsize(x), (off_t)w->head) < 0 ||
		    (ss_r == NULL && fdatasync(w->fd) < 0)) {
			idx_seterr(err, errlen, "%s/%s: %s", a->dir, WAL_NAME, strerror(errno));
			w->failed = true; /* a lost write is reported once: trust nothing after it */
			r = -1;
		} else {
			if (ss_r != NULL) {
				char *path = wal_path(a, "");
				/* One message: synced in this thread once its commit is done. */
				*ss_r = n == 1 ? maildir_syncset_new_deferred() : maildir_syncset_new();
				maildir_syncset_file(*ss_r, path);
				free(path);
			}
			w->head += (uint64_t)tcxstrsize(x);
			w->next_seq = seq + n;
			for (size_t i = 0; i < n; i++)
				w->pending_bytes += msgs[i].size;
			w->last_ms = mono_ms();
			*first_r = seq;
			*last_r = seq + n - 1;
		}
	}
	tcxstrdel(x);
	return r;
}

void wal_failed(struct idx_account *a)
{
	if (a->wal != NULL)
		a->wal->failed = true;
}

void wal_cancel(struct idx_account *a, uint64_t first, uint64_t last)
{
	struct idx_wal *w = a->wal;
	TCXSTR *x;
	size_t start;

	if (w == NULL || w->failed)
		return;
	if (w->head + WAL_ENT_HDR > WAL_SIZE) {
		w->failed = true; /* cannot say it: the entries would replay (a duplicate, not a loss) */
		return;
	}
	x = tcxstrnew();
	start = ent_begin(x, w->next_seq, WAL_T_CANCEL, 0, 0, (uint32_t)(last - first + 1), first);
	ent_finish(x, start, w->salt);
	if (full_pwrite(w->fd, tcxstrptr(x), (size_t)tcxstrsize(x), (off_t)w->head) < 0 || fdatasync(w->fd) < 0) {
		w->failed = true;
	} else {
		w->head += (uint64_t)tcxstrsize(x);
		w->next_seq++;
	}
	tcxstrdel(x);
}

static void note_path(char **v, size_t *n, size_t cap, const char *path, bool *overflow)
{
	for (size_t i = 0; i < *n; i++)
		if (strcmp(v[i], path) == 0)
			return;
	if (*n == cap) {
		*overflow = true;
		return;
	}
	v[(*n)++] = idx_xstrdup(path);
}

void wal_note_file(struct idx_account *a, const char *path)
{
	struct idx_wal *w = a->wal;

	/* Each link is a new name: no need to look for it among the others. */
	if (w->use_syncfs)
		return;
	if (w->nfiles == WAL_SYNC_FILES) {
		w->use_syncfs = true;
		return;
	}
	w->files = idx_xrealloc(w->files, sizeof(*w->files) * (w->nfiles + 1));
	w->files[w->nfiles++] = idx_xstrdup(path);
}

void wal_note_dir(struct idx_account *a, const char *path)
{
	struct idx_wal *w = a->wal;

	note_path(w->dirs, &w->ndirs, WAL_SYNC_DIRS, path, &w->use_syncfs);
}

/* ---- checkpoint ---- */

/* Bytes of dirty and writeback pages of the whole system (/proc/meminfo); UINT64_MAX unknown. */
static uint64_t system_dirty(void)
{
	char buf[4096];
	int fd = open("/proc/meminfo", O_RDONLY | O_CLOEXEC);
	ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;
	uint64_t total = 0;
	int found = 0;

	if (fd >= 0)
		close(fd);
	if (n <= 0)
		return UINT64_MAX;
	buf[n] = '\0';
	for (const char *p = buf; p != NULL && *p != '\0'; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
		unsigned long long kb;
		if (sscanf(p, "Dirty: %llu kB", &kb) == 1 || sscanf(p, "Writeback: %llu kB", &kb) == 1) {
			total += (uint64_t)kb * 1024;
			found++;
		}
	}
	return found == 2 ? total : UINT64_MAX;
}

int wal_checkpoint_locked(struct idx_account *a, char *err, size_t errlen)
{
	struct idx_wal *w = a->wal;
	struct maildir_syncset *ss;
		char serr[256];
	int r = 1;

	if (w == NULL || w->head == WAL_DATA)
		return 1;
	if (w->failed) {
		idx_seterr(err, errlen, "%s/%s: an earlier write or sync failed: restart to replay it", a->dir, WAL_NAME);
		return -1;
	}
	if (!w->use_syncfs && w->nfiles > WAL_SYNC_FEW) {
		uint64_t dirty = system_dirty();
		w->use_syncfs = dirty != UINT64_MAX && dirty <= 3 * w->pending_bytes + WAL_OTHERS_DIRTY_MAX;
	}
	ss = maildir_syncset_new();
	if (w->use_syncfs)
		maildir_syncset_fs(ss, a->maildir);
	for (size_t i = 0; i < w->nfiles && !w->use_syncfs; i++)
		maildir_syncset_file(ss, w->files[i]);
	for (size_t i = 0; i < w->ndirs && !w->use_syncfs; i++)
		maildir_syncset_dir(ss, w->dirs[i]);
	int sr = maildir_syncset_wait(&ss, serr, sizeof(serr));
	if (sr < 0 && !w->use_syncfs) {
		/* A file renamed or removed since (a flag change, an expunge, another
		 * tool), a folder renamed: one syncfs covers them wherever they are. */
		ss = maildir_syncset_new();
		maildir_syncset_fs(ss, a->maildir);
		sr = maildir_syncset_wait(&ss, serr, sizeof(serr));
	}
	if (sr < 0) {
		idx_seterr(err, errlen, "checkpoint: %s", serr);
		r = -1;
	}
	/* The index: no transaction is open (the caller holds the lock outside one). */
	if (r > 0)
		r = index_sync_locked(a, a->committed, err, errlen);
	if (r > 0)
		r = hdr_write(a, err, errlen);
	if (r < 0) {
		w->failed = true; /* the entries stay for the replay at the next open */
		return -1;
	}
	w->head = WAL_DATA;
	for (size_t i = 0; i < w->nfiles; i++)
		free(w->files[i]);
	free(w->files);
	w->files = NULL;
	for (size_t i = 0; i < w->ndirs; i++)
		free(w->dirs[i]);
	w->nfiles = w->ndirs = 0;
	w->use_syncfs = false;
	w->pending_bytes = 0;
	return 1;
}

int idx_checkpoint(struct idx_account *a, char *err, size_t errlen)
{
	int r;

	pthread_mutex_lock(&a->mu);
	r = wal_checkpoint_locked(a, err, errlen);
	pthread_mutex_unlock(&a->mu);
	return r;
}

int idx_checkpoint_idle(struct idx_account *a, int64_t idle_ms, char *err, size_t errlen)
{
	int r = 0;

	pthread_mutex_lock(&a->mu);
	if (a->wal != NULL && a->wal->head != WAL_DATA && !a->wal->failed && mono_ms() - a->wal->last_ms >= idle_ms)
		r = wal_checkpoint_locked(a, err, errlen);
	pthread_mutex_unlock(&a->mu);
	return r;
}

/* ---- replay ---- */

/* The file at path holds exactly content: 1, 0 not (missing, short, other bytes), -1. */
static int file_holds(const char *path, const uint8_t *content, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	uint8_t buf[16384];
	size_t off = 0;
	struct stat st;
	int r = 1;

	if (fd < 0)
		return errno == ENOENT ? 0 : -1;
	if (fstat(fd, &st) < 0 || (uint64_t)st.st_size != len) {
		close(fd);
		return 0;
	}
	while (r > 0) {
		ssize_t n = read(fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		if (off + (size_t)n > len || memcmp(buf, content + off, (size_t)n) != 0)
			r = 0;
		off += (size_t)n;
	}
	close(fd);
	return r > 0 && off == len ? 1 : 0;
}

/* Write content to path (through a synced file in the account's tmp/, renamed over it). */
static int file_restore(struct idx_account *a, const char *path, const uint8_t *content, size_t len, char *err,
    size_t errlen)
{
	char tmp[IDX_PATH_MAX + 64];
	int fd;

	snprintf(tmp, sizeof(tmp), "%s/tmp/restore.%ld.%llu", a->maildir, (long)getpid(),
	    (unsigned long long)a->name_counter++);
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0 || full_pwrite(fd, content, len, 0) < 0 || fsync(fd) < 0 || rename(tmp, path) < 0) {
		idx_seterr(err, errlen, "restore %s: %s", path, strerror(errno));
		if (fd >= 0) {
			close(fd);
			(void)unlink(tmp);
		}
		return -1;
	}
	close(fd);
	return 1;
}

static int folder_of(struct idx_account *a, uint32_t mbid, char *path, size_t size, char *err, size_t errlen)
{
	struct idx_mailbox mb;
	int r;

	pthread_mutex_lock(&a->mu);
	r = mb_load(a, mbid, &mb, err, errlen);
	pthread_mutex_unlock(&a->mu);
	if (r <= 0)
		return r;
	r = idx_folder_path(a, mb.folder, path, size, err, errlen) < 0 ? -1 : 1;
	idx_mailbox_clear(&mb);
	return r;
}

/* The record of the message file with base name base in mailbox mbid: 1 with *m_r, 0 none, -1. */
static int record_by_base(struct idx_account *a, uint32_t mbid, const char *base, size_t blen,
    struct idx_message *m_r, char *err, size_t errlen)
{
	TCXSTR *k = tcxstrnew();
	void *v;
	size_t len;
	int r;

	key_file(k, mbid, base, blen);
	pthread_mutex_lock(&a->mu);
	r = db_get(a, tcxstrptr(k), (size_t)tcxstrsize(k), &v, &len, err, errlen);
	if (r > 0) {
		uint32_t uid = len == 4 ? be32_get(v) : 0;
		tcfree(v);
		r = uid == 0 ? 0 : msg_load(a, mbid, uid, m_r, err, errlen);
	}
	pthread_mutex_unlock(&a->mu);
	tcxstrdel(k);
	return r;
}

static size_t base_len(const char *name)
{
	const char *b = msg_basename(name);

	return strcspn(b, ",:");
}

/* The file of record m holds the logged bytes, written again when not (its data or link was lost). 1, -1. */
static int ensure_file(struct idx_account *a, const struct idx_message *m, const uint8_t *content, size_t len,
    char *err, size_t errlen)
{
	char folder[IDX_PATH_MAX], path[IDX_PATH_MAX + MAILDIR_NAME_BUFSIZE + 8], found[MAILDIR_NAME_BUFSIZE];
	enum maildir_subdir sub;
	struct stat st;
	int r = folder_of(a, m->mailbox_id, folder, sizeof(folder), err, errlen);

	if (r <= 0)
		return r < 0 ? -1 : 1;
	/* Where the file is now: its flags may have changed its name. */
	r = maildir_msg_find(folder, msg_basename(m->filename), &sub, found, sizeof(found), err, errlen);
	if (r < 0)
		return -1;
	if (r > 0)
		snprintf(path, sizeof(path), "%s/%s/%s", folder, sub == MAILDIR_NEW ? "new" : "cur", found);
	else
		snprintf(path, sizeof(path), "%s/%s", folder, m->filename);
	if (file_holds(path, content, len) > 0)
		return 1;
	/* The folder itself gone (another tool removed it): the next sync tombstones the record. */
	char dir[sizeof(path)];
	memcpy(dir, path, sizeof(dir));
	if (stat(dirname(dir), &st) < 0 && errno == ENOENT)
		return 1;
	if (file_restore(a, path, content, len, err, errlen) < 0)
		return -1;
	a->wal_restored++;
	return 1;
}

/* An entry up to W: make sure each target's file still holds the logged bytes. */
static int replay_check(struct idx_account *a, const struct wal_target_dec *ts, size_t nt, const uint8_t *content,
    size_t len, char *err, size_t errlen)
{
	for (size_t i = 0; i < nt; i++) {
		const char *base = msg_basename(ts[i].name);
		size_t blen = base_len(ts[i].name);
		struct idx_message m;
		struct idx_mailbox *list = NULL;
		size_t nlist = 0;
		int r;

		memset(&m, 0, sizeof(m));
		r = record_by_base(a, ts[i].mbid, base, blen, &m, err, errlen);
		if (r == 0) {
			/* Moved by another tool and adopted elsewhere: look in every mailbox. */
			if (idx_mailbox_list(a, &list, &nlist, err, errlen) < 0)
				return -1;
			for (size_t k = 0; k < nlist && r == 0; k++)
				if (list[k].id != ts[i].mbid)
					r = record_by_base(a, list[k].id, base, blen, &m, err, errlen);
			idx_mailbox_list_free(&list, nlist);
		}
		if (r < 0)
			return -1;
		if (r == 0)
			continue; /* expunged since: nothing to keep */
		r = ensure_file(a, &m, content, len, err, errlen);
		idx_message_clear(&m);
		if (r < 0)
			return -1;
	}
	return 1;
}

/* An entry after W: its transaction did not survive; add the message again. */
static int replay_add(struct idx_account *a, uint64_t seq, const struct wal_target_dec *ts, size_t nt,
    const uint8_t *content, size_t len, char *err, size_t errlen)
{
	struct idx_add *items = calloc(nt, sizeof(*items));
	uint32_t *uids = calloc(nt, sizeof(*uids));
	struct maildir_writer *wr = NULL;
	char tmpdir[IDX_PATH_MAX + 8];
	size_t k = 0;
	int r = 1;

	if (items == NULL || uids == NULL)
		abort();
	for (size_t i = 0; i < nt && r > 0; i++) {
		char folder[IDX_PATH_MAX], path[IDX_PATH_MAX + MAILDIR_NAME_BUFSIZE + 8];
		struct idx_message m;
		uint32_t mbid = ts[i].mbid;

		memset(&m, 0, sizeof(m));
		r = record_by_base(a, mbid, msg_basename(ts[i].name), base_len(ts[i].name), &m, err, errlen);
		if (r > 0) {
			/* Known after all (committed before a power loss, or adopted by a sync): keep its file intact. */
			r = ensure_file(a, &m, content, len, err, errlen);
			idx_message_clear(&m);
			if (r < 0)
				break;
			continue;
		}
		if (r < 0)
			break;
		r = folder_of(a, mbid, folder, sizeof(folder), err, errlen);
		if (r == 0) {
			/* The mailbox went away: never lose the message, deliver it to INBOX. */
			pthread_mutex_lock(&a->mu);
			r = mb_lookup(a, "INBOX", &mbid, err, errlen);
			pthread_mutex_unlock(&a->mu);
			if (r > 0)
				r = folder_of(a, mbid, folder, sizeof(folder), err, errlen);
			if (r == 0) {
				idx_seterr(err, errlen, "no INBOX");
				r = -1;
			}
		}
		if (r < 0)
			break;
		/* The link made before the crash, if it was made: the new one replaces it. */
		for (int tries = 0; tries < 2; tries++) {
			char found[MAILDIR_NAME_BUFSIZE];
			enum maildir_subdir sub;

			if (maildir_msg_find(folder, ts[i].name, &sub, found, sizeof(found), NULL, 0) <= 0)
				break;
			snprintf(path, sizeof(path), "%s/%s/%s", folder, sub == MAILDIR_NEW ? "new" : "cur", found);
			(void)unlink(path);
		}
		items[k] = (struct idx_add){.mailbox_id = mbid, .flags = ts[i].flags,
		    .keywords = (const char *const *)ts[i].keywords, .nkeywords = ts[i].nkeywords,
		    .received = ts[i].received, .received_tz = ts[i].received_tz, .prefix_len = ts[i].prefix_len,
		    .mailbox_destined = ts[i].destined, .is_reject = ts[i].is_reject};
		uids[k] = mbid == ts[i].mbid ? ts[i].uid : 0;
		k++;
	}
	if (r > 0 && k > 0) {
		snprintf(tmpdir, sizeof(tmpdir), "%s/tmp", a->maildir);
		if (maildir_writer_open(&wr, tmpdir, a->host, err, errlen) < 0) {
			r = -1;
		} else {
			maildir_writer_set_raw(wr, true);
			if (maildir_writer_write(wr, content, len, err, errlen) < 0 ||
			    maildir_writer_finish(wr, MAILDIR_FINISH_NOSYNC, err, errlen) < 0)
				r = -1;
		}
		for (size_t i = 0; i < k; i++)
			items[i].w = wr;
		if (r > 0 && msg_add_replayed(a, items, k, uids, seq, err, errlen) < 0)
			r = -1;
		for (size_t i = 0; i < k && r > 0; i++) {
			if (items[i].result < 0) {
				idx_seterr(err, errlen, "replay: %s", items[i].err_r);
				r = -1;
			}
		}
		if (r > 0)
			a->wal_applied++;
		if (wr != NULL && r > 0)
			(void)maildir_writer_remove(wr, NULL, 0);
		maildir_writer_free(&wr);
	}
	free(items);
	free(uids);
	return r;
}

struct unlogged {
	uint32_t *uid;
	uint64_t *size;
	char **name;
	size_t n;
	uint64_t since;
};

static int unlogged_cb(void *arg, const struct idx_message *m)
{
	struct unlogged *u = arg;

	if (m->createseq < u->since)
		return 1;
	u->uid = idx_xrealloc(u->uid, sizeof(*u->uid) * (u->n + 1));
	u->size = idx_xrealloc(u->size, sizeof(*u->size) * (u->n + 1));
	u->name = idx_xrealloc(u->name, sizeof(*u->name) * (u->n + 1));
	u->uid[u->n] = m->uid;
	u->size[u->n] = m->size;
	u->name[u->n] = idx_xstrdup(msg_basename(m->filename));
	u->n++;
	return 1;
}

/*
 * After a reboot: a message added since modseq `since` (after the last
 * durable state) whose file is missing or empty was committed while its log
 * entry was still being synced, and the power loss took the entry and the
 * file's data: it was never acknowledged (the sender tries again). Its record
 * is expunged, so no client sees an empty message. Messages the log held were
 * restored or added again just before. A file of another size is left alone
 * (another tool may have rewritten it), and so is a mailbox whose folder is
 * gone (the Maildir sync tombstones its messages). 1, -1.
 */
static int drop_unlogged(struct idx_account *a, uint64_t since, char *err, size_t errlen)
{
	struct idx_mailbox *list = NULL;
	size_t nlist = 0;
	int r = 1;

	if (idx_mailbox_list(a, &list, &nlist, err, errlen) < 0)
		return -1;
	for (size_t i = 0; i < nlist && r > 0; i++) {
		struct unlogged u = {.since = since};
		char folder[IDX_PATH_MAX], subdir[IDX_PATH_MAX + 8];
		struct stat dst;

		if (idx_folder_path(a, list[i].folder, folder, sizeof(folder), err, errlen) < 0) {
			r = -1;
			break;
		}
		snprintf(subdir, sizeof(subdir), "%s/new", folder);
		bool have_new = stat(subdir, &dst) == 0;
		snprintf(subdir, sizeof(subdir), "%s/cur", folder);
		if (!have_new || stat(subdir, &dst) < 0)
			continue;
		r = idx_message_each(a, list[i].id, 0, unlogged_cb, &u, err, errlen) < 0 ? -1 : 1;
		for (size_t k = 0; k < u.n && r > 0; k++) {
			char found[MAILDIR_NAME_BUFSIZE], path[IDX_PATH_MAX + MAILDIR_NAME_BUFSIZE + 8];
			enum maildir_subdir sub;
			struct stat st;
			int fr = maildir_msg_find(folder, u.name[k], &sub, found, sizeof(found), err, errlen);

			if (fr < 0) {
				r = -1;
				break;
			}
			if (fr > 0) {
				snprintf(path, sizeof(path), "%s/%s/%s", folder, sub == MAILDIR_NEW ? "new" : "cur", found);
				if (stat(path, &st) == 0 && (st.st_size > 0 || u.size[k] == 0))
					continue;
			}
			int xr = idx_expunge(a, list[i].id, &u.uid[k], 1, NULL, err, errlen);
			if (xr < 0)
				r = -1;
			else
				a->wal_dropped += (uint64_t)xr;
		}
		for (size_t k = 0; k < u.n; k++)
			free(u.name[k]);
		free(u.uid);
		free(u.size);
		free(u.name);
	}
	idx_mailbox_list_free(&list, nlist);
	return r;
}

/* The `W` key: the last entry the index holds (0 none). 1, -1. */
static int read_applied(struct idx_account *a, uint64_t *applied_r, char *err, size_t errlen)
{
	void *v;
	size_t len;
	int r;

	*applied_r = 0;
	pthread_mutex_lock(&a->mu);
	r = db_get(a, "W", 1, &v, &len, err, errlen);
	pthread_mutex_unlock(&a->mu);
	if (r > 0) {
		*applied_r = len == 8 ? be64_get(v) : 0;
		tcfree(v);
	}
	return r < 0 ? -1 : 1;
}


/*
 * rebooted: the log was last written in another boot of the machine. Its
 * entries then outlived a power loss or a kernel crash (a clean stop empties
 * the log), which may have kept any subset of the index's unsynced pages:
 * neither `W` nor a missing record can be trusted, so every entry's message
 * is checked and, without a record, added again. (An expunge of the last
 * second before the power loss may come back; nothing is lost.)
 */
static int replay(struct idx_account *a, const uint8_t *buf, size_t size, uint64_t first, uint64_t applied,
    uint64_t rebooted_since, char *err, size_t errlen)
{
	bool rebooted = rebooted_since > 0;
	struct idx_wal *w = a->wal;
	struct wal_entry *ents = NULL;
	size_t n = 0, off = WAL_DATA;
	int r;

	while (off < size) {
		struct wal_entry e;
		if (wal_entry_parse(buf + off, size - off, w->salt, first + n, &e) <= 0)
			break;
		ents = idx_xrealloc(ents, sizeof(*ents) * (n + 1));
		ents[n++] = e;
		off += e.total;
	}
	/*
	 * New entries follow both the log's and the index's last: sequence numbers
	 * at or below `W` would read as committed at the next replay (a log moved
	 * away and created anew, an entry damaged after the index took it).
	 */
	w->next_seq = first + n > applied + 1 ? first + n : applied + 1;
	w->head = off;
	if (n == 0) {
		free(ents);
		/* Nothing committed since the header: a clean stop, nothing to check. */
		if (rebooted && a->rec.highest_modseq >= rebooted_since && drop_unlogged(a, rebooted_since, err, errlen) < 0)
			return -1;
		return w->next_seq == first && !rebooted ? 1 : hdr_write(a, err, errlen);
	}
	/* What was accepted once is added again whatever the quota says now. */
	uint64_t quota = a->quota;
	a->quota = 0;
	w->replaying = true;
	r = 1;
	for (size_t i = 0; i < n && r > 0; i++) {
		struct wal_target_dec *ts;
		const uint8_t *content;
		bool cancelled = false;

		if (ents[i].type != WAL_T_ADD)
			continue;
		for (size_t k = i + 1; k < n; k++)
			if (ents[k].type == WAL_T_CANCEL && ents[i].seq >= ents[k].arg && ents[i].seq - ents[k].arg < ents[k].count)
				cancelled = true;
		if (cancelled)
			continue;
		if (ent_targets(&ents[i], &ts, &content) < 0) {
			/* The CRC matched, so we wrote it like this: a program error, not a torn write. */
			idx_seterr(err, errlen, "%s/%s: entry %llu malformed", a->dir, WAL_NAME,
			    (unsigned long long)ents[i].seq);
			r = -1;
			break;
		}
		if (ents[i].seq > applied || rebooted)
			r = replay_add(a, ents[i].seq > applied ? ents[i].seq : 0, ts, ents[i].ntargets, content,
			    ents[i].content_len, err, errlen);
		else
			r = replay_check(a, ts, ents[i].ntargets, content, ents[i].content_len, err, errlen);
		ts_free(ts, ents[i].ntargets);
	}
	w->replaying = false;
	a->quota = quota;
	free(ents);
	if (r > 0 && rebooted)
		r = drop_unlogged(a, rebooted_since, err, errlen);
	if (r < 0)
		return -1;
	/* Everything replayed is made durable (also by an opener without fsync) before the log empties. */
	w->use_syncfs = true;
	pthread_mutex_lock(&a->mu);
	r = wal_checkpoint_locked(a, err, errlen);
	pthread_mutex_unlock(&a->mu);
	return r;
}

int wal_open(struct idx_account *a, char *err, size_t errlen)
{
	char *path = wal_path(a, ""), *tmp = wal_path(a, ".new");
	uint8_t *buf = NULL;
	uint64_t gen[2] = {0, 0}, salt[2], seq[2], hmodseq[2];
	uint8_t hboot[2][16];
	bool ok[2];
	size_t got = 0;
	uint64_t applied;
	int fd = -1, r = -1;
	struct idx_wal *w;

	(void)unlink(tmp); /* a creation that did not finish */
	if (read_applied(a, &applied, err, errlen) < 0)
		goto out;
	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT) {
		if (a->no_fsync || a->no_log) {
			r = 1; /* imports and tests go without a log */
			goto out;
		}
		if (wal_create(a, applied + 1, a->wal_error, sizeof(a->wal_error)) < 0) {
			/* No log yet, so nothing to replay: the account works without one
			 * (three flushes per add) and the next open tries again. */
			r = 1;
			goto out;
		}
		fd = open(path, O_RDWR | O_CLOEXEC);
	}
	if (fd < 0) {
		idx_seterr(err, errlen, "%s: %s", path, strerror(errno));
		goto out;
	}
	buf = malloc(WAL_SIZE);
	if (buf == NULL)
		abort();
	if (full_pread(fd, buf, WAL_SIZE, 0, &got) < 0) {
		idx_seterr(err, errlen, "read %s: %s", path, strerror(errno));
		goto out;
	}
	for (int i = 0; i < 2; i++)
		ok[i] = got >= (size_t)i * 512 + WAL_HDR_SIZE &&
		    hdr_decode(buf + i * 512, &gen[i], &salt[i], &seq[i], hboot[i], &hmodseq[i]);
	if (!ok[0] && !ok[1]) {
		idx_seterr(err, errlen,
		    "%s: both headers are damaged; the deliveries it holds cannot be read. Move it away to go on "
		    "without them", path);
		goto out;
	}
	int c = ok[0] && ok[1] ? (gen[1] > gen[0] ? 1 : 0) : (ok[1] ? 1 : 0);
	w = calloc(1, sizeof(*w));
	if (w == NULL)
		abort();
	w->fd = fd;
	fd = -1;
	w->salt = salt[c];
	w->gen = gen[c];
	w->next_seq = seq[c];
	w->hdr_modseq = hmodseq[c];
	w->head = WAL_DATA;
	boot_id(w->boot);
	a->wal = w;
	bool rebooted = memcmp(hboot[c], w->boot, 16) != 0;
	r = replay(a, buf, got < WAL_SIZE ? got : WAL_SIZE, seq[c], applied, rebooted ? hmodseq[c] + 1 : 0, err,
	    errlen);
	if (r < 0)
		w->failed = true; /* keep every entry for the next open */
	if (r > 0 && (a->no_fsync || a->no_log)) {
		/* Replayed for an import or a test: they go on without the log. */
		wal_free(a->wal);
		a->wal = NULL;
	}
out:
	if (fd >= 0)
		close(fd);
	free(buf);
	free(path);
	free(tmp);
	return r;
}

void wal_close(struct idx_account *a)
{
	if (a->wal == NULL)
		return;
	if (!a->wal->failed && a->db != NULL) {
		pthread_mutex_lock(&a->mu);
		/* An empty log whose header is behind the index gets this modseq too (after
		 * an index fdatasync): a reboot then finds nothing to check. */
		if (wal_checkpoint_locked(a, NULL, 0) > 0 && a->wal->hdr_modseq != a->rec.highest_modseq &&
		    index_sync_locked(a, a->committed, NULL, 0) > 0)
			(void)hdr_write(a, NULL, 0);
		pthread_mutex_unlock(&a->mu);
	}
	wal_free(a->wal);
	a->wal = NULL;
}
