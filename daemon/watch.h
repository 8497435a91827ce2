/*
 * watch: notices changes other tools make in account Maildirs (mutt marking
 * read, notmuch tagging, rsync restoring) with inotify and has the index
 * sync the changed folder, so IMAP IDLE clients see them without polling.
 * Events are collected per folder with the names of the changed files and
 * debounced; on the account's storage thread the names are checked against
 * the index (idx_sync_names), and only a disagreement scans the folder. Our
 * own writes cause events too; they agree, so a delivery costs a lookup,
 * not a scan of a folder of 100,000 files.
 */
#ifndef MOX_WATCH_H
#define MOX_WATCH_H

#include "daemon/server.h"
#include "daemon/store.h"

struct watch;

/* Start watching (NULL when inotify is unavailable: logged, mox works without). */
struct watch *watch_new(struct server *srv);
/* Stop watching and release account references: before store_free. */
void watch_stop(struct watch *w);
/* Free the memory: after store_free (pending jobs may still refer to w until then). */
void watch_free(struct watch **wp);

/* Watch every folder of an account (sets up on its storage thread). */
void watch_account(struct watch *w, struct store_account *sa);

#endif
