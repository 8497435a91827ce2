/*
 * Fuzz the schema-driven YAML loader: the input is parsed against a schema
 * with every field type (and a self-nesting list for the depth limit), then
 * freed. A success must leave every required string set; a failure must
 * leave an error message. The whole input, as a string, also goes through
 * the size and duration parsers.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/cfg.h"

struct fz_item {
	char *name;
	long long n;
	char *s;
	struct cfg_strlist l;
};

struct fz_node {
	struct cfg_array kids; /* struct fz_node */
	char *v;
	struct cfg_mark v_mark;
};

struct fz_inner {
	char *req;
	long long size;
	struct cfg_strmap m;
};

struct fz_top {
	char *str;
	long long i;
	long long size;
	long long dur;
	bool b;
	struct cfg_strlist list;
	struct cfg_strmap map;
	struct fz_inner inner;
	struct cfg_array items; /* struct fz_item, STRUCTMAP */
	struct cfg_array nodes; /* struct fz_node, STRUCTLIST */
	struct cfg_mark i_mark;
};

#define OFF(t, m) offsetof(t, m)

static const struct cfg_field item_fields[] = {
	{.key = "N", .type = CFG_INT, .offset = OFF(struct fz_item, n), .flags = CFG_REQUIRED},
	{.key = "S", .type = CFG_STRING, .offset = OFF(struct fz_item, s), .def = "d"},
	{.key = "L", .type = CFG_STRLIST, .offset = OFF(struct fz_item, l), .def = "x,y,z"},
};
static const struct cfg_schema item_schema = {"Item", sizeof(struct fz_item), CFG_FIELDS(item_fields), "k", "k"};

static const struct cfg_schema node_schema;
static const struct cfg_field node_fields[] = {
	{.key = "Kids", .type = CFG_STRUCTLIST, .offset = OFF(struct fz_node, kids), .sub = &node_schema},
	{.key = "V", .type = CFG_STRING, .offset = OFF(struct fz_node, v),
	    .mark_offset = OFF(struct fz_node, v_mark)},
};
static const struct cfg_schema node_schema = {"Node", sizeof(struct fz_node), CFG_FIELDS(node_fields), NULL, NULL};

static const struct cfg_field inner_fields[] = {
	{.key = "Req", .type = CFG_STRING, .offset = OFF(struct fz_inner, req), .flags = CFG_REQUIRED},
	{.key = "Size", .type = CFG_SIZE, .offset = OFF(struct fz_inner, size), .def = "1k", .min = 0, .max = 1LL << 40},
	{.key = "M", .type = CFG_STRMAP, .offset = OFF(struct fz_inner, m)},
};
static const struct cfg_schema inner_schema = {"Inner", sizeof(struct fz_inner), CFG_FIELDS(inner_fields), NULL, NULL};

static const struct cfg_field top_fields[] = {
	{.key = "Str", .type = CFG_STRING, .offset = OFF(struct fz_top, str), .def = "x"},
	{.key = "I", .type = CFG_INT, .offset = OFF(struct fz_top, i), .def = "5", .min = -100, .max = 100,
	    .mark_offset = OFF(struct fz_top, i_mark)},
	{.key = "Size", .type = CFG_SIZE, .offset = OFF(struct fz_top, size), .def = "10m"},
	{.key = "Dur", .type = CFG_DURATION, .offset = OFF(struct fz_top, dur), .def = "30s", .min = 0, .max = 86400000},
	{.key = "B", .type = CFG_BOOL, .offset = OFF(struct fz_top, b), .def = "false"},
	{.key = "List", .type = CFG_STRLIST, .offset = OFF(struct fz_top, list)},
	{.key = "Map", .type = CFG_STRMAP, .offset = OFF(struct fz_top, map)},
	{.key = "Inner", .type = CFG_STRUCT, .offset = OFF(struct fz_top, inner), .sub = &inner_schema},
	{.key = "Items", .type = CFG_STRUCTMAP, .offset = OFF(struct fz_top, items), .sub = &item_schema},
	{.key = "Nodes", .type = CFG_STRUCTLIST, .offset = OFF(struct fz_top, nodes), .sub = &node_schema},
};
static const struct cfg_schema top_schema = {"Top", sizeof(struct fz_top), CFG_FIELDS(top_fields), NULL, NULL};

static void
check_node(const struct fz_node *n)
{
	for (size_t i = 0; i < n->kids.n; i++)
		check_node(&((const struct fz_node *)n->kids.v)[i]);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz_top t;
	char err[512];
	char *s;
	long long v;

	memset(&t, 0, sizeof(t));
	err[0] = '\0';
	if (cfg_parse(&top_schema, &t, (const char *)data, size, "fuzz.yaml", err, sizeof(err)) == 1) {
		if (t.str == NULL || t.i < -100 || t.i > 100 || t.dur < 0 || t.dur > 86400000 || t.size < 0)
			abort();
		for (size_t i = 0; i < t.list.n; i++)
			if (t.list.v[i] == NULL)
				abort();
		for (size_t i = 0; i < t.map.n; i++)
			if (t.map.keys[i] == NULL || t.map.vals[i] == NULL)
				abort();
		for (size_t i = 0; i < t.items.n; i++) {
			const struct fz_item *it = &((const struct fz_item *)t.items.v)[i];
			if (it->name == NULL || it->s == NULL)
				abort();
		}
		for (size_t i = 0; i < t.nodes.n; i++)
			check_node(&((const struct fz_node *)t.nodes.v)[i]);
		if (t.inner.req != NULL && t.inner.size > (1LL << 40))
			abort();
	} else if (err[0] == '\0' || strlen(err) >= sizeof(err)) {
		abort();
	}
	cfg_free(&top_schema, &t);

	s = malloc(size + 1);
	if (s == NULL)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';
	if (cfg_parse_size(s, &v) == 1 && v < 0)
		abort();
	if (cfg_parse_duration(s, &v) == 1 && v < 0)
		abort();
	free(s);
	return 0;
}
