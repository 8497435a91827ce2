/* Tests for daemon/cfg: every field type, defaults, and each error with its exact text. */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "daemon/cfg.h"

/* ---- a test schema with every type ---- */

struct t_item { /* STRUCTMAP item: first member is the key */
	char *name;
	long long weight;
	char *label;
};

struct t_entry { /* STRUCTLIST item */
	char *host;
	long long port;
	bool tls;
};

struct t_inner {
	char *mode;
	long long level;
	struct cfg_mark level_mark;
};

struct t_top {
	char *name;
	char *greeting;
	long long count;
	long long max_size;
	long long timeout;
	bool verbose;
	bool enabled;
	struct cfg_strlist tags;
	struct cfg_strmap env;
	struct t_inner inner;
	struct cfg_array items;   /* struct t_item */
	struct cfg_array entries; /* struct t_entry */
	struct cfg_mark count_mark;
};

#define OFF(t, m) offsetof(t, m)

static const struct cfg_field item_fields[] = {
	{.key = "Weight", .type = CFG_INT, .offset = OFF(struct t_item, weight), .flags = CFG_REQUIRED,
	    .example = "3", .doc = "Weight of the item."},
	{.key = "Label", .type = CFG_STRING, .offset = OFF(struct t_item, label), .def = "none",
	    .doc = "A label."},
};
static const struct cfg_schema item_schema = {"Item", sizeof(struct t_item), CFG_FIELDS(item_fields),
	"Item name.", "first"};

static const struct cfg_field entry_fields[] = {
	{.key = "Host", .type = CFG_STRING, .offset = OFF(struct t_entry, host), .flags = CFG_REQUIRED,
	    .example = "mail.example.org", .doc = "Host name."},
	{.key = "Port", .type = CFG_INT, .offset = OFF(struct t_entry, port), .def = "25", .min = 1, .max = 65535,
	    .doc = "Port."},
	{.key = "TLS", .type = CFG_BOOL, .offset = OFF(struct t_entry, tls), .def = "true", .doc = "Use TLS."},
};
static const struct cfg_schema entry_schema = {"Entry", sizeof(struct t_entry), CFG_FIELDS(entry_fields), NULL, NULL};

static const struct cfg_field inner_fields[] = {
	{.key = "Mode", .type = CFG_STRING, .offset = OFF(struct t_inner, mode), .def = "fast", .doc = "Mode."},
	{.key = "Level", .type = CFG_INT, .offset = OFF(struct t_inner, level), .def = "2", .min = 0, .max = 9,
	    .mark_offset = OFF(struct t_inner, level_mark), .doc = "Level,\non two lines."},
};
static const struct cfg_schema inner_schema = {"Inner", sizeof(struct t_inner), CFG_FIELDS(inner_fields), NULL, NULL};

static const struct cfg_field top_fields[] = {
	{.key = "Name", .type = CFG_STRING, .offset = OFF(struct t_top, name), .flags = CFG_REQUIRED,
	    .example = "test: name", .doc = "Required name."},
	{.key = "Greeting", .type = CFG_STRING, .offset = OFF(struct t_top, greeting), .def = "hello world",
	    .doc = "Greeting."},
	{.key = "Count", .type = CFG_INT, .offset = OFF(struct t_top, count), .def = "10", .min = 1, .max = 100,
	    .mark_offset = OFF(struct t_top, count_mark), .doc = "Count, 1..100."},
	{.key = "MaxSize", .type = CFG_SIZE, .offset = OFF(struct t_top, max_size), .def = "10m", .doc = "Size."},
	{.key = "Timeout", .type = CFG_DURATION, .offset = OFF(struct t_top, timeout), .def = "30s", .doc = "Timeout."},
	{.key = "Verbose", .type = CFG_BOOL, .offset = OFF(struct t_top, verbose), .def = "false", .doc = "Verbose."},
	{.key = "Enabled", .type = CFG_BOOL, .offset = OFF(struct t_top, enabled), .def = "true", .doc = "Enabled."},
	{.key = "Tags", .type = CFG_STRLIST, .offset = OFF(struct t_top, tags), .def = "a,b", .doc = "Tags."},
	{.key = "Env", .type = CFG_STRMAP, .offset = OFF(struct t_top, env), .example = "\"K: 1\": \"#v\"",
	    .doc = "Environment."},
	{.key = "Inner", .type = CFG_STRUCT, .offset = OFF(struct t_top, inner), .sub = &inner_schema,
	    .doc = "Inner struct."},
	{.key = "Items", .type = CFG_STRUCTMAP, .offset = OFF(struct t_top, items), .sub = &item_schema,
	    .doc = "Items by name."},
	{.key = "Entries", .type = CFG_STRUCTLIST, .offset = OFF(struct t_top, entries), .sub = &entry_schema,
	    .doc = "Entries."},
};
static const struct cfg_schema top_schema = {"test", sizeof(struct t_top), CFG_FIELDS(top_fields), NULL, NULL};

