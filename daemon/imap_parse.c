/*
 * imap_parse: resumable IMAP command tokenizer and argument accessors.
 *
 * Design note. A command arrives as line fragments separated by literals.
 * imap_parse_fragment() only ever works on a complete fragment (it first
 * finds the line end), so within one call every token is whole; only the
 * nesting of lists survives between calls (the frame stack) plus need_sep,
 * which says a separator must come before the next token. Sections
 * ("BODY[...]") may not contain literals, so a section never spans fragments
 * and its raw text can be copied from the line when it closes.
 * Everything the tree references is copied into a per-command pool (arena),
 * because the caller drains its input buffer between calls.
 * After the first error the command is "failed": nothing is built any more,
 * the rest of the command is only delimited (lines, non-synchronizing
 * literals) so the caller can keep one input loop for both cases.
 */
#include "daemon/imap_parse.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define ARENA_BLK 8192
#define MAX_DEPTH_CAP 256

struct arena_blk {
	struct arena_blk *next;
	size_t used;
	size_t cap;
	char data[] __attribute__((aligned(16)));
};

struct frame {
	struct imap_arg *node;  /* LIST node: root, a list, or a section list */
	struct imap_arg *atom;  /* section: the atom that owns it */
	size_t start;           /* section: offset of the atom in the line */
	bool section;
};

struct imap_parser {
	struct imap_parse_limits lim;
	bool utf8;
	enum imap_parse_state state;
	bool failed;
	const char *err;
	struct arena_blk *arena;
	struct imap_command cmd;
	char *tag;
	char *name;
	struct imap_arg root;
	struct frame *stack;    /* lim.max_depth + 1 frames; [0] is root */
	size_t depth;
	bool in_section;        /* a section frame is on the stack (never nested) */
	bool need_sep;
	size_t nargs;
	size_t nliterals;
	size_t literal_bytes;
	size_t command_bytes;
	size_t scan_pos;
	/* The literal announced at the end of the last fragment. */
	struct imap_literal_info lit;
	uint64_t lit_got;
	bool lit_begun;
	bool lit_external;
	bool lit_discard;
	struct imap_arg *lit_arg;
	char *lit_buf;
};

void
imap_parse_limits_default(struct imap_parse_limits *lim)
{
	lim->max_line = 64 * 1024;
	lim->max_command = 1024 * 1024;
	lim->max_literals = 1000;
	lim->max_literal = 100 * 1024;
	lim->max_literal_total = 1024 * 1024;
	lim->max_depth = 32;
	lim->max_args = 20000;
}

/* Per-command pool: blocks freed together on reset. */
static void *
arena_alloc(struct imap_parser *p, size_t n)
{
	struct arena_blk *b = p->arena;
	void *r;

	n = (n + 15) & ~(size_t)15;
	if (b == NULL || b->cap - b->used < n) {
		size_t cap = n > ARENA_BLK ? n : ARENA_BLK;

		b = xmalloc(sizeof(*b) + cap);
		b->used = 0;
		b->cap = cap;
		/* A big block goes behind the current one, which may still have room. */
		if (n > ARENA_BLK / 4 && p->arena != NULL) {
			b->next = p->arena->next;
			p->arena->next = b;
		} else {
			b->next = p->arena;
			p->arena = b;
		}
	}
	r = b->data + b->used;
	b->used += n;
	return r;
}

static char *
arena_strndup(struct imap_parser *p, const char *s, size_t n)
{
	char *r = arena_alloc(p, n + 1);

	memcpy(r, s, n);
	r[n] = '\0';
	return r;
}

static void
arena_free(struct imap_parser *p)
{
	struct arena_blk *b, *next;

	for (b = p->arena; b != NULL; b = next) {
		next = b->next;
		free(b);
	}
	p->arena = NULL;
}

struct imap_parser *
imap_parse_new(const struct imap_parse_limits *lim)
{
	struct imap_parser *p = xcalloc(1, sizeof(*p));

	if (lim != NULL)
		p->lim = *lim;
	else
		imap_parse_limits_default(&p->lim);
	if (p->lim.max_depth > MAX_DEPTH_CAP)
		p->lim.max_depth = MAX_DEPTH_CAP;
	p->stack = xcalloc(p->lim.max_depth + 1, sizeof(*p->stack));
	imap_parse_reset(p);
	return p;
}

void
imap_parse_free(struct imap_parser **pp)
{
	struct imap_parser *p;

	if (pp == NULL || *pp == NULL)
		return;
	p = *pp;
	arena_free(p);
	free(p->stack);
	free(p);
	*pp = NULL;
}

