/*
 * cfg: schema-driven YAML loading with libyaml's document API.
 *
 * libyaml accepts duplicate keys, resolves aliases silently and types
 * nothing, so this file does all of that itself: every node may be visited
 * once (a second visit is an alias), explicit tags are refused, keys are
 * matched exactly (case-sensitive, as in the Go mox's config), and scalars are
 * converted by the field's type. libyaml marks are 0-based; messages are
 * 1-based.
 *
 * The loader replaces an explicit tag such as !!str with the very tag an
 * untagged node gets and drops anchors, so a first pass over the events
 * records where nodes with properties (tags, anchors) start; visit() refuses
 * such a node by its start mark.
 */
#include "daemon/cfg.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#define TAG_STR "tag:yaml.org,2002:str"
#define TAG_SEQ "tag:yaml.org,2002:seq"
#define TAG_MAP "tag:yaml.org,2002:map"

/* A node written with a tag or an anchor, found by scan_props(). */
struct prop {
	size_t index;
	yaml_mark_t mark;
	yaml_node_type_t type;
	bool tag;
};

struct ctx {
	yaml_document_t *doc;
	const char *file;
	unsigned char *visited;
	size_t nnodes;
	struct prop *props; /* sorted by index */
	size_t nprops;
	size_t depth;       /* elements in path */
	char path[512];
	char *err;
	size_t errlen;
	size_t items;
};

static void
set_err(struct ctx *c, const yaml_node_t *n, const char *fmt, ...) MOX_PRINTF(3, 4);

static void
set_err(struct ctx *c, const yaml_node_t *n, const char *fmt, ...)
{
	char msg[400];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (n != NULL)
		snprintf(c->err, c->errlen, "%s:%zu:%zu: %s%s%s", c->file, n->start_mark.line + 1,
		    n->start_mark.column + 1, c->path, c->path[0] ? ": " : "", msg);
	else
		snprintf(c->err, c->errlen, "%s: %s%s%s", c->file, c->path, c->path[0] ? ": " : "", msg);
}

/* Push a path element; returns the previous length for pop. */
static size_t
path_push(struct ctx *c, const char *elem, size_t idx, int is_index)
{
	size_t old = strlen(c->path);
	size_t room = sizeof(c->path) - old;

	if (is_index)
		snprintf(c->path + old, room, "[%zu]", idx);
	else
		snprintf(c->path + old, room, "%s%s", old ? "." : "", elem);
	c->depth++;
	return old;
}

static void
path_pop(struct ctx *c, size_t old)
{
	c->path[old] = '\0';
	c->depth--;
}

int
cfg_parse_size(const char *s, long long *v_r)
{
	char *end;
	unsigned long long v, mul = 1;

	if (!isdigit((unsigned char)*s))
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0)
		return -1;
	if (*end != '\0') {
		char u = (char)tolower((unsigned char)*end);
		if (u == 'k')
			mul = 1024ULL;
		else if (u == 'm')
			mul = 1024ULL * 1024;
		else if (u == 'g')
			mul = 1024ULL * 1024 * 1024;
		else
			return -1;
		end++;
		if (*end == 'b' || *end == 'B')
			end++;
		if (*end != '\0')
			return -1;
	}
	if (v > (unsigned long long)LLONG_MAX / mul)
		return -1;
	*v_r = (long long)(v * mul);
	return 1;
}

int
cfg_parse_duration(const char *s, long long *ms_r)
{
	char *end;
	unsigned long long v, mul;

	if (!isdigit((unsigned char)*s))
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0)
		return -1;
	if (strcmp(end, "ms") == 0)
		mul = 1;
	else if (strcmp(end, "s") == 0)
		mul = 1000;
	else if (strcmp(end, "m") == 0)
		mul = 60 * 1000;
	else if (strcmp(end, "h") == 0)
		mul = 3600 * 1000;
	else if (strcmp(end, "d") == 0)
		mul = 86400 * 1000;
	else
		return -1;
	if (v > (unsigned long long)LLONG_MAX / mul)
		return -1;
	*ms_r = (long long)(v * mul);
	return 1;
}

