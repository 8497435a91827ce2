/*
 * spool: message spool files created ahead of time. Creating a file in the
 * spool directory is disk metadata work (the file system looks for a free
 * inode, reading inode table blocks), so one background thread keeps a few
 * maildir writers open there for each host name, and the event loop thread
 * takes a ready one without waiting for the disk.
 * Owns that thread and the writers not yet taken; a taken writer belongs to
 * its taker. Does not write, finish or remove messages; when the pool has
 * nothing ready the caller opens a writer itself, so behaviour never depends
 * on the pool.
 */
#ifndef MOX_SPOOL_H
#define MOX_SPOOL_H

#include <stddef.h>
#include <stdint.h>

#include "maildir/maildir.h"

struct spool;

/* Writers kept ready per host name unless the caller says otherwise. */
#define SPOOL_DEFAULT_CAP 32
/* Host names a pool serves; writers for others are never ready. */
#define SPOOL_MAX_HOSTS 8
/*
 * A writer's name carries the time it was created: the thread replaces one
 * that waited longer than this, so a name is never much older than its
 * message.
 */
#define SPOOL_MAX_AGE_MS 30000

/*
 * Create directory dir (mkdir -p, mode 0700), remove the files a previous
 * run left there (the pool owns dir: give it a directory of its own, on the
 * file system its writers are linked into), and start the thread that keeps
 * up to cap writers (maildir_writer_open(dir, host)) ready for each of
 * hosts[0..nhosts) (a repeated name counts once; names past SPOOL_MAX_HOSTS
 * are ignored). dir and the names are copied. The files are created with the
 * calling process's user: start the pool after a privilege drop.
 * Returns the pool, or NULL with err set (dir cannot be created, the thread
 * cannot start, cap is 0 or there is no host name).
 */
struct spool *spool_new(const char *dir, const char *const *hosts, size_t nhosts, unsigned cap, char *err,
    size_t errlen);

/*
 * A ready writer for host in the pool's directory: empty, not raw, its tmp
 * file created at most about SPOOL_MAX_AGE_MS ago. Any thread. Never waits
 * for the disk: the pool's lock is never held across a system call.
 * Returns 1 and *w_r (the caller owns it: maildir_writer_free unlinks its
 * file), or 0 and *w_r = NULL when none is ready (sp is NULL, host is not one
 * of the pool's names, or the pool is empty): the caller then opens one itself.
 */
int spool_take(struct spool *sp, const char *host, struct maildir_writer **w_r);

/* Counters since spool_new (for logs and tests). */
struct spool_stats {
	uint64_t taken;   /* spool_take returned a writer */
	uint64_t missed;  /* spool_take found none ready for a pool host */
	uint64_t created; /* writers the thread opened */
	uint64_t dropped; /* pooled writers the thread replaced: too old, or their file was gone */
	uint64_t failed;  /* maildir_writer_open failures on the thread */
};
void spool_stats(struct spool *sp, struct spool_stats *s_r);

/* Writers ready now for host (0 for an unknown host or a NULL pool). */
size_t spool_ready(struct spool *sp, const char *host);

/*
 * Stop the thread and free every writer still in the pool (which unlinks its
 * tmp file), so no file of the pool is left behind. Writers already taken are
 * not touched. Accepts NULL and *spp == NULL; sets *spp = NULL.
 */
void spool_free(struct spool **spp);

/*
 * Remove the files (not directories or dot-files) in dir that a previous run
 * left: spool files made ahead of time, or of messages it never acknowledged
 * (a message is linked into its Maildir before the reply, and only then is its
 * spool file removed). Returns how many were removed.
 */
int spool_remove_files(const char *dir);

#endif