void
imap_parse_reset(struct imap_parser *p)
{
	arena_free(p);
	p->state = IMAP_PARSE_ST_LINE;
	p->failed = false;
	p->err = NULL;
	memset(&p->cmd, 0, sizeof(p->cmd));
	p->tag = NULL;
	p->name = NULL;
	memset(&p->root, 0, sizeof(p->root));
	p->root.type = IMAP_ARG_LIST;
	memset(&p->stack[0], 0, sizeof(p->stack[0]));
	p->stack[0].node = &p->root;
	p->depth = 0;
	p->in_section = false;
	p->need_sep = false;
	p->nargs = 0;
	p->nliterals = 0;
	p->literal_bytes = 0;
	p->command_bytes = 0;
	p->scan_pos = 0;
	memset(&p->lit, 0, sizeof(p->lit));
	p->lit_got = 0;
	p->lit_begun = p->lit_external = p->lit_discard = false;
	p->lit_arg = NULL;
	p->lit_buf = NULL;
}

void
imap_parse_set_utf8(struct imap_parser *p, bool on)
{
	p->utf8 = on;
}

enum imap_parse_state
imap_parse_state(const struct imap_parser *p)
{
	return p->state;
}

bool
imap_parse_failed(const struct imap_parser *p)
{
	return p->failed;
}

const char *
imap_parse_error(const struct imap_parser *p)
{
	return p->err != NULL ? p->err : "no error";
}

const char *
imap_parse_tag(const struct imap_parser *p)
{
	return p->tag;
}

const char *
imap_parse_name(const struct imap_parser *p)
{
	return p->name;
}

const struct imap_command *
imap_parse_command(const struct imap_parser *p)
{
	struct imap_parser *mp = (struct imap_parser *)p;

	if (p->failed || (p->state != IMAP_PARSE_ST_DONE &&
	    p->state != IMAP_PARSE_ST_LITERAL))
		return NULL;
	mp->cmd.tag = p->tag;
	mp->cmd.name = p->name;
	mp->cmd.args = p->root.list;
	mp->cmd.nargs = p->root.len;
	return &p->cmd;
}

static int
fail(struct imap_parser *p, int code, const char *msg)
{
	p->err = msg;
	p->failed = true;
	return code;
}

static struct imap_arg *
add_arg(struct imap_parser *p, enum imap_arg_type type)
{
	struct imap_arg *parent = p->stack[p->depth].node;
	struct imap_arg *a;

	if (p->nargs >= p->lim.max_args)
		return NULL;
	p->nargs++;
	a = arena_alloc(p, sizeof(*a));
	memset(a, 0, sizeof(*a));
	a->type = type;
	if (parent->tail_ != NULL)
		parent->tail_->next = a;
	else
		parent->list = a;
	parent->tail_ = a;
	parent->len++;
	return a;
}

static int
push(struct imap_parser *p, struct imap_arg *list, struct imap_arg *atom, size_t start)
{
	struct frame *f;

	if (p->depth >= p->lim.max_depth)
		return fail(p, IMAP_PARSE_ERR_TOO_DEEP, "lists nested too deeply");
	f = &p->stack[++p->depth];
	f->node = list;
	f->atom = atom;
	f->start = start;
	f->section = atom != NULL;
	if (f->section)
		p->in_section = true;
	return 0;
}

/* ASTRING-CHAR minus '+' (RFC 9051 tag). */
static bool
tag_char(unsigned char c)
{
	if (c <= 0x20 || c >= 0x7f)
		return false;
	return strchr("(){%*\"\\+", c) == NULL;
}

/*
 * Bytes our tokenizer takes into an atom: wider than ATOM-CHAR so flags,
 * sequence sets, list patterns and astring's ']' fit; inside a section ']'
 * closes it instead.
 */
static bool
atom_char(unsigned char c, bool in_section)
{
	if (c <= 0x20 || c >= 0x7f)
		return false;
	switch (c) {
	case '(':
	case ')':
	case '{':
	case '"':
		return false;
	case ']':
		return !in_section;
	default:
		return true;
	}
}

static bool
section_name(const char *s, size_t n)
{
	static const char *const names[] = {
		"BODY", "BODY.PEEK", "BINARY", "BINARY.PEEK", "BINARY.SIZE",
	};
	size_t i;

	for (i = 0; i < ARRAY_LEN(names); i++)
		if (strlen(names[i]) == n && strncasecmp(s, names[i], n) == 0)
			return true;
	return false;
}