static const char *
type_name(enum cfg_type t)
{
	switch (t) {
	case CFG_STRING: return "a string";
	case CFG_INT: return "an integer";
	case CFG_SIZE: return "a size (e.g. 100m)";
	case CFG_DURATION: return "a duration (e.g. 30s, 5m)";
	case CFG_BOOL: return "true or false";
	case CFG_STRLIST: return "a list of strings";
	case CFG_STRMAP: return "a mapping of strings";
	case CFG_STRUCT: return "a mapping";
	case CFG_STRUCTMAP: return "a mapping";
	case CFG_STRUCTLIST: return "a list";
	}
	return "?";
}

/* Convert a scalar text to a field's value. Returns 1, or -1 with an error set. */
static int
set_scalar(struct ctx *c, const yaml_node_t *n, const struct cfg_field *f, void *base, const char *s)
{
	char *p = (char *)base + f->offset;
	long long v;
	int r = 1;

	switch (f->type) {
	case CFG_STRING:
		free(*(char **)p);
		*(char **)p = xstrdup(s);
		return 1;
	case CFG_BOOL:
		if (strcmp(s, "true") == 0)
			*(bool *)p = true;
		else if (strcmp(s, "false") == 0)
			*(bool *)p = false;
		else {
			set_err(c, n, "expected true or false, got \"%.64s\"", s);
			return -1;
		}
		return 1;
	case CFG_INT:
		r = parse_ll(s, LLONG_MIN, LLONG_MAX, &v);
		break;
	case CFG_SIZE:
		r = cfg_parse_size(s, &v);
		break;
	case CFG_DURATION:
		r = cfg_parse_duration(s, &v);
		break;
	default:
		set_err(c, n, "expected %s", type_name(f->type));
		return -1;
	}
	if (r < 0) {
		set_err(c, n, "expected %s, got \"%.64s\"", type_name(f->type), s);
		return -1;
	}
	if ((f->min != 0 || f->max != 0) && (v < f->min || v > f->max)) {
		set_err(c, n, "value %s out of range %lld..%lld", s, f->min, f->max);
		return -1;
	}
	*(long long *)p = v;
	return 1;
}

static int parse_struct(struct ctx *c, const struct cfg_schema *s, void *out, yaml_node_t *n, bool visited);
static int apply_default(const struct cfg_field *f, void *out, char *err, size_t errlen);

/*
 * Record the start of every node with a tag or an anchor. Returns 1, or 0
 * when the events stop early (a syntax error, reported by the loader).
 */
static int
scan_props(struct ctx *c, const char *buf, size_t len)
{
	yaml_parser_t parser;
	yaml_event_t ev;
	size_t cap = 0;
	int r = 0;

	if (!yaml_parser_initialize(&parser))
		return 0;
	yaml_parser_set_input_string(&parser, (const unsigned char *)buf, len);
	for (;;) {
		yaml_char_t *tag = NULL, *anchor = NULL;
		yaml_node_type_t type = YAML_NO_NODE;

		if (!yaml_parser_parse(&parser, &ev))
			break;
		if (ev.type == YAML_STREAM_END_EVENT) {
			yaml_event_delete(&ev);
			r = 1;
			break;
		}
		if (ev.type == YAML_SCALAR_EVENT) {
			tag = ev.data.scalar.tag;
			anchor = ev.data.scalar.anchor;
			type = YAML_SCALAR_NODE;
		} else if (ev.type == YAML_SEQUENCE_START_EVENT) {
			tag = ev.data.sequence_start.tag;
			anchor = ev.data.sequence_start.anchor;
			type = YAML_SEQUENCE_NODE;
		} else if (ev.type == YAML_MAPPING_START_EVENT) {
			tag = ev.data.mapping_start.tag;
			anchor = ev.data.mapping_start.anchor;
			type = YAML_MAPPING_NODE;
		}
		if (tag != NULL || anchor != NULL) {
			if (c->nprops == cap) {
				cap = cap ? cap * 2 : 16;
				c->props = xrealloc(c->props, cap * sizeof(*c->props));
			}
			c->props[c->nprops++] = (struct prop){ev.start_mark.index, ev.start_mark, type, tag != NULL};
		}
		yaml_event_delete(&ev);
	}
	yaml_parser_delete(&parser);
	return r;
}