/* A schema that nests without end, for the depth limit. */
struct t_node {
	struct cfg_array kids; /* struct t_node */
	char *v;
};
static const struct cfg_schema node_schema;
static const struct cfg_field node_fields[] = {
	{.key = "Kids", .type = CFG_STRUCTLIST, .offset = OFF(struct t_node, kids), .sub = &node_schema},
	{.key = "V", .type = CFG_STRING, .offset = OFF(struct t_node, v)},
};
static const struct cfg_schema node_schema = {"Node", sizeof(struct t_node), CFG_FIELDS(node_fields), NULL, NULL};

/* ---- helpers ---- */

static char err[1024];

static int
parse(const char *yaml, struct t_top *t)
{
	memset(t, 0, sizeof(*t));
	err[0] = '\0';
	return cfg_parse(&top_schema, t, yaml, strlen(yaml), "t.yaml", err, sizeof(err));
}

/* Parsing yaml fails with exactly the message want; everything is freed. */
static void
expect_err_(const char *yaml, size_t len, const char *want, const char *file, int line)
{
	struct t_top t;

	memset(&t, 0, sizeof(t));
	err[0] = '\0';
	if (cfg_parse(&top_schema, &t, yaml, len, "t.yaml", err, sizeof(err)) != -1) {
		cfg_free(&top_schema, &t);
		fail_msg("%s:%d: parse succeeded, expected: %s", file, line, want);
	}
	cfg_free(&top_schema, &t);
	if (strcmp(err, want) != 0)
		fail_msg("%s:%d:\n got: %s\nwant: %s", file, line, err, want);
}
#define expect_err(yaml, want) expect_err_(yaml, strlen(yaml), want, __FILE__, __LINE__)

static const struct t_item *
item(const struct t_top *t, size_t i)
{
	return &((const struct t_item *)t->items.v)[i];
}

static const struct t_entry *
entry(const struct t_top *t, size_t i)
{
	return &((const struct t_entry *)t->entries.v)[i];
}

/* ---- tests ---- */

static const char full_yaml[] =
	"# a comment\n"
	"Name: full test\n"
	"Greeting: \"quoted: value\"\n"
	"Count: 42\n"
	"MaxSize: 2k\n"
	"Timeout: 500ms\n"
	"Verbose: true\n"
	"Enabled: false\n"
	"Tags:\n"
	"  - x\n"
	"  - 'y z'\n"
	"  - \"\"\n"
	"Env:\n"
	"  PATH: /bin\n"
	"  EMPTY: ''\n"
	"Inner:\n"
	"  Mode: slow\n"
	"  Level: 9\n"
	"Items:\n"
	"  one:\n"
	"    Weight: -7\n"
	"    Label: first\n"
	"  two.with.dots:\n"
	"    Weight: 0\n"
	"Entries:\n"
	"  - Host: a.example\n"
	"    Port: 465\n"
	"    TLS: false\n"
	"  - {Host: b.example}\n";

