/*
 * imap_seqset: IMAP sequence sets ("1:5,7,9:*", "$"), parsed into ranges,
 * normalized against the current value of '*', and membership tests.
 */
#include "daemon/imap_parse.h"

#include <stdlib.h>
#include <string.h>

static int
seqnum(const char *s, size_t len, size_t *i, uint32_t *v_r)
{
	uint64_t v = 0;
	size_t start = *i;

	if (*i < len && s[*i] == '*') {
		(*i)++;
		*v_r = IMAP_SEQ_STAR;
		return 0;
	}
	for (; *i < len && s[*i] >= '0' && s[*i] <= '9'; (*i)++) {
		v = v * 10 + (uint64_t)(s[*i] - '0');
		if (v > UINT32_MAX)
			return -1;
	}
	if (*i == start || v == 0)
		return -1;
	*v_r = (uint32_t)v;
	return 0;
}

int
imap_seqset_parse(const char *s, size_t len, size_t max_ranges,
    struct imap_seqset *set_r, const char **err_r)
{
	size_t i = 0, cap = 0;

	memset(set_r, 0, sizeof(*set_r));
	if (len == 1 && s[0] == '$') {
		set_r->searchres = true;
		return 1;
	}
	for (;;) {
		struct imap_seq_range r;

		if (seqnum(s, len, &i, &r.first) < 0) {
			*err_r = "bad sequence set";
			return -1;
		}
		r.last = r.first;
		if (i < len && s[i] == ':') {
			i++;
			if (seqnum(s, len, &i, &r.last) < 0) {
				*err_r = "bad sequence set";
				return -1;
			}
		}
		if (r.first != IMAP_SEQ_STAR && r.last != IMAP_SEQ_STAR && r.first > r.last) {
			uint32_t t = r.first;

			r.first = r.last;
			r.last = t;
		}
		if (set_r->n >= max_ranges) {
			*err_r = "too many ranges in sequence set";
			return -1;
		}
		if (set_r->n == cap) {
			cap = cap == 0 ? 8 : cap * 2;
			if (cap > max_ranges)
				cap = max_ranges;
			set_r->ranges = xrealloc(set_r->ranges, cap * sizeof(*set_r->ranges));
		}
		set_r->ranges[set_r->n++] = r;
		if (i == len)
			return 1;
		if (s[i] != ',') {
			*err_r = "bad sequence set";
			return -1;
		}
		i++;
	}
}

void
imap_seqset_clear(struct imap_seqset *set)
{
	free(set->ranges);
	memset(set, 0, sizeof(*set));
}

/* Range r with '*' replaced by star, ordered. */
static struct imap_seq_range
resolve(struct imap_seq_range r, uint32_t star)
{
	if (r.first == IMAP_SEQ_STAR)
		r.first = star;
	if (r.last == IMAP_SEQ_STAR)
		r.last = star;
	if (r.first > r.last) {
		uint32_t t = r.first;

		r.first = r.last;
		r.last = t;
	}
	return r;
}

bool
imap_seqset_contains(const struct imap_seqset *set, uint32_t v, uint32_t star)
{
	size_t lo, hi;

	if (set->searchres || v == 0)
		return false;
	if (!set->normalized) {
		for (size_t i = 0; i < set->n; i++) {
			struct imap_seq_range r = resolve(set->ranges[i], star);

			if (v >= r.first && v <= r.last)
				return true;
		}
		return false;
	}
	lo = 0;
	hi = set->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (v < set->ranges[mid].first)
			hi = mid;
		else if (v > set->ranges[mid].last)
			lo = mid + 1;
		else
			return true;
	}
	return false;
}

static int
range_cmp(const void *a, const void *b)
{
	const struct imap_seq_range *x = a, *y = b;

	if (x->first != y->first)
		return x->first < y->first ? -1 : 1;
	return 0;
}

void
imap_seqset_normalize(struct imap_seqset *set, uint32_t star)
{
	size_t i, n = 0;

	if (set->normalized)
		return;
	for (i = 0; i < set->n; i++) {
		struct imap_seq_range r = resolve(set->ranges[i], star);

		if (r.first == 0)
			r.first = 1;
		if (r.last == 0)
			continue;
		set->ranges[n++] = r;
	}
	if (n > 1)
		qsort(set->ranges, n, sizeof(*set->ranges), range_cmp);
	set->n = 0;
	for (i = 0; i < n; i++) {
		struct imap_seq_range r = set->ranges[i];
		struct imap_seq_range *last = set->n > 0 ? &set->ranges[set->n - 1] : NULL;

		if (last != NULL && (r.first <= last->last ||
		    (uint64_t)r.first == (uint64_t)last->last + 1)) {
			if (r.last > last->last)
				last->last = r.last;
			continue;
		}
		set->ranges[set->n++] = r;
	}
	set->normalized = true;
}

uint64_t
imap_seqset_count(const struct imap_seqset *set)
{
	uint64_t c = 0;

	for (size_t i = 0; i < set->n; i++) {
		struct imap_seq_range r = resolve(set->ranges[i], 0);

		if (r.first == 0)
			continue;
		c += (uint64_t)r.last - r.first + 1;
	}
	return c;
}