static const char *
prop_problem(const struct prop *p)
{
	return p->tag ? "explicit tags are not allowed" : "anchors and aliases are not allowed";
}

static int
visit(struct ctx *c, yaml_node_t *n)
{
	size_t id = (size_t)(n - c->doc->nodes.start);
	const char *want = NULL;
	size_t lo = 0, hi = c->nprops;

	if (id >= c->nnodes)
		return -1;
	if (c->visited[id]) {
		set_err(c, n, "aliases are not allowed");
		return -1;
	}
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (c->props[mid].index < n->start_mark.index)
			lo = mid + 1;
		else
			hi = mid;
	}
	/* A mapping and its first key can start at the same mark; the type tells them apart. */
	for (; lo < c->nprops && c->props[lo].index == n->start_mark.index; lo++) {
		if (c->props[lo].type == n->type) {
			set_err(c, n, "%s", prop_problem(&c->props[lo]));
			return -1;
		}
	}
	c->visited[id] = 1;
	if (++c->items > CFG_MAX_ITEMS) {
		set_err(c, n, "too many values");
		return -1;
	}
	switch (n->type) {
	case YAML_SCALAR_NODE: want = TAG_STR; break;
	case YAML_SEQUENCE_NODE: want = TAG_SEQ; break;
	case YAML_MAPPING_NODE: want = TAG_MAP; break;
	default: break;
	}
	if (want != NULL && n->tag != NULL && strcmp((char *)n->tag, want) != 0) {
		set_err(c, n, "explicit tags are not allowed");
		return -1;
	}
	return 1;
}

static yaml_node_t *
node(struct ctx *c, int id)
{
	return yaml_document_get_node(c->doc, id);
}

/* A scalar's text; refuses embedded NUL bytes. */
static const char *
scalar(struct ctx *c, yaml_node_t *n)
{
	if (n->type != YAML_SCALAR_NODE)
		return NULL;
	if (strlen((char *)n->data.scalar.value) != n->data.scalar.length) {
		set_err(c, n, "NUL byte in value");
		return NULL;
	}
	return (const char *)n->data.scalar.value;
}

/* A scalar's text, or NULL with msg as the error when n is not a scalar. */
static const char *
scalar_as(struct ctx *c, yaml_node_t *n, const char *msg)
{
	if (n->type != YAML_SCALAR_NODE) {
		set_err(c, n, "%s", msg);
		return NULL;
	}
	return scalar(c, n);
}

/* An empty plain scalar ("Key:" with nothing after it) stands for an empty collection. */
static bool
is_empty(yaml_node_t *n)
{
	return n->type == YAML_SCALAR_NODE && n->data.scalar.length == 0 &&
	    n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
}

static int
check_depth(struct ctx *c, yaml_node_t *n)
{
	/* Counted, not derived from the path: keys such as domain names hold dots. */
	if (c->depth >= CFG_MAX_DEPTH) {
		set_err(c, n, "nested too deeply");
		return -1;
	}
	return 1;
}

static void
set_mark(struct ctx *c, const struct cfg_field *f, void *base, const yaml_node_t *n)
{
	struct cfg_mark *m;

	if (f->mark_offset == 0)
		return;
	m = (struct cfg_mark *)((char *)base + f->mark_offset);
	m->file = c->file;
	m->line = (int)n->start_mark.line + 1;
	m->col = (int)n->start_mark.column + 1;
}

/*
 * Fill a struct for a mapping n without the field's keys (absent or an empty
 * value): required keys are missing, the others take their defaults and mark
 * n, so later checks can point at the mapping that lacks the key.
 */