/* Decimal digits at line[*pos]; at least one; value <= max. */
static int
digits(const char *line, size_t n, size_t *pos, uint64_t max, uint64_t *v_r)
{
	uint64_t v = 0;
	size_t i = *pos;

	if (i >= n || line[i] < '0' || line[i] > '9')
		return -1;
	for (; i < n && line[i] >= '0' && line[i] <= '9'; i++) {
		unsigned d = (unsigned)(line[i] - '0');

		if (v > (max - d) / 10)
			return -1;
		v = v * 10 + d;
	}
	*pos = i;
	*v_r = v;
	return 0;
}

static int
parse_quoted(struct imap_parser *p, const char *line, size_t n, size_t *pos)
{
	size_t i = *pos + 1, start = i, olen = 0;
	bool eightbit = false;
	struct imap_arg *a;
	char *out;

	for (;; i++) {
		unsigned char c;

		if (i >= n)
			return fail(p, IMAP_PARSE_ERR_SYNTAX, "unterminated quoted string");
		c = (unsigned char)line[i];
		if (c == '"')
			break;
		if (c == '\\') {
			i++;
			if (i >= n || (line[i] != '"' && line[i] != '\\'))
				return fail(p, IMAP_PARSE_ERR_SYNTAX,
				    "bad escape in quoted string (only \\\" and \\\\)");
		} else if (c == 0 || c == '\r' || c == '\n') {
			return fail(p, IMAP_PARSE_ERR_SYNTAX, "invalid character in quoted string");
		} else if (c >= 0x80) {
			if (!p->utf8)
				return fail(p, IMAP_PARSE_ERR_SYNTAX,
				    "8-bit character in quoted string without UTF8=ACCEPT");
			eightbit = true;
		}
		olen++;
	}
	if ((a = add_arg(p, IMAP_ARG_QUOTED)) == NULL)
		return fail(p, IMAP_PARSE_ERR_TOO_MANY_ARGS, "too many arguments");
	out = arena_alloc(p, olen + 1);
	olen = 0;
	for (size_t j = start; j < i; j++) {
		if (line[j] == '\\')
			j++;
		out[olen++] = line[j];
	}
	out[olen] = '\0';
	if (eightbit && !imap_utf8_valid(out, olen))
		return fail(p, IMAP_PARSE_ERR_SYNTAX, "invalid UTF-8 in quoted string");
	a->str = out;
	a->len = olen;
	*pos = i + 1;
	return 0;
}

/* "{" or "~{" at line[*pos]: a literal announcement, which must end the line. */
static int
parse_literal_announce(struct imap_parser *p, const char *line, size_t n, size_t *pos)
{
	size_t i = *pos;
	bool binary = false, sync = true;
	uint64_t size;
	struct imap_arg *a;

	if (line[i] == '~') {
		binary = true;
		i++;
	}
	i++; /* '{' */
	if (digits(line, n, &i, INT64_MAX, &size) < 0)
		return fail(p, IMAP_PARSE_ERR_SYNTAX, "bad literal size");
	if (i < n && line[i] == '+') {
		sync = false;
		i++;
	}
	if (i >= n || line[i] != '}')
		return fail(p, IMAP_PARSE_ERR_SYNTAX, "bad literal announcement");
	i++;
	if (i != n)
		return fail(p, IMAP_PARSE_ERR_SYNTAX, "literal announcement must end the line");
	if (p->in_section)
		return fail(p, IMAP_PARSE_ERR_SYNTAX, "literal inside a section");
	if (p->nliterals >= p->lim.max_literals)
		return fail(p, IMAP_PARSE_ERR_TOO_MANY_LITERALS, "too many literals");
	if ((a = add_arg(p, IMAP_ARG_LITERAL)) == NULL)
		return fail(p, IMAP_PARSE_ERR_TOO_MANY_ARGS, "too many arguments");
	a->binary = binary;
	a->literal_index = (unsigned)p->nliterals++;
	a->str = "";
	p->lit.size = size;
	p->lit.sync = sync;
	p->lit.binary = binary;
	p->lit_arg = a;
	*pos = i;
	return 0;
}