static void
test_full(void **state)
{
	struct t_top t;

	assert_int_equal(parse(full_yaml, &t), 1);
	assert_string_equal(t.name, "full test");
	assert_string_equal(t.greeting, "quoted: value");
	assert_int_equal(t.count, 42);
	assert_string_equal(t.count_mark.file, "t.yaml");
	assert_int_equal(t.count_mark.line, 4);
	assert_int_equal(t.count_mark.col, 8);
	assert_int_equal(t.max_size, 2048);
	assert_int_equal(t.timeout, 500);
	assert_true(t.verbose);
	assert_false(t.enabled);
	assert_int_equal(t.tags.n, 3);
	assert_string_equal(t.tags.v[0], "x");
	assert_string_equal(t.tags.v[1], "y z");
	assert_string_equal(t.tags.v[2], "");
	assert_int_equal(t.env.n, 2);
	assert_string_equal(t.env.keys[0], "PATH");
	assert_string_equal(t.env.vals[0], "/bin");
	assert_string_equal(t.env.keys[1], "EMPTY");
	assert_string_equal(t.env.vals[1], "");
	assert_string_equal(t.inner.mode, "slow");
	assert_int_equal(t.inner.level, 9);
	assert_int_equal(t.inner.level_mark.line, 18);
	assert_int_equal(t.inner.level_mark.col, 10);
	assert_int_equal(t.items.n, 2);
	assert_string_equal(item(&t, 0)->name, "one");
	assert_int_equal(item(&t, 0)->weight, -7);
	assert_string_equal(item(&t, 0)->label, "first");
	assert_string_equal(item(&t, 1)->name, "two.with.dots");
	assert_int_equal(item(&t, 1)->weight, 0);
	assert_string_equal(item(&t, 1)->label, "none");
	assert_int_equal(t.entries.n, 2);
	assert_string_equal(entry(&t, 0)->host, "a.example");
	assert_int_equal(entry(&t, 0)->port, 465);
	assert_false(entry(&t, 0)->tls);
	assert_string_equal(entry(&t, 1)->host, "b.example");
	assert_int_equal(entry(&t, 1)->port, 25);
	assert_true(entry(&t, 1)->tls);
	cfg_free(&top_schema, &t);
	/* cfg_free leaves the struct empty; a second call is harmless. */
	assert_null(t.name);
	assert_null(t.items.v);
	assert_int_equal(t.tags.n, 0);
	cfg_free(&top_schema, &t);
}

static void
test_defaults(void **state)
{
	struct t_top t;

	assert_int_equal(parse("Name: n\n", &t), 1);
	assert_string_equal(t.greeting, "hello world");
	assert_int_equal(t.count, 10);
	/* A defaulted value is marked at the mapping that lacks its key. */
	assert_int_equal(t.count_mark.line, 1);
	assert_int_equal(t.count_mark.col, 1);
	assert_int_equal(t.max_size, 10LL << 20);
	assert_int_equal(t.timeout, 30000);
	assert_false(t.verbose);
	assert_true(t.enabled);
	assert_int_equal(t.tags.n, 2);
	assert_string_equal(t.tags.v[0], "a");
	assert_string_equal(t.tags.v[1], "b");
	assert_int_equal(t.env.n, 0);
	assert_string_equal(t.inner.mode, "fast");
	assert_int_equal(t.inner.level, 2);
	assert_int_equal(t.items.n, 0);
	assert_int_equal(t.entries.n, 0);
	cfg_free(&top_schema, &t);

	/* Partly given struct: the rest defaults. */
	assert_int_equal(parse("Name: n\nInner:\n  Level: 0\n", &t), 1);
	assert_string_equal(t.inner.mode, "fast");
	assert_int_equal(t.inner.level, 0);
	cfg_free(&top_schema, &t);

	/* cfg_defaults without YAML. */
	memset(&t, 0, sizeof(t));
	assert_int_equal(cfg_defaults(&top_schema, &t, err, sizeof(err)), 1);
	assert_null(t.name);
	assert_int_equal(t.count, 10);
	assert_string_equal(t.inner.mode, "fast");
	assert_int_equal(t.tags.n, 2);
	cfg_free(&top_schema, &t);
}

