/*
 * Change notification. An operation collects its changes in the account's
 * pending list while it holds the account lock; after the commit, with the
 * account lock released but the listener lock held (so listeners see
 * operations in commit order), each listener's queue gets a copy and its
 * notify callback runs. Listeners drain their queue from their own thread.
 */
#include "index/index_private.h"

#include <stdlib.h>
#include <string.h>

struct idx_listener {
	struct idx_account *a;
	void (*notify)(void *arg);
	void *arg;
	pthread_mutex_t mu;
	struct idx_change *q;
	size_t n, cap, max;
	bool overflow;
	struct idx_listener *next;
};

static void change_clear(struct idx_change *c)
{
	free(c->name);
	free(c->oldname);
	c->name = c->oldname = NULL;
}

void change_push(struct idx_account *a, enum idx_change_kind kind, uint32_t mbid, uint32_t uid, uint64_t modseq,
    uint32_t flags, const char *name, const char *oldname)
{
	struct idx_change *c;

	if (a->npend == a->cappend) {
		a->cappend = a->cappend ? a->cappend * 2 : 16;
		a->pend = idx_xrealloc(a->pend, sizeof(*a->pend) * a->cappend);
	}
	c = &a->pend[a->npend++];
	memset(c, 0, sizeof(*c));
	c->kind = kind;
	c->mailbox_id = mbid;
	c->uid = uid;
	c->modseq = modseq;
	c->flags = flags;
	c->name = name ? idx_xstrdup(name) : NULL;
	c->oldname = oldname ? idx_xstrdup(oldname) : NULL;
}

void changes_drop(struct idx_account *a)
{
	for (size_t i = 0; i < a->npend; i++)
		change_clear(&a->pend[i]);
	a->npend = 0;
}

void changes_dispatch(struct idx_account *a)
{
	struct idx_listener *l;
	size_t i;

	if (a->npend == 0)
		return;
	for (l = a->listeners; l != NULL; l = l->next) {
		pthread_mutex_lock(&l->mu);
		if (!l->overflow && l->n + a->npend > l->max) {
			idx_changes_free(l->q, l->n);
			l->q = NULL;
			l->n = l->cap = 0;
			l->overflow = true;
		}
		if (!l->overflow) {
			if (l->n + a->npend > l->cap) {
				while (l->n + a->npend > l->cap)
					l->cap = l->cap ? l->cap * 2 : 64;
				l->q = idx_xrealloc(l->q, sizeof(*l->q) * l->cap);
			}
			for (i = 0; i < a->npend; i++) {
				struct idx_change *c = &l->q[l->n++];

				*c = a->pend[i];
				c->name = c->name ? idx_xstrdup(c->name) : NULL;
				c->oldname = c->oldname ? idx_xstrdup(c->oldname) : NULL;
			}
		}
		pthread_mutex_unlock(&l->mu);
		if (l->notify != NULL)
			l->notify(l->arg);
	}
	changes_drop(a);
}

struct idx_listener *idx_listen(struct idx_account *a, void (*notify)(void *arg), void *arg)
{
	struct idx_listener *l = calloc(1, sizeof(*l));

	if (l == NULL)
		abort();
	l->a = a;
	l->notify = notify;
	l->arg = arg;
	l->max = IDX_LISTENER_QUEUE_MAX;
	pthread_mutex_init(&l->mu, NULL);
	pthread_mutex_lock(&a->lmu);
	l->next = a->listeners;
	a->listeners = l;
	pthread_mutex_unlock(&a->lmu);
	return l;
}

void idx_unlisten(struct idx_listener **lp)
{
	struct idx_listener *l, **pp;
	struct idx_account *a;

	if (lp == NULL || *lp == NULL)
		return;
	l = *lp;
	*lp = NULL;
	a = l->a;
	pthread_mutex_lock(&a->lmu);
	for (pp = &a->listeners; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == l) {
			*pp = l->next;
			break;
		}
	}
	pthread_mutex_unlock(&a->lmu);
	idx_changes_free(l->q, l->n);
	pthread_mutex_destroy(&l->mu);
	free(l);
}

void idx_listener_set_limit(struct idx_listener *l, size_t max)
{
	pthread_mutex_lock(&l->mu);
	l->max = max;
	pthread_mutex_unlock(&l->mu);
}

size_t idx_listener_drain(struct idx_listener *l, struct idx_change **changes_r, size_t *n_r, bool *overflow_r)
{
	size_t n;

	pthread_mutex_lock(&l->mu);
	*changes_r = l->q;
	*n_r = n = l->n;
	if (overflow_r != NULL)
		*overflow_r = l->overflow;
	l->q = NULL;
	l->n = l->cap = 0;
	l->overflow = false;
	pthread_mutex_unlock(&l->mu);
	return n;
}

void idx_changes_free(struct idx_change *changes, size_t n)
{
	if (changes == NULL)
		return;
	for (size_t i = 0; i < n; i++)
		change_clear(&changes[i]);
	free(changes);
}