/* ']' at line[*pos] closes the section on top of the stack. */
static int
close_section(struct imap_parser *p, const char *line, size_t n, size_t *pos)
{
	struct frame *f = &p->stack[p->depth];
	struct imap_arg *a = f->atom;
	size_t i = *pos + 1;

	if (i < n && line[i] == '<') {
		i++;
		if (digits(line, n, &i, INT64_MAX, &a->partial_offset) < 0 ||
		    i >= n || line[i] != '.')
			return fail(p, IMAP_PARSE_ERR_SYNTAX, "bad partial <offset.count>");
		i++;
		if (digits(line, n, &i, INT64_MAX, &a->partial_count) < 0 ||
		    a->partial_count == 0 || i >= n || line[i] != '>')
			return fail(p, IMAP_PARSE_ERR_SYNTAX, "bad partial <offset.count>");
		i++;
		a->has_partial = true;
	}
	a->str = arena_strndup(p, line + f->start, i - f->start);
	a->len = i - f->start;
	p->depth--;
	p->in_section = false;
	p->need_sep = true;
	*pos = i;
	return 0;
}

static int
parse_atom(struct imap_parser *p, const char *line, size_t n, size_t *pos)
{
	bool in_section = p->in_section;
	size_t start = *pos, i = start;
	struct imap_arg *a, *sec;

	while (i < n && atom_char((unsigned char)line[i], in_section)) {
		if (line[i] == '[' && !in_section && section_name(line + start, i - start))
			break;
		i++;
	}
	if (i == start) {
		unsigned char c = (unsigned char)line[i];

		if (c >= 0x80)
			return fail(p, IMAP_PARSE_ERR_SYNTAX, "8-bit character outside quoted string");
		return fail(p, IMAP_PARSE_ERR_SYNTAX, "unexpected character");
	}
	if (i < n && line[i] == '[' && !in_section) {
		if ((a = add_arg(p, IMAP_ARG_ATOM)) == NULL)
			return fail(p, IMAP_PARSE_ERR_TOO_MANY_ARGS, "too many arguments");
		a->name_len = i - start;
		sec = arena_alloc(p, sizeof(*sec));
		memset(sec, 0, sizeof(*sec));
		sec->type = IMAP_ARG_LIST;
		a->section = sec;
		if (push(p, sec, a, start) < 0)
			return IMAP_PARSE_ERR_TOO_DEEP;
		*pos = i + 1;
		p->need_sep = false;
		return 0;
	}
	if (i - start == 3 && strncasecmp(line + start, "NIL", 3) == 0)
		a = add_arg(p, IMAP_ARG_NIL);
	else
		a = add_arg(p, IMAP_ARG_ATOM);
	if (a == NULL)
		return fail(p, IMAP_PARSE_ERR_TOO_MANY_ARGS, "too many arguments");
	a->str = arena_strndup(p, line + start, i - start);
	a->len = i - start;
	*pos = i;
	p->need_sep = true;
	return 0;
}

/*
 * Parse arguments in line[pos..n). Returns 1 when the line ends with a
 * literal announcement, 0 when the command ends here, or an error.
 */
static int
parse_args(struct imap_parser *p, const char *line, size_t n, size_t pos)
{
	bool after_sp = false;
	int r;

	for (;;) {
		struct frame *top = &p->stack[p->depth];
		char c;

		if (pos == n) {
			if (after_sp)
				return fail(p, IMAP_PARSE_ERR_SYNTAX, "space at end of line");
			if (p->depth > 0)
				return fail(p, IMAP_PARSE_ERR_SYNTAX,
				    top->section ? "missing ']'" : "missing ')'");
			return 0;
		}
		c = line[pos];
		if (!after_sp) {
			if (c == ')' && p->depth > 0 && !top->section) {
				p->depth--;
				p->need_sep = true;
				pos++;
				continue;
			}
			if (c == ']' && top->section) {
				if ((r = close_section(p, line, n, &pos)) < 0)
					return r;
				continue;
			}
			if (p->need_sep) {
				if ((unsigned char)c >= 0x80)
					return fail(p, IMAP_PARSE_ERR_SYNTAX,
					    "8-bit character outside quoted string");
				if (c != ' ')
					return fail(p, IMAP_PARSE_ERR_SYNTAX, "expected space");
				pos++;
				p->need_sep = false;
				after_sp = true;
				continue;
			}
		}
		after_sp = false;
		switch (c) {
		case '(': {
			struct imap_arg *a = add_arg(p, IMAP_ARG_LIST);

			if (a == NULL)
				return fail(p, IMAP_PARSE_ERR_TOO_MANY_ARGS, "too many arguments");
			if ((r = push(p, a, NULL, 0)) < 0)
				return r;
			pos++;
			p->need_sep = false;
			break;
		}
		case '"':
			if ((r = parse_quoted(p, line, n, &pos)) < 0)
				return r;
			p->need_sep = true;
			break;
		case '{':
			if ((r = parse_literal_announce(p, line, n, &pos)) < 0)
				return r;
			return 1;
		case '~':
			if (pos + 1 < n && line[pos + 1] == '{') {
				if ((r = parse_literal_announce(p, line, n, &pos)) < 0)
					return r;
				return 1;
			}
			/* FALLTHROUGH */
		default:
			if ((r = parse_atom(p, line, n, &pos)) < 0)
				return r;
			break;
		}
	}
}