static void
test_empty_values(void **state)
{
	struct t_top t;

	/* "Key:" with nothing after it: an empty collection, or a struct of defaults. */
	assert_int_equal(parse("Name: n\nTags:\nEnv:\nInner:\nItems:\nEntries:\n", &t), 1);
	assert_int_equal(t.tags.n, 0);
	assert_int_equal(t.env.n, 0);
	assert_string_equal(t.inner.mode, "fast");
	assert_int_equal(t.inner.level, 2);
	assert_int_equal(t.inner.level_mark.line, 4);
	assert_int_equal(t.items.n, 0);
	assert_int_equal(t.entries.n, 0);
	cfg_free(&top_schema, &t);

	/* Flow-style empty collections. */
	assert_int_equal(parse("Name: n\nTags: []\nEnv: {}\nInner: {}\nItems: {}\nEntries: []\n", &t), 1);
	assert_int_equal(t.tags.n, 0);
	assert_int_equal(t.env.n, 0);
	assert_int_equal(t.inner.level, 2);
	cfg_free(&top_schema, &t);

	/* An empty string stays a string. */
	assert_int_equal(parse("Name:\nGreeting: ''\n", &t), 1);
	assert_string_equal(t.name, "");
	assert_string_equal(t.greeting, "");
	cfg_free(&top_schema, &t);

	/* A quoted empty string is not an empty mapping. */
	expect_err("Name: n\nInner: ''\n", "t.yaml:2:8: Inner: expected a mapping");
	/* An empty item still needs its required keys. */
	expect_err("Name: n\nItems:\n  x:\n", "t.yaml:3:5: Items.x: missing required key \"Weight\"");
}

static void
test_sizes_durations(void **state)
{
	struct t_top t;
	long long v;
	static const struct {
		const char *s;
		long long v;
	} sizes[] = {
		{"0", 0}, {"5", 5}, {"1k", 1024}, {"1K", 1024}, {"10m", 10LL << 20}, {"2g", 2LL << 30},
		{"1kb", 1024}, {"3MB", 3LL << 20}, {"8589934591g", 8589934591LL << 30},
	}, durations[] = {
		{"0s", 0}, {"500ms", 500}, {"30s", 30000}, {"5m", 300000}, {"2h", 7200000}, {"1d", 86400000},
	};
	static const char *bad_sizes[] = {"", "k", "-1", "1x", "1kk", "1 k", "1.5m", "0x10", "8589934592000g",
		"99999999999999999999", " 1"};
	static const char *bad_durations[] = {"", "30", "s", "-1s", "1.5s", "1S", "1w", "30 s", "1ms2",
		"999999999999999999d"};

	for (size_t i = 0; i < ARRAY_LEN(sizes); i++) {
		v = -1;
		assert_int_equal(cfg_parse_size(sizes[i].s, &v), 1);
		assert_true(v == sizes[i].v);
	}
	for (size_t i = 0; i < ARRAY_LEN(bad_sizes); i++)
		if (cfg_parse_size(bad_sizes[i], &v) != -1)
			fail_msg("size \"%s\" accepted", bad_sizes[i]);
	for (size_t i = 0; i < ARRAY_LEN(durations); i++) {
		v = -1;
		assert_int_equal(cfg_parse_duration(durations[i].s, &v), 1);
		assert_true(v == durations[i].v);
	}
	for (size_t i = 0; i < ARRAY_LEN(bad_durations); i++)
		if (cfg_parse_duration(bad_durations[i], &v) != -1)
			fail_msg("duration \"%s\" accepted", bad_durations[i]);

	assert_int_equal(parse("Name: n\nMaxSize: 1g\nTimeout: 2h\n", &t), 1);
	assert_int_equal(t.max_size, 1LL << 30);
	assert_int_equal(t.timeout, 7200000);
	cfg_free(&top_schema, &t);
	expect_err("Name: n\nMaxSize: 10q\n", "t.yaml:2:10: MaxSize: expected a size (e.g. 100m), got \"10q\"");
	expect_err("Name: n\nTimeout: 30\n", "t.yaml:2:10: Timeout: expected a duration (e.g. 30s, 5m), got \"30\"");
}

