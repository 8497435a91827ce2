/*
 * cfg: a schema-driven YAML loader. A table of fields (name, type, offset,
 * default, documentation) describes a C struct; cfg_parse fills the struct from
 * a YAML buffer, and cfg_describe prints an annotated example from the same
 * table, so loading, defaults and documentation can never drift apart.
 * Owns: type conversion (libyaml types nothing), rejection of unknown and
 * duplicate keys, aliases/anchors and wrong types, with file:line:col errors.
 * Does not know what any key means: config.c holds the schemas and the checks
 * that span keys or files.
 */
#ifndef MOX_CFG_H
#define MOX_CFG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "daemon/util.h"

enum cfg_type {
	CFG_STRING,    /* char *, NULL when absent and no default */
	CFG_INT,       /* long long, within [min, max] */
	CFG_SIZE,      /* long long bytes; accepts suffixes k, m, g (powers of 1024), e.g. 10m */
	CFG_DURATION,  /* long long milliseconds; accepts 500ms, 30s, 5m, 2h, 1d */
	CFG_BOOL,      /* bool; true/false */
	CFG_STRLIST,   /* struct cfg_strlist */
	CFG_STRMAP,    /* struct cfg_strmap: mapping of string to string */
	CFG_STRUCT,    /* embedded struct described by sub */
	CFG_STRUCTMAP, /* struct cfg_array of sub structs; each item's first member is char *name, the key */
	CFG_STRUCTLIST,/* struct cfg_array of sub structs */
};

#define CFG_REQUIRED 0x1 /* the key must be present */

struct cfg_strlist {
	char **v;
	size_t n;
};

struct cfg_strmap {
	char **keys;
	char **vals;
	size_t n;
};

struct cfg_array {
	void *v; /* n items of the sub schema's size */
	size_t n;
};

/* Where a value came from, for errors found after parsing. */
struct cfg_mark {
	const char *file;
	int line;
	int col;
};

struct cfg_schema;

struct cfg_field {
	const char *key;
	enum cfg_type type;
	size_t offset;
	const struct cfg_schema *sub;
	const char *def;   /* default value as YAML text, NULL: none */
	long long min, max; /* for CFG_INT/SIZE/DURATION; both 0 means no range check */
	unsigned flags;
	const char *doc;   /* one or more lines, shown by cfg_describe */
	const char *example; /* example value for cfg_describe when def is NULL */
	size_t mark_offset; /* if non-zero: offset of a struct cfg_mark filled with the value's position */
};

struct cfg_schema {
	const char *name;
	size_t size;
	const struct cfg_field *fields;
	size_t nfields;
	/* For STRUCTMAP items: documentation of the key and an example key. */
	const char *keydoc;
	const char *keyexample;
};

#define CFG_FIELDS(arr) (arr), ARRAY_LEN(arr)

/* Parse limits: the config is trusted less than code but more than clients. */
#define CFG_MAX_INPUT (4u << 20)
#define CFG_MAX_DEPTH 16
#define CFG_MAX_ITEMS 100000

/*
 * Parse YAML in buf[0..len) into out (a zeroed struct of schema->size bytes)
 * using schema. file is used in error messages and marks (not opened; the
 * pointer must outlive the marks). On error returns -1 with err holding
 * "file:line:col: Key.Path: problem"; out may be partly filled and must still
 * be released with cfg_free. Returns 1 on success. Pure: no I/O, no globals.
 */
int cfg_parse(const struct cfg_schema *schema, void *out, const char *buf, size_t len,
    const char *file, char *err, size_t errlen);

/* Apply the schema's defaults to a zeroed struct without any YAML input. */
int cfg_defaults(const struct cfg_schema *schema, void *out, char *err, size_t errlen);

/* Free everything cfg_parse allocated inside out (not out itself). */
void cfg_free(const struct cfg_schema *schema, void *out);

/* Append an annotated example YAML document for schema to b. */
void cfg_describe(const struct cfg_schema *schema, struct mbuf *b);

/* Parse helpers used by cfg_parse, exposed for tests and the config checks. */
int cfg_parse_size(const char *s, long long *v_r);
int cfg_parse_duration(const char *s, long long *ms_r);

#endif