/* The first fragment: tag SP command-name [SP args]. */
static int
parse_first(struct imap_parser *p, const char *line, size_t n)
{
	size_t i = 0, start;

	if (n == 0)
		return fail(p, IMAP_PARSE_ERR_SYNTAX, "empty command line");
	while (i < n && tag_char((unsigned char)line[i]))
		i++;
	if (i == 0)
		return fail(p, IMAP_PARSE_ERR_SYNTAX, "invalid tag");
	if (i == n || line[i] != ' ') {
		/* Only keep a tag a BAD reply can echo safely. */
		if (i == n)
			p->tag = arena_strndup(p, line, i);
		return fail(p, IMAP_PARSE_ERR_SYNTAX, i == n ? "missing command" : "invalid tag");
	}
	p->tag = arena_strndup(p, line, i);
	start = ++i;
	while (i < n && (((line[i] | 0x20) >= 'a' && (line[i] | 0x20) <= 'z') ||
	    (line[i] >= '0' && line[i] <= '9') || line[i] == '-' || line[i] == '_' ||
	    line[i] == '.'))
		i++;
	if (i == start || (i < n && line[i] != ' '))
		return fail(p, IMAP_PARSE_ERR_SYNTAX, "invalid command name");
	p->name = arena_strndup(p, line + start, i - start);
	for (char *s = p->name; *s != '\0'; s++)
		if (*s >= 'a' && *s <= 'z')
			*s = (char)(*s - 'a' + 'A');
	p->need_sep = true;
	return parse_args(p, line, n, i);
}

/* A failed command: delimit the line and a literal announced at its end. */
static int
skip_line(struct imap_parser *p, const char *line, size_t n, size_t total)
{
	size_t j;
	uint64_t size = 0, mul = 1;
	bool sync = true, overflow = false;

	p->state = IMAP_PARSE_ST_FAILED;
	if (n < 3 || line[n - 1] != '}')
		return (int)total;
	j = n - 2;
	if (line[j] == '+') {
		sync = false;
		j--;
	}
	if (line[j] < '0' || line[j] > '9')
		return (int)total;
	while (j > 0 && line[j] >= '0' && line[j] <= '9') {
		uint64_t d = (uint64_t)(line[j] - '0');

		if (d != 0 && (mul == 0 || d > (UINT64_MAX - size) / mul))
			overflow = true;
		else
			size += d * mul;
		mul = mul > UINT64_MAX / 10 ? 0 : mul * 10;
		j--;
	}
	if (line[j] != '{')
		return (int)total;
	if (sync)
		return (int)total; /* the client waits for "+ " that never comes */
	p->state = IMAP_PARSE_ST_LITERAL;
	memset(&p->lit, 0, sizeof(p->lit));
	p->lit.size = overflow ? UINT64_MAX : size;
	p->lit.binary = j > 0 && line[j - 1] == '~';
	p->lit_got = 0;
	p->lit_begun = true;
	p->lit_discard = true;
	p->lit_external = false;
	return (int)total;
}

int64_t
imap_line_end(const char *buf, size_t len, size_t max, size_t *content_len_r)
{
	size_t scan = len < max ? len : max;
	const char *lf = scan > 0 ? memchr(buf, '\n', scan) : NULL; /* buf may be NULL when len is 0 */
	size_t n;

	if (lf == NULL)
		return len >= max ? -1 : 0;
	n = (size_t)(lf - buf);
	if (content_len_r != NULL)
		*content_len_r = n > 0 && buf[n - 1] == '\r' ? n - 1 : n;
	return (int64_t)n + 1;
}

