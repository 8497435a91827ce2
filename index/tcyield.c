/*
 * tcyield: Tokyo Cabinet's test yields, turned off.
 *
 * Debian builds Tokyo Cabinet with --enable-devel, which compiles in the
 * yields meant to shake out races in TC's own tests: a global counter that
 * most internal calls bump, and a sched_yield() each time it passes a
 * multiple of 32 or 256 (tcmapiternext alone bumps it five times). At
 * every transaction begin and commit tcbdbmemsync walks each cached leaf and
 * node with tcmapiternext, and a SELECT walks every record of the mailbox:
 * one delivery made hundreds of sched_yield calls, each a switch to another
 * runnable thread (the event loop, the sync threads) in the middle of the
 * storage thread's critical path.
 *
 * This definition of sched_yield, in the executable, is the one TC's calls
 * bind to (the linker exports it because libtokyocabinet refers to it). A
 * call from TC's code returns at once; any other caller yields as asked.
 * sched_yield is only a hint (POSIX): returning at once is a valid answer.
 */
#define _GNU_SOURCE 1
#include <link.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static pthread_once_t tc_once = PTHREAD_ONCE_INIT;
static uintptr_t tc_start, tc_end; /* TC's executable segment */

/* The loaded libtokyocabinet by name: in a non-PIE executable &tcbdbnew is its PLT stub. */
static int find_tc(struct dl_phdr_info *info, size_t size, void *arg)
{
	if (info->dlpi_name == NULL || strstr(info->dlpi_name, "libtokyocabinet") == NULL)
		return 0;
	for (int i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		uintptr_t start = info->dlpi_addr + ph->p_vaddr;

		if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_X))
			continue;
		tc_start = start;
		tc_end = start + ph->p_memsz;
		return 1;
	}
	return 0;
}

static void tc_range(void)
{
	(void)dl_iterate_phdr(find_tc, NULL);
}

int sched_yield(void)
{
	uintptr_t caller = (uintptr_t)__builtin_return_address(0);

	pthread_once(&tc_once, tc_range);
	if (caller >= tc_start && caller < tc_end)
		return 0;
	return (int)syscall(SYS_sched_yield);
}