static void
test_required(void **state)
{
	expect_err("Greeting: hi\n", "t.yaml:1:1: missing required key \"Name\"");
	expect_err("", "t.yaml: missing required key \"Name\"");
	expect_err("# only a comment\n", "t.yaml: missing required key \"Name\"");
	expect_err("Name: n\nEntries:\n  - Port: 1\n", "t.yaml:3:5: Entries[0]: missing required key \"Host\"");
	expect_err("Name: n\nItems:\n  a:\n    Label: x\n", "t.yaml:4:5: Items.a: missing required key \"Weight\"");
}

static void
test_unknown_duplicate(void **state)
{
	expect_err("Name: n\nBogus: 1\n",
	    "t.yaml:2:1: unknown key \"Bogus\" (known: Name, Greeting, Count, MaxSize, Timeout, Verbose, Enabled, "
	    "Tags, Env, Inner, Items, Entries)");
	/* Keys are case-sensitive. */
	expect_err("name: n\n",
	    "t.yaml:1:1: unknown key \"name\" (known: Name, Greeting, Count, MaxSize, Timeout, Verbose, Enabled, "
	    "Tags, Env, Inner, Items, Entries)");
	expect_err("Name: n\nInner:\n  Mode: a\n  Levle: 1\n",
	    "t.yaml:4:3: Inner: unknown key \"Levle\" (known: Mode, Level)");
	expect_err("Name: n\nCount: 1\nCount: 2\n", "t.yaml:3:1: duplicate key \"Count\"");
	expect_err("Name: n\nEnv:\n  A: 1\n  A: 2\n", "t.yaml:4:3: Env: duplicate key \"A\"");
	expect_err("Name: n\nItems:\n  a: {Weight: 1}\n  a: {Weight: 2}\n", "t.yaml:4:3: Items: duplicate key \"a\"");
	expect_err("Name: n\nEntries:\n  - {Host: a, Host: b}\n", "t.yaml:3:15: Entries[0]: duplicate key \"Host\"");
}

static void
test_wrong_type(void **state)
{
	/* Quoted numbers and YAML 1.1 booleans are refused. */
	expect_err("Name: n\nCount: \"5\"\n", "t.yaml:2:8: Count: expected an integer, got a quoted string");
	expect_err("Name: n\nCount: '5'\n", "t.yaml:2:8: Count: expected an integer, got a quoted string");
	expect_err("Name: n\nVerbose: yes\n", "t.yaml:2:10: Verbose: expected true or false, got \"yes\"");
	expect_err("Name: n\nVerbose: True\n", "t.yaml:2:10: Verbose: expected true or false, got \"True\"");
	expect_err("Name: n\nVerbose: \"true\"\n", "t.yaml:2:10: Verbose: expected true or false, got a quoted string");
	expect_err("Name: n\nCount: 5x\n", "t.yaml:2:8: Count: expected an integer, got \"5x\"");
	expect_err("Name: n\nCount: 1.0\n", "t.yaml:2:8: Count: expected an integer, got \"1.0\"");
	expect_err("Name: n\nCount:\n", "t.yaml:2:7: Count: expected an integer, got \"\"");
	expect_err("Name: [a]\n", "t.yaml:1:7: Name: expected a string");
	expect_err("Name: {a: b}\n", "t.yaml:1:7: Name: expected a string");
	expect_err("Name: n\nTags: x\n", "t.yaml:2:7: Tags: expected a list of strings");
	expect_err("Name: n\nTags: [[x]]\n", "t.yaml:2:8: Tags[0]: expected a string");
	expect_err("Name: n\nEnv: [a]\n", "t.yaml:2:6: Env: expected a mapping of strings");
	expect_err("Name: n\nEnv: {a: [b]}\n", "t.yaml:2:10: Env.a: expected a string");
	expect_err("Name: n\nInner: [a]\n", "t.yaml:2:8: Inner: expected a mapping");
	expect_err("Name: n\nItems: [a]\n", "t.yaml:2:8: Items: expected a mapping");
	expect_err("Name: n\nItems: {a: [b]}\n", "t.yaml:2:12: Items.a: expected a mapping");
	expect_err("Name: n\nEntries: {a: b}\n", "t.yaml:2:10: Entries: expected a list");
	expect_err("Name: n\nEntries: [a]\n", "t.yaml:2:11: Entries[0]: expected a mapping");
	expect_err("- a\n", "t.yaml:1:1: expected a mapping");
	expect_err("just text\n", "t.yaml:1:1: expected a mapping");
	expect_err("[a]: b\n", "t.yaml:1:1: keys must be strings");
	expect_err("Name: n\nEnv: {[a]: b}\n", "t.yaml:2:7: Env: keys must be strings");
}