int
imap_parse_fragment(struct imap_parser *p, const char *buf, size_t len)
{
	size_t max = p->lim.max_line, scan_end, total, n;
	const char *lf = NULL;
	int r;

	if (p->state != IMAP_PARSE_ST_LINE) {
		p->err = "parser not expecting a line";
		return IMAP_PARSE_ERR_STATE;
	}
	if (max > INT_MAX)
		max = INT_MAX;
	scan_end = len < max ? len : max;
	if (p->scan_pos < scan_end)
		lf = memchr(buf + p->scan_pos, '\n', scan_end - p->scan_pos);
	if (lf == NULL) {
		if (len >= max) {
			p->state = IMAP_PARSE_ST_FATAL;
			return fail(p, IMAP_PARSE_ERR_LINE_TOO_LONG, "line too long");
		}
		p->scan_pos = scan_end;
		return IMAP_PARSE_NEED_MORE;
	}
	p->scan_pos = 0;
	total = (size_t)(lf - buf) + 1;
	n = total - 1;
	if (n > 0 && buf[n - 1] == '\r')
		n--;
	if (p->failed)
		return skip_line(p, buf, n, total);
	if (total > p->lim.max_command - p->command_bytes ||
	    p->command_bytes > p->lim.max_command)
		return fail(p, IMAP_PARSE_ERR_COMMAND_TOO_LONG, "command too long");
	if (p->tag == NULL || p->name == NULL)
		r = parse_first(p, buf, n);
	else
		r = parse_args(p, buf, n, 0);
	if (r < 0)
		return r;
	p->command_bytes += total;
	p->state = r == 1 ? IMAP_PARSE_ST_LITERAL : IMAP_PARSE_ST_DONE;
	return (int)total;
}

int
imap_parse_literal_info(const struct imap_parser *p, struct imap_literal_info *info_r)
{
	if (p->state != IMAP_PARSE_ST_LITERAL)
		return IMAP_PARSE_ERR_STATE;
	*info_r = p->lit;
	return 1;
}

int
imap_parse_literal_begin(struct imap_parser *p, bool external)
{
	int r = 0;

	if (p->state != IMAP_PARSE_ST_LITERAL || p->lit_begun) {
		p->err = "parser not expecting a literal";
		return IMAP_PARSE_ERR_STATE;
	}
	p->lit_begun = true;
	if (p->failed) {
		p->lit_discard = true;
		return 0;
	}
	if (external) {
		p->lit_external = true;
		p->lit_arg->type = IMAP_ARG_LITERAL_EXT;
		p->lit_arg->str = NULL;
		p->lit_arg->len = (size_t)p->lit.size;
		return 0;
	}
	if (p->lit.size > p->lim.max_literal)
		r = fail(p, IMAP_PARSE_ERR_LITERAL_TOO_BIG, "literal too big");
	else if (p->lit.size > p->lim.max_literal_total - p->literal_bytes)
		r = fail(p, IMAP_PARSE_ERR_LITERALS_TOO_BIG, "literals too big in total");
	if (r < 0) {
		if (p->lit.sync)
			p->state = IMAP_PARSE_ST_FAILED;
		else
			p->lit_discard = true;
		return r;
	}
	p->literal_bytes += (size_t)p->lit.size;
	p->lit_buf = arena_alloc(p, (size_t)p->lit.size + 1);
	p->lit_buf[p->lit.size] = '\0';
	p->lit_arg->str = p->lit_buf;
	p->lit_arg->len = (size_t)p->lit.size;
	return 0;
}

static void
literal_done(struct imap_parser *p)
{
	p->state = IMAP_PARSE_ST_LINE;
	p->need_sep = true;
	p->lit_got = 0;
	p->lit_begun = p->lit_external = p->lit_discard = false;
	p->lit_arg = NULL;
	p->lit_buf = NULL;
	p->scan_pos = 0;
}

int
imap_parse_literal(struct imap_parser *p, const char *data, size_t len)
{
	uint64_t rest;
	size_t k;
	int r;

	if (p->state != IMAP_PARSE_ST_LITERAL) {
		p->err = "parser not expecting a literal";
		return IMAP_PARSE_ERR_STATE;
	}
	if (!p->lit_begun && (r = imap_parse_literal_begin(p, false)) < 0)
		return r;
	if (p->lit_external && !p->lit_discard) {
		p->err = "literal is external";
		return IMAP_PARSE_ERR_STATE;
	}
	rest = p->lit.size - p->lit_got;
	k = len < rest ? len : (size_t)rest;
	if (k > INT_MAX)
		k = INT_MAX;
	if (!p->lit_discard) {
		if (!p->lit.binary && k > 0 && memchr(data, '\0', k) != NULL) {
			p->lit_discard = true;
			return fail(p, IMAP_PARSE_ERR_SYNTAX,
			    "NUL in literal (only allowed in literal8)");
		}
		if (k > 0)
			memcpy(p->lit_buf + p->lit_got, data, k);
	}
	p->lit_got += k;
	if (p->lit_got == p->lit.size)
		literal_done(p);
	return (int)k;
}