static int
fill_missing(struct ctx *c, const struct cfg_schema *s, void *out, const yaml_node_t *n, const unsigned char *seen)
{
	for (size_t i = 0; i < s->nfields; i++) {
		if (seen != NULL && seen[i])
			continue;
		if (s->fields[i].flags & CFG_REQUIRED) {
			set_err(c, n, "missing required key \"%s\"", s->fields[i].key);
			return -1;
		}
		set_mark(c, &s->fields[i], out, n);
		if (apply_default(&s->fields[i], out, c->err, c->errlen) < 0)
			return -1;
	}
	return 1;
}

static int
parse_value(struct ctx *c, const struct cfg_field *f, void *base, yaml_node_t *n)
{
	char *p = (char *)base + f->offset;
	const char *s;

	if (visit(c, n) < 0 || check_depth(c, n) < 0)
		return -1;
	set_mark(c, f, base, n);
	switch (f->type) {
	case CFG_STRING:
	case CFG_INT:
	case CFG_SIZE:
	case CFG_DURATION:
	case CFG_BOOL:
		if (n->type != YAML_SCALAR_NODE) {
			set_err(c, n, "expected %s", type_name(f->type));
			return -1;
		}
		if ((s = scalar(c, n)) == NULL)
			return -1;
		if (f->type != CFG_STRING && n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) {
			set_err(c, n, "expected %s, got a quoted string", type_name(f->type));
			return -1;
		}
		return set_scalar(c, n, f, base, s);
	case CFG_STRLIST: {
		struct cfg_strlist *l = (struct cfg_strlist *)p;
		if (is_empty(n))
			return 1;
		if (n->type != YAML_SEQUENCE_NODE) {
			set_err(c, n, "expected a list of strings");
			return -1;
		}
		for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top; it++) {
			yaml_node_t *e = node(c, *it);
			size_t old = path_push(c, NULL, (size_t)(it - n->data.sequence.items.start), 1);
			if (visit(c, e) < 0)
				return -1;
			if (e->type != YAML_SCALAR_NODE) {
				set_err(c, e, "expected a string");
				return -1;
			}
			if ((s = scalar(c, e)) == NULL)
				return -1;
			path_pop(c, old);
			l->v = xrealloc(l->v, (l->n + 1) * sizeof(char *));
			l->v[l->n++] = xstrdup(s);
		}
		return 1;
	}
	case CFG_STRMAP: {
		struct cfg_strmap *m = (struct cfg_strmap *)p;
		if (is_empty(n))
			return 1;
		if (n->type != YAML_MAPPING_NODE) {
			set_err(c, n, "expected a mapping of strings");
			return -1;
		}
		for (yaml_node_pair_t *pr = n->data.mapping.pairs.start; pr < n->data.mapping.pairs.top; pr++) {
			yaml_node_t *k = node(c, pr->key), *v = node(c, pr->value);
			const char *ks, *vs;
			if (visit(c, k) < 0)
				return -1;
			if ((ks = scalar_as(c, k, "keys must be strings")) == NULL)
				return -1;
			for (size_t i = 0; i < m->n; i++) {
				if (strcmp(m->keys[i], ks) == 0) {
					set_err(c, k, "duplicate key \"%.64s\"", ks);
					return -1;
				}
			}
			size_t old = path_push(c, ks, 0, 0);
			if (visit(c, v) < 0)
				return -1;
			if ((vs = scalar_as(c, v, "expected a string")) == NULL)
				return -1;
			path_pop(c, old);
			m->keys = xrealloc(m->keys, (m->n + 1) * sizeof(char *));
			m->vals = xrealloc(m->vals, (m->n + 1) * sizeof(char *));
			m->keys[m->n] = xstrdup(ks);
			m->vals[m->n++] = xstrdup(vs);
		}
		return 1;
	}
	case CFG_STRUCT:
		if (is_empty(n))
			return fill_missing(c, f->sub, p, n, NULL);
		return parse_struct(c, f->sub, p, n, true);
	case CFG_STRUCTMAP: {
		struct cfg_array *a = (struct cfg_array *)p;
		if (is_empty(n))
			return 1;
		if (n->type != YAML_MAPPING_NODE) {
			set_err(c, n, "expected a mapping");
			return -1;
		}
		for (yaml_node_pair_t *pr = n->data.mapping.pairs.start; pr < n->data.mapping.pairs.top; pr++) {
			yaml_node_t *k = node(c, pr->key), *v = node(c, pr->value);
			const char *ks;
			char *item;
			if (visit(c, k) < 0)
				return -1;
			if ((ks = scalar_as(c, k, "keys must be strings")) == NULL)
				return -1;
			for (size_t i = 0; i < a->n; i++) {
				if (strcmp(*(char **)((char *)a->v + i * f->sub->size), ks) == 0) {
					set_err(c, k, "duplicate key \"%.64s\"", ks);
					return -1;
				}
			}
			a->v = xrealloc(a->v, (a->n + 1) * f->sub->size);
			item = (char *)a->v + a->n * f->sub->size;
			memset(item, 0, f->sub->size);
			*(char **)item = xstrdup(ks);
			a->n++;
			size_t old = path_push(c, ks, 0, 0);
			int r;
			if (is_empty(v)) {
				r = visit(c, v) < 0 ? -1 : fill_missing(c, f->sub, item, v, NULL);
			} else {
				r = parse_struct(c, f->sub, item, v, false);
			}
			if (r < 0)
				return -1;
			path_pop(c, old);
		}
		return 1;
	}
	case CFG_STRUCTLIST: {
		struct cfg_array *a = (struct cfg_array *)p;
		if (is_empty(n))
			return 1;
		if (n->type != YAML_SEQUENCE_NODE) {
			set_err(c, n, "expected a list");
			return -1;
		}
		for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top; it++) {
			yaml_node_t *e = node(c, *it);
			char *item;
			a->v = xrealloc(a->v, (a->n + 1) * f->sub->size);
			item = (char *)a->v + a->n * f->sub->size;
			memset(item, 0, f->sub->size);
			a->n++;
			size_t old = path_push(c, NULL, (size_t)(it - n->data.sequence.items.start), 1);
			if (parse_struct(c, f->sub, item, e, false) < 0)
				return -1;
			path_pop(c, old);
		}
		return 1;
	}
	}
	return -1;
}

