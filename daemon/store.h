/*
 * store: the daemon's bridge to the account store (index/). Owns the storage
 * threads and the registry of open accounts. Every index call runs on a
 * storage thread, never on the event loop thread: each account belongs to
 * one thread (so its writes are serialized and an account's reader never
 * waits behind another account's fsync), and results come back to the loop
 * thread through an event. Deliveries and APPENDs queued for the same account
 * are group-committed: one transaction for everything that queued while the
 * previous batch was being written. The pipeline of an add: the message
 * files sync on sync threads (while the account thread is busy) or inside
 * idx_add in parallel with the record writes; the account thread links and
 * commits (idx_add_nosync) and moves on; a sync thread then fsyncs the
 * directories and the index (idx_durable_wait: one index fdatasync covers
 * every commit before it) and only then runs the done callbacks, so an
 * acknowledgement always follows durability.
 * Does not: parse protocols or decide where mail goes.
 */
#ifndef MOX_STORE_H
#define MOX_STORE_H

#include <stdbool.h>
#include <stddef.h>

#include <event2/event.h>

#include "daemon/config.h"
#include "index/index.h"

struct store;
struct store_account;

/*
 * Runs on the account's storage thread. a is the open index, or NULL when
 * the account could not be opened (store_account_error says why).
 */
typedef void (*store_work_fn)(struct store_account *sa, struct idx_account *a, void *arg);
/* Runs on the event loop thread after the work is done. */
typedef void (*store_done_fn)(void *arg);

/*
 * Create the store with nthreads storage threads (0: default 2). cfg is
 * borrowed and must outlive the store (or be replaced with
 * store_set_config). libevent must have threading enabled
 * (evthread_use_pthreads) before base was created. NULL on failure.
 */
struct store *store_new(struct event_base *base, const struct config *cfg, int nthreads);
/*
 * Finish queued work, stop the threads, close every account. Adds that have
 * not started by then fail (see store_refuse_adds).
 */
void store_free(struct store **stp);
/*
 * Loop thread, when the server stops taking mail: adds (deliveries, APPENDs)
 * that have not started fail with "server shutting down", now for those
 * queued and at once for later ones, so each is answered with a temporary
 * error while the loop still runs instead of being stored after the loop
 * can no longer answer (the client would send it again: a duplicate). Adds
 * already committing finish normally.
 */
void store_refuse_adds(struct store *st);
/* Loop thread: adds are committing whose done callbacks have not run yet. */
bool store_adds_running(struct store *st);
void store_set_config(struct store *st, const struct config *cfg);

/*
 * A reference to account name (as in domains.yaml), opened lazily on its
 * thread by the first work. NULL when the config has no such account.
 * Release with store_account_put (the account stays open, cached).
 */
struct store_account *store_account_get(struct store *st, const char *name);
void store_account_put(struct store_account **sap);
const char *store_account_name(const struct store_account *sa);
/*
 * Any thread: false once the account is known to fail every add (it could not
 * be opened, or an fdatasync of its index failed: writes need a restart).
 * Lets SMTP refuse that recipient at RCPT instead of failing after DATA.
 */
bool store_account_usable(const struct store_account *sa);
/*
 * Loop thread: open an account that could not be opened again, on its thread
 * (an administrator repaired it: mox reopenaccount). done (may be NULL) follows
 * on the loop thread with r = 1 opened now (the reopen hooks were called first;
 * work they queued on the account runs before any queued after), 0 it
 * was open already (err set when its index takes no writes: that needs a
 * restart), -1 err says why it still cannot be opened.
 */
typedef void (*store_reopen_fn)(struct store_account *sa, int r, const char *err, void *arg);
void store_account_reopen(struct store_account *sa, store_reopen_fn done, void *arg);
/*
 * fn (loop thread) is told when store_account_reopen opened an account: to set
 * up what its failed open left out (login secrets, the Maildir watch). At most
 * 4 hooks.
 */
void store_add_reopen_hook(struct store *st, void (*fn)(struct store_account *sa, void *arg), void *arg);
/* Why the account could not be opened ("" when it is fine). Storage thread only. */
const char *store_account_error(const struct store_account *sa);

/*
 * Queue work on the account's thread; done (may be NULL) follows on the loop
 * thread. Jobs of one account run in the order they reach its thread; an add
 * whose file a sync thread syncs first (store_add_prepared, store_add) may
 * reach it after work queued later: callers that need an order wait for the
 * done callback before queueing the next step.
 */
void store_submit(struct store_account *sa, store_work_fn work, store_done_fn done, void *arg);

/*
 * Queue messages for group-committed adding (see idx_add). items stay the
 * caller's and must remain valid until done runs; their result fields are
 * filled by then. When the account cannot be opened every item fails with
 * IDX_E_INTERNAL.
 */
void store_add(struct store_account *sa, struct idx_add *items, size_t n, store_done_fn done, void *arg);

/*
 * store_add whose items are completed on the storage thread: prepare runs
 * there first (with the open index, or a == NULL when the account cannot be
 * opened) and returns how many of the n items to add (it may fill in their
 * mailbox ids, e.g. after looking up or creating the mailboxes). Saves the
 * round trip of a separate store_submit before the add.
 */
typedef size_t (*store_prepare_fn)(struct store_account *sa, struct idx_account *a, void *arg);
/*
 * syncw (may be NULL): a finished, not yet synced message file the items
 * refer to. While the account's thread is busy it is made durable
 * (fdatasync) on one of the store's sync threads before the job reaches
 * that thread, so the files of concurrent deliveries are synced in parallel
 * while the previous batch commits; the items that refer to it are then
 * marked synced (idx_add.synced) after prepare, or fail with
 * IDX_E_INTERNAL when the sync failed. An idle account thread takes the job
 * at once and idx_add syncs the file while it writes the records.
 */
void store_add_prepared(struct store_account *sa, struct idx_add *items, size_t n,
    const struct maildir_writer *syncw, store_prepare_fn prepare, store_done_fn done, void *arg);

/* The directory of account name under the config's data directory (caller frees). */
char *store_account_dir(const struct config *cfg, const char *name);
/* Index options for account name from the config (strings borrowed from cfg). */
void store_account_options(const struct config *cfg, const char *name, struct idx_options *opts_r);

#endif