int64_t
imap_parse_literal_external(struct imap_parser *p, uint64_t n)
{
	uint64_t rest;
	int r;

	if (p->state != IMAP_PARSE_ST_LITERAL) {
		p->err = "parser not expecting a literal";
		return IMAP_PARSE_ERR_STATE;
	}
	if (!p->lit_begun && (r = imap_parse_literal_begin(p, true)) < 0)
		return r;
	if (!p->lit_external && !p->lit_discard) {
		p->err = "literal is not external";
		return IMAP_PARSE_ERR_STATE;
	}
	rest = p->lit.size - p->lit_got;
	if (n > rest)
		n = rest;
	if (n > INT64_MAX)
		n = INT64_MAX;
	p->lit_got += n;
	if (p->lit_got == p->lit.size)
		literal_done(p);
	return (int64_t)n;
}

/* Argument accessors. */

void
imap_args_init(struct imap_args *a, const struct imap_arg *first)
{
	a->next = first;
	a->err = NULL;
}

const struct imap_arg *
imap_args_peek(const struct imap_args *a)
{
	return a->next;
}

static int
args_err(struct imap_args *a, const char *msg)
{
	a->err = a->next == NULL ? "missing argument" : msg;
	return IMAP_PARSE_ERR_SYNTAX;
}

int
imap_args_any(struct imap_args *a, const struct imap_arg **arg_r)
{
	if (a->next == NULL)
		return args_err(a, "missing argument");
	*arg_r = a->next;
	a->next = a->next->next;
	return 1;
}

static int
take_str(struct imap_args *a, const char **s_r, size_t *len_r)
{
	*s_r = a->next->str;
	if (len_r != NULL)
		*len_r = a->next->len;
	a->next = a->next->next;
	return 1;
}

int
imap_args_astring(struct imap_args *a, const char **s_r, size_t *len_r)
{
	const struct imap_arg *g = a->next;

	if (g == NULL || g->type == IMAP_ARG_LIST || g->type == IMAP_ARG_LITERAL_EXT ||
	    (g->type == IMAP_ARG_LITERAL && g->binary) ||
	    (g->type == IMAP_ARG_ATOM && g->section != NULL))
		return args_err(a, "expected astring");
	return take_str(a, s_r, len_r);
}

int
imap_args_string(struct imap_args *a, const char **s_r, size_t *len_r)
{
	const struct imap_arg *g = a->next;

	if (g == NULL || !(g->type == IMAP_ARG_QUOTED ||
	    (g->type == IMAP_ARG_LITERAL && !g->binary)))
		return args_err(a, "expected string");
	return take_str(a, s_r, len_r);
}

int
imap_args_nstring(struct imap_args *a, const char **s_r, size_t *len_r)
{
	if (a->next != NULL && a->next->type == IMAP_ARG_NIL) {
		*s_r = NULL;
		if (len_r != NULL)
			*len_r = 0;
		a->next = a->next->next;
		return 1;
	}
	if (imap_args_string(a, s_r, len_r) < 0)
		return args_err(a, "expected string or NIL");
	return 1;
}

int
imap_args_atom(struct imap_args *a, const char **s_r, size_t *len_r)
{
	if (a->next == NULL || a->next->type != IMAP_ARG_ATOM)
		return args_err(a, "expected atom");
	return take_str(a, s_r, len_r);
}

int
imap_args_keyword(struct imap_args *a, const char *word)
{
	const struct imap_arg *g = a->next;

	if (g == NULL || (g->type != IMAP_ARG_ATOM && g->type != IMAP_ARG_NIL) ||
	    g->section != NULL || strlen(word) != g->len || strcasecmp(g->str, word) != 0)
		return 0;
	a->next = g->next;
	return 1;
}

static int
args_num(struct imap_args *a, uint64_t max, uint64_t *v_r, const char *msg)
{
	const struct imap_arg *g = a->next;
	size_t pos = 0;

	if (g == NULL || g->type != IMAP_ARG_ATOM || g->section != NULL ||
	    digits(g->str, g->len, &pos, max, v_r) < 0 || pos != g->len)
		return args_err(a, msg);
	a->next = g->next;
	return 1;
}

int
imap_args_number(struct imap_args *a, uint32_t *v_r)
{
	uint64_t v;

	if (args_num(a, UINT32_MAX, &v, "expected number") < 0)
		return IMAP_PARSE_ERR_SYNTAX;
	*v_r = (uint32_t)v;
	return 1;
}

int
imap_args_number64(struct imap_args *a, uint64_t *v_r)
{
	return args_num(a, INT64_MAX, v_r, "expected number");
}