static int
apply_default(const struct cfg_field *f, void *out, char *err, size_t errlen)
{
	struct ctx c = {0};
	char *p = (char *)out + f->offset;

	c.file = "(default)";
	c.err = err;
	c.errlen = errlen;
	snprintf(c.path, sizeof(c.path), "%s", f->key);
	switch (f->type) {
	case CFG_STRUCT:
		return cfg_defaults(f->sub, p, err, errlen);
	case CFG_STRLIST: {
		struct cfg_strlist *l = (struct cfg_strlist *)p;
		const char *s = f->def, *e;
		if (s == NULL || *s == '\0')
			return 1;
		for (;;) {
			e = strchr(s, ',');
			l->v = xrealloc(l->v, (l->n + 1) * sizeof(char *));
			l->v[l->n++] = e ? xstrndup(s, (size_t)(e - s)) : xstrdup(s);
			if (e == NULL)
				break;
			s = e + 1;
		}
		return 1;
	}
	case CFG_STRING:
	case CFG_INT:
	case CFG_SIZE:
	case CFG_DURATION:
	case CFG_BOOL:
		if (f->def == NULL)
			return 1;
		return set_scalar(&c, NULL, f, out, f->def);
	default:
		return 1;
	}
}

int
cfg_defaults(const struct cfg_schema *schema, void *out, char *err, size_t errlen)
{
	for (size_t i = 0; i < schema->nfields; i++)
		if (apply_default(&schema->fields[i], out, err, errlen) < 0)
			return -1;
	return 1;
}

