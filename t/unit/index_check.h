/*
 * CHECK(a): assert that idx_check finds the account consistent, printing each
 * problem it reports. For the index unit tests (include after <cmocka.h>).
 */
#ifndef MOX_T_INDEX_CHECK_H
#define MOX_T_INDEX_CHECK_H

#include <stdio.h>

#include "index/index.h"

static void report(void *arg, const char *problem)
{
	int *n = arg;

	(*n)++;
	fprintf(stderr, "  check: %s\n", problem);
}

#define CHECK(a)                                                                              \
	do {                                                                                  \
		char cerr_[256] = "";                                                         \
		int cn_ = 0;                                                                  \
		int cr_ = idx_check((a), report, &cn_, cerr_, sizeof(cerr_));                 \
		if (cr_ != 0)                                                                 \
			fprintf(stderr, "%s:%d: idx_check: %d %s\n", __FILE__, __LINE__, cr_, cerr_); \
		assert_int_equal(cr_, 0);                                                     \
	} while (0)

#endif