int
imap_args_nz_number(struct imap_args *a, uint32_t *v_r)
{
	const struct imap_arg *g = a->next;
	uint64_t v;

	if (args_num(a, UINT32_MAX, &v, "expected non-zero number") < 0)
		return IMAP_PARSE_ERR_SYNTAX;
	if (v == 0) {
		a->next = g;
		return args_err(a, "expected non-zero number");
	}
	*v_r = (uint32_t)v;
	return 1;
}

int
imap_args_list(struct imap_args *a, struct imap_args *sub_r)
{
	if (a->next == NULL || a->next->type != IMAP_ARG_LIST)
		return args_err(a, "expected list");
	imap_args_init(sub_r, a->next->list);
	a->next = a->next->next;
	return 1;
}

int
imap_args_mailbox(struct imap_args *a, bool utf8, struct mbuf *out)
{
	struct imap_args save = *a;
	const char *s, *err;
	size_t len;

	if (imap_args_astring(a, &s, &len) < 0)
		return args_err(a, "expected mailbox name");
	mbuf_reset(out);
	if (len == 5 && strncasecmp(s, "INBOX", 5) == 0) {
		if (mbuf_adds(out, "INBOX") < 0)
			goto toolong;
		return 1;
	}
	if (utf8) {
		if (memchr(s, '\0', len) != NULL || !imap_utf8_valid(s, len)) {
			*a = save;
			a->err = "mailbox name is not valid UTF-8";
			return IMAP_PARSE_ERR_SYNTAX;
		}
		if (mbuf_add(out, s, len) < 0)
			goto toolong;
		return 1;
	}
	if (imap_utf7_decode(s, len, out, &err) < 0) {
		*a = save;
		a->err = err;
		return IMAP_PARSE_ERR_SYNTAX;
	}
	return 1;
toolong:
	*a = save;
	a->err = "mailbox name too long";
	return IMAP_PARSE_ERR_SYNTAX;
}

int
imap_args_seqset(struct imap_args *a, struct imap_seqset *set_r)
{
	const struct imap_arg *g = a->next;
	const char *err;

	memset(set_r, 0, sizeof(*set_r));
	if (g == NULL || g->type != IMAP_ARG_ATOM || g->section != NULL)
		return args_err(a, "expected sequence set");
	if (imap_seqset_parse(g->str, g->len, IMAP_SEQSET_MAX_RANGES, set_r, &err) < 0) {
		imap_seqset_clear(set_r);
		a->err = err;
		return IMAP_PARSE_ERR_SYNTAX;
	}
	a->next = g->next;
	return 1;
}

int
imap_args_end(struct imap_args *a)
{
	if (a->next != NULL) {
		a->err = "unexpected extra arguments";
		return IMAP_PARSE_ERR_SYNTAX;
	}
	return 1;
}

/* Output quoting. */

static bool
astring_char(unsigned char c)
{
	if (c <= 0x20 || c >= 0x7f)
		return false;
	return strchr("(){%*\"\\", c) == NULL;
}

int
imap_quote(struct mbuf *b, const char *s, size_t len, unsigned flags)
{
	bool atom = (flags & IMAP_QUOTE_ATOM) != 0 && len > 0;
	bool quotable = len <= 1024, eightbit = false, nul = false;
	size_t i;

	if (s == NULL)
		return mbuf_adds(b, "NIL");
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		/* No '[': "BODY[" would read back as a FETCH section. */
		if (!astring_char(c) || c == '[')
			atom = false;
		if (c == 0)
			nul = true;
		if (c == 0 || c == '\r' || c == '\n')
			quotable = false;
		if (c >= 0x80)
			eightbit = true;
	}
	if (atom && !(len == 3 && strncasecmp(s, "NIL", 3) == 0))
		return mbuf_add(b, s, len);
	if (eightbit && ((flags & IMAP_QUOTE_UTF8) == 0 || !imap_utf8_valid(s, len)))
		quotable = false;
	if (quotable) {
		size_t start = 0;

		if (mbuf_add(b, "\"", 1) < 0)
			return -1;
		for (i = 0; i < len; i++) {
			if (s[i] != '"' && s[i] != '\\')
				continue;
			if (mbuf_add(b, s + start, i - start) < 0 || mbuf_add(b, "\\", 1) < 0)
				return -1;
			start = i;
		}
		if (mbuf_add(b, s + start, len - start) < 0 || mbuf_add(b, "\"", 1) < 0)
			return -1;
		return 0;
	}
	if (mbuf_printf(b, "%s{%zu}\r\n", nul ? "~" : "", len) < 0)
		return -1;
	return mbuf_add(b, s, len);
}