static int
parse_struct(struct ctx *c, const struct cfg_schema *s, void *out, yaml_node_t *n, bool visited)
{
	unsigned char seen[128] = {0};

	if ((!visited && visit(c, n) < 0) || check_depth(c, n) < 0)
		return -1;
	if (n->type != YAML_MAPPING_NODE) {
		set_err(c, n, "expected a mapping");
		return -1;
	}
	if (s->nfields > sizeof(seen))
		abort();
	for (yaml_node_pair_t *pr = n->data.mapping.pairs.start; pr < n->data.mapping.pairs.top; pr++) {
		yaml_node_t *k = node(c, pr->key), *v = node(c, pr->value);
		const char *ks;
		size_t i;

		if (visit(c, k) < 0)
			return -1;
		if ((ks = scalar_as(c, k, "keys must be strings")) == NULL)
			return -1;
		for (i = 0; i < s->nfields; i++)
			if (strcmp(s->fields[i].key, ks) == 0)
				break;
		if (i == s->nfields) {
			struct mbuf known;
			mbuf_init(&known, 300);
			for (size_t j = 0; j < s->nfields; j++)
				if (mbuf_printf(&known, "%s%s", j ? ", " : "", s->fields[j].key) < 0)
					break;
			set_err(c, k, "unknown key \"%.64s\" (known: %s)", ks, known.data ? known.data : "none");
			mbuf_clear(&known);
			return -1;
		}
		if (seen[i]) {
			set_err(c, k, "duplicate key \"%.64s\"", ks);
			return -1;
		}
		seen[i] = 1;
		size_t old = path_push(c, ks, 0, 0);
		if (parse_value(c, &s->fields[i], out, v) < 0)
			return -1;
		path_pop(c, old);
	}
	return fill_missing(c, s, out, n, seen);
}

int
cfg_parse(const struct cfg_schema *schema, void *out, const char *buf, size_t len,
    const char *file, char *err, size_t errlen)
{
	yaml_parser_t parser;
	yaml_document_t doc, doc2;
	struct ctx c = {0};
	yaml_node_t *root;
	const char *nul;
	int r = -1;

	c.file = file;
	c.err = err;
	c.errlen = errlen;
	if (len > CFG_MAX_INPUT) {
		snprintf(err, errlen, "%s: file too large (over %u bytes)", file, CFG_MAX_INPUT);
		return -1;
	}
	if ((nul = memchr(buf, '\0', len)) != NULL) {
		size_t line = 1, col = 1;
		for (const char *p = buf; p < nul; p++, col++) {
			if (*p == '\n') {
				line++;
				col = 0;
			}
		}
		snprintf(err, errlen, "%s:%zu:%zu: NUL byte in file", file, line, col);
		return -1;
	}
	if (!yaml_parser_initialize(&parser)) {
		snprintf(err, errlen, "%s: cannot initialize YAML parser", file);
		return -1;
	}
	yaml_parser_set_input_string(&parser, (const unsigned char *)buf, len);
	if (!yaml_parser_load(&parser, &doc)) {
		snprintf(err, errlen, "%s:%zu:%zu: %s%s%s", file, parser.problem_mark.line + 1,
		    parser.problem_mark.column + 1, parser.problem ? parser.problem : "syntax error",
		    parser.context ? " " : "", parser.context ? parser.context : "");
		yaml_parser_delete(&parser);
		return -1;
	}
	root = yaml_document_get_root_node(&doc);
	if (root != NULL) {
		/* A second document would be ignored silently by the loader: refuse it. */
		if (!yaml_parser_load(&parser, &doc2)) {
			snprintf(err, errlen, "%s:%zu:%zu: %s", file, parser.problem_mark.line + 1,
			    parser.problem_mark.column + 1, parser.problem ? parser.problem : "syntax error");
			goto out;
		}
		int more = yaml_document_get_root_node(&doc2) != NULL;
		yaml_mark_t m2 = doc2.start_mark;
		yaml_document_delete(&doc2);
		if (more) {
			snprintf(err, errlen, "%s:%zu:%zu: more than one YAML document", file, m2.line + 1, m2.column + 1);
			goto out;
		}
	}
	/* The document loaded, so the events parse too. */
	if (!scan_props(&c, buf, len)) {
		snprintf(err, errlen, "%s: cannot parse YAML events", file);
		goto out;
	}
	c.doc = &doc;
	c.nnodes = (size_t)(doc.nodes.top - doc.nodes.start);
	c.visited = xcalloc(c.nnodes + 1, 1);
	if (root == NULL || is_empty(root))
		r = cfg_defaults(schema, out, err, errlen) < 0 ? -1 : 1;
	else
		r = parse_struct(&c, schema, out, root, false);
	if (r >= 0) {
		/* Missing required keys at the top level of an empty document. */
		if (root == NULL || is_empty(root)) {
			for (size_t i = 0; i < schema->nfields; i++) {
				if (schema->fields[i].flags & CFG_REQUIRED) {
					snprintf(err, errlen, "%s: missing required key \"%s\"", file, schema->fields[i].key);
					r = -1;
					break;
				}
			}
		}
	}
	/* Properties on a node that was not visited (an empty document's root). */
	if (r >= 0 && c.nprops > 0) {
		snprintf(err, errlen, "%s:%zu:%zu: %s", file, c.props[0].mark.line + 1, c.props[0].mark.column + 1,
		    prop_problem(&c.props[0]));
		r = -1;
	}
	free(c.visited);
out:
	free(c.props);
	yaml_document_delete(&doc);
	yaml_parser_delete(&parser);
	return r < 0 ? -1 : 1;
}