static void
test_range(void **state)
{
	struct t_top t;

	expect_err("Name: n\nCount: 101\n", "t.yaml:2:8: Count: value 101 out of range 1..100");
	expect_err("Name: n\nCount: 0\n", "t.yaml:2:8: Count: value 0 out of range 1..100");
	expect_err("Name: n\nCount: -5\n", "t.yaml:2:8: Count: value -5 out of range 1..100");
	expect_err("Name: n\nEntries:\n  - Host: h\n    Port: 65536\n",
	    "t.yaml:4:11: Entries[0].Port: value 65536 out of range 1..65535");
	expect_err("Name: n\nCount: 99999999999999999999\n",
	    "t.yaml:2:8: Count: expected an integer, got \"99999999999999999999\"");
	assert_int_equal(parse("Name: n\nCount: 100\n", &t), 1);
	assert_int_equal(t.count, 100);
	cfg_free(&top_schema, &t);
	assert_int_equal(parse("Name: n\nCount: 1\n", &t), 1);
	assert_int_equal(t.count, 1);
	cfg_free(&top_schema, &t);
}

static void
test_alias_tag(void **state)
{
	expect_err("Name: &a n\nGreeting: *a\n", "t.yaml:1:7: Name: anchors and aliases are not allowed");
	expect_err("Name: n\nInner: &x\n  Mode: a\nItems:\n  k: *x\n",
	    "t.yaml:2:8: Inner: anchors and aliases are not allowed");
	expect_err("Name: n\nTags: &l [a]\n", "t.yaml:2:7: Tags: anchors and aliases are not allowed");
	/* An alias to an undefined anchor is a YAML error. */
	expect_err("Name: *a\n", "t.yaml:1:7: found undefined alias");
	/* Explicit tags, even the ones untagged nodes get. */
	expect_err("Name: !!str n\n", "t.yaml:1:7: Name: explicit tags are not allowed");
	expect_err("Name: n\nCount: !!int 5\n", "t.yaml:2:8: Count: explicit tags are not allowed");
	expect_err("Name: n\nTags: !!seq [a]\n", "t.yaml:2:7: Tags: explicit tags are not allowed");
	expect_err("Name: n\nInner: !!map {Mode: a}\n", "t.yaml:2:8: Inner: explicit tags are not allowed");
	expect_err("Name: n\nTags: [! a]\n", "t.yaml:2:8: Tags[0]: explicit tags are not allowed");
	expect_err("Name: n\nEnv: {!!str k: v}\n", "t.yaml:2:7: Env: explicit tags are not allowed");
	expect_err("!!str Name: n\n", "t.yaml:1:1: explicit tags are not allowed");
	expect_err("--- !!map\nName: n\n", "t.yaml:1:5: explicit tags are not allowed");
	/* On an empty document too. */
	{
		struct t_node n = {0};
		assert_int_equal(cfg_parse(&node_schema, &n, "--- !!str\n", 10, "e.yaml", err, sizeof(err)), -1);
		assert_string_equal(err, "e.yaml:1:5: explicit tags are not allowed");
		assert_int_equal(cfg_parse(&node_schema, &n, "&a\n", 3, "e.yaml", err, sizeof(err)), -1);
		assert_string_equal(err, "e.yaml:1:1: anchors and aliases are not allowed");
		/* Without properties an empty document is all defaults. */
		assert_int_equal(cfg_parse(&node_schema, &n, "---\n", 4, "e.yaml", err, sizeof(err)), 1);
		cfg_free(&node_schema, &n);
	}
	expect_err("Name: n\nInner: !custom\n", "t.yaml:2:8: Inner: explicit tags are not allowed");
}

static void
test_documents_nul(void **state)
{
	static const char nul_file[] = "Name: n\nCount: 1\0\n";

	expect_err("Name: n\n---\nName: m\n", "t.yaml:2:1: more than one YAML document");
	expect_err("---\nName: n\n...\n---\nName: m\n", "t.yaml:4:1: more than one YAML document");
	expect_err_(nul_file, sizeof(nul_file) - 1, "t.yaml:2:9: NUL byte in file", __FILE__, __LINE__);
	/* A NUL written as an escape in a double-quoted string. */
	expect_err("Name: \"a\\0b\"\n", "t.yaml:1:7: Name: NUL byte in value");
	expect_err("Name: n\nEnv: {k: \"a\\0\"}\n", "t.yaml:2:10: Env.k: NUL byte in value");
	expect_err("Name: n\nTags: [\"\\0\"]\n", "t.yaml:2:8: Tags[0]: NUL byte in value");
	expect_err("Name: n\nItems: {\"\\0\": {Weight: 1}}\n", "t.yaml:2:9: Items: NUL byte in value");
}

static void
test_syntax(void **state)
{
	expect_err("Name: n\nCount: [1,\n", "t.yaml:3:1: did not find expected node content while parsing a flow node");
	expect_err("Name: n\n  Count: 1\n", "t.yaml:2:8: mapping values are not allowed in this context");
	expect_err("Name: n\nInner:\n\tMode: x\n",
	    "t.yaml:3:1: found character that cannot start any token while scanning for the next token");
	expect_err("Name: \"unterminated\n",
	    "t.yaml:2:1: found unexpected end of stream while scanning a quoted scalar");
	/* A syntax error in a second document. */
	expect_err("Name: n\n---\n[\n", "t.yaml:4:1: did not find expected node content");
}

static void
test_depth(void **state)
{
	struct t_node n;
	struct mbuf b;
	int r;

	/* Each level adds two path elements (Kids, [0]); 7 levels fit, 8 do not. */
	for (int levels = 1; levels <= 9; levels++) {
		mbuf_init(&b, 4096);
		for (int i = 0; i < levels; i++)
			mbuf_adds(&b, "{Kids: [");
		mbuf_adds(&b, "{V: leaf}");
		for (int i = 0; i < levels; i++)
			mbuf_adds(&b, "]}");
		memset(&n, 0, sizeof(n));
		r = cfg_parse(&node_schema, &n, b.data, b.len, "d.yaml", err, sizeof(err));
		if (levels <= 7) {
			if (r != 1)
				fail_msg("%d levels: %s", levels, err);
			const struct t_node *p = &n;
			for (int i = 0; i < levels; i++) {
				assert_int_equal(p->kids.n, 1);
				p = (const struct t_node *)p->kids.v;
			}
			assert_string_equal(p->v, "leaf");
		} else {
			assert_int_equal(r, -1);
			if (levels == 8)
				assert_string_equal(err, "d.yaml:1:65: Kids[0].Kids[0].Kids[0].Kids[0].Kids[0].Kids[0]."
				    "Kids[0].Kids[0]: nested too deeply");
		}
		cfg_free(&node_schema, &n);
		mbuf_clear(&b);
	}
}