void
cfg_free(const struct cfg_schema *schema, void *out)
{
	for (size_t i = 0; i < schema->nfields; i++) {
		const struct cfg_field *f = &schema->fields[i];
		char *p = (char *)out + f->offset;
		switch (f->type) {
		case CFG_STRING:
			free(*(char **)p);
			*(char **)p = NULL;
			break;
		case CFG_STRLIST: {
			struct cfg_strlist *l = (struct cfg_strlist *)p;
			for (size_t j = 0; j < l->n; j++)
				free(l->v[j]);
			free(l->v);
			l->v = NULL;
			l->n = 0;
			break;
		}
		case CFG_STRMAP: {
			struct cfg_strmap *m = (struct cfg_strmap *)p;
			for (size_t j = 0; j < m->n; j++) {
				free(m->keys[j]);
				free(m->vals[j]);
			}
			free(m->keys);
			free(m->vals);
			m->keys = m->vals = NULL;
			m->n = 0;
			break;
		}
		case CFG_STRUCT:
			cfg_free(f->sub, p);
			break;
		case CFG_STRUCTMAP:
		case CFG_STRUCTLIST: {
			struct cfg_array *a = (struct cfg_array *)p;
			for (size_t j = 0; j < a->n; j++) {
				char *item = (char *)a->v + j * f->sub->size;
				if (f->type == CFG_STRUCTMAP)
					free(*(char **)item);
				cfg_free(f->sub, item);
			}
			free(a->v);
			a->v = NULL;
			a->n = 0;
			break;
		}
		default:
			break;
		}
	}
}

/* Quote a string for YAML output when it is not a safe plain scalar. */
static void
describe_scalar(struct mbuf *b, const char *s)
{
	bool plain = *s != '\0' && strchr("-?:,[]{}#&*!|>'\"%@`~ ", *s) == NULL;

	for (const char *p = s; *p && plain; p++)
		if (*p == ':' || *p == '#' || (unsigned char)*p < ' ')
			plain = false;
	if (strcmp(s, "true") == 0 || strcmp(s, "false") == 0 || strcmp(s, "null") == 0)
		plain = false;
	if (plain) {
		mbuf_adds(b, s);
		return;
	}
	mbuf_add(b, "\"", 1);
	for (const char *p = s; *p; p++) {
		if (*p == '"' || *p == '\\')
			mbuf_add(b, "\\", 1);
		mbuf_add(b, p, 1);
	}
	mbuf_add(b, "\"", 1);
}