static void
test_dotted_keys(void **state)
{
	struct t_top t;
	static const char yaml[] =
		"Name: n\n"
		"Items:\n"
		"  a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r.s.t:\n"
		"    Weight: 1\n"
		"Env:\n"
		"  a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r.s.t: v\n";

	/* Dots in keys are not nesting. */
	if (parse(yaml, &t) != 1)
		fail_msg("%s", err);
	assert_int_equal(t.items.n, 1);
	assert_int_equal(item(&t, 0)->weight, 1);
	assert_string_equal(t.env.vals[0], "v");
	cfg_free(&top_schema, &t);
	expect_err("Name: n\nItems:\n  a.b:\n    Weight: x\n", "t.yaml:4:13: Items.a.b.Weight: expected an integer, got \"x\"");
}

static void
test_too_large(void **state)
{
	size_t len = CFG_MAX_INPUT + 1;
	char *big = xmalloc(len);

	memset(big, '#', len);
	expect_err_(big, len, "t.yaml: file too large (over 4194304 bytes)", __FILE__, __LINE__);
	free(big);
}

static void
test_partial_free(void **state)
{
	/* Errors late in a document leave allocations behind; cfg_free releases them (sanitizer checks). */
	expect_err("Name: n\nTags: [a, b]\nEnv: {x: y}\nItems: {a: {Weight: 1, Label: l}}\n"
	    "Entries: [{Host: h}, {Host: i, Port: 0}]\n",
	    "t.yaml:5:38: Entries[1].Port: value 0 out of range 1..65535");
	expect_err("Name: n\nItems: {a: {Weight: 1}, b: {Label: x}}\n",
	    "t.yaml:2:28: Items.b: missing required key \"Weight\"");
}

static void
test_describe(void **state)
{
	struct t_top t;
	struct mbuf b;

	mbuf_init(&b, 1 << 20);
	cfg_describe(&top_schema, &b);
	assert_non_null(b.data);
	/* Documentation lines, the type line and the examples. */
	assert_non_null(strstr(b.data, "# Required name.\n# (a string, required)\nName: \"test: name\"\n"));
	assert_non_null(strstr(b.data, "# Count, 1..100.\n# (an integer, optional, default 10)\nCount: 10\n"));
	assert_non_null(strstr(b.data, "  # Level,\n  # on two lines.\n"));
	assert_non_null(strstr(b.data, "Items:\n  # Item name.\n  first:\n"));
	assert_non_null(strstr(b.data, "Entries:\n  -\n"));
	if (parse(b.data, &t) != 1)
		fail_msg("describe output does not parse: %s\n%s", err, b.data);
	/* It parses back to the defaults and examples. */
	assert_string_equal(t.name, "test: name");
	assert_string_equal(t.greeting, "hello world");
	assert_int_equal(t.count, 10);
	assert_int_equal(t.max_size, 10LL << 20);
	assert_int_equal(t.timeout, 30000);
	assert_true(t.enabled);
	assert_int_equal(t.tags.n, 2);
	assert_int_equal(t.env.n, 1);
	assert_string_equal(t.env.keys[0], "K: 1");
	assert_string_equal(t.env.vals[0], "#v");
	assert_int_equal(t.items.n, 1);
	assert_string_equal(item(&t, 0)->name, "first");
	assert_int_equal(item(&t, 0)->weight, 3);
	assert_int_equal(t.entries.n, 1);
	assert_string_equal(entry(&t, 0)->host, "mail.example.org");
	cfg_free(&top_schema, &t);
	mbuf_clear(&b);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_full),
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_empty_values),
		cmocka_unit_test(test_sizes_durations),
		cmocka_unit_test(test_required),
		cmocka_unit_test(test_unknown_duplicate),
		cmocka_unit_test(test_wrong_type),
		cmocka_unit_test(test_range),
		cmocka_unit_test(test_alias_tag),
		cmocka_unit_test(test_documents_nul),
		cmocka_unit_test(test_syntax),
		cmocka_unit_test(test_depth),
		cmocka_unit_test(test_dotted_keys),
		cmocka_unit_test(test_too_large),
		cmocka_unit_test(test_partial_free),
		cmocka_unit_test(test_describe),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