static void
indent(struct mbuf *b, int level)
{
	for (int i = 0; i < level; i++)
		mbuf_add(b, "  ", 2);
}

static void
describe_doc(struct mbuf *b, int level, const char *doc, const struct cfg_field *f)
{
	const char *p = doc, *e;

	if (doc != NULL) {
		while (*p) {
			e = strchr(p, '\n');
			indent(b, level);
			mbuf_adds(b, "# ");
			mbuf_add(b, p, e ? (size_t)(e - p) : strlen(p));
			mbuf_adds(b, "\n");
			if (e == NULL)
				break;
			p = e + 1;
		}
	}
	if (f != NULL) {
		indent(b, level);
		mbuf_printf(b, "# (%s%s%s%s)\n", type_name(f->type),
		    (f->flags & CFG_REQUIRED) ? ", required" : ", optional",
		    f->def && f->type != CFG_STRUCT ? ", default " : "",
		    f->def && f->type != CFG_STRUCT ? (*f->def ? f->def : "\"\"") : "");
	}
}

static void describe_struct(const struct cfg_schema *s, struct mbuf *b, int level);

static void
describe_field(const struct cfg_field *f, struct mbuf *b, int level)
{
	const char *v = f->def ? f->def : f->example;

	describe_doc(b, level, f->doc, f);
	indent(b, level);
	mbuf_printf(b, "%s:", f->key);
	switch (f->type) {
	case CFG_STRING:
		mbuf_adds(b, " ");
		describe_scalar(b, v ? v : "");
		mbuf_adds(b, "\n");
		break;
	case CFG_INT:
	case CFG_SIZE:
	case CFG_DURATION:
	case CFG_BOOL:
		mbuf_printf(b, " %s\n", v ? v : (f->type == CFG_BOOL ? "false" : f->type == CFG_DURATION ? "0s" : "0"));
		break;
	case CFG_STRLIST: {
		mbuf_adds(b, "\n");
		const char *s = v ? v : "example", *e;
		for (;;) {
			e = strchr(s, ',');
			char *one = e ? xstrndup(s, (size_t)(e - s)) : xstrdup(s);
			indent(b, level + 1);
			mbuf_adds(b, "- ");
			describe_scalar(b, one);
			mbuf_adds(b, "\n");
			free(one);
			if (e == NULL)
				break;
			s = e + 1;
		}
		break;
	}
	case CFG_STRMAP:
		mbuf_adds(b, "\n");
		indent(b, level + 1);
		mbuf_printf(b, "%s\n", v ? v : "example-key: example-value");
		break;
	case CFG_STRUCT:
		mbuf_adds(b, "\n");
		describe_struct(f->sub, b, level + 1);
		break;
	case CFG_STRUCTMAP:
		mbuf_adds(b, "\n");
		describe_doc(b, level + 1, f->sub->keydoc, NULL);
		indent(b, level + 1);
		describe_scalar(b, f->sub->keyexample ? f->sub->keyexample : "example");
		mbuf_adds(b, ":\n");
		describe_struct(f->sub, b, level + 2);
		break;
	case CFG_STRUCTLIST:
		mbuf_adds(b, "\n");
		indent(b, level + 1);
		mbuf_adds(b, "-\n");
		describe_struct(f->sub, b, level + 2);
		break;
	}
}

static void
describe_struct(const struct cfg_schema *s, struct mbuf *b, int level)
{
	for (size_t i = 0; i < s->nfields; i++) {
		/* The first member of a STRUCTMAP item is its key, not a YAML field. */
		if (s->fields[i].key[0] == '\0')
			continue;
		describe_field(&s->fields[i], b, level);
	}
}

void
cfg_describe(const struct cfg_schema *schema, struct mbuf *b)
{
	describe_struct(schema, b, 0);
}
