/*
 * Fault injection for the protocol tests, loaded with LD_PRELOAD: fsync and
 * fdatasync fail with EIO for a file whose path contains the string in
 * MOX_FAULT_SYNC_PATH, but only while the file named by MOX_FAULT_SYNC_ON
 * exists, so a test switches the fault on and off while the daemon runs.
 * With MOX_FAULT_SYNC_DELAY_MS set, such a call waits that long and then
 * succeeds instead (a slow disk); it first creates the control file's name
 * plus ".hit", so a test can wait until a delayed call is under way. Every other call goes to the real
 * function. Without both variables the wrappers only forward.
 *
 * Thread-safe: the environment is read once in a constructor (before the
 * daemon starts threads), the real functions are resolved once under
 * pthread_once, and each call otherwise uses only its own stack.
 */
#define _GNU_SOURCE 1
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *fault_path; /* substring of the path to fail; NULL: never */
static const char *fault_on;   /* control file; the fault is active while it exists */
static long fault_delay_ms;    /* > 0: a hit waits this long, then syncs (no error) */
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static pthread_once_t resolve_once = PTHREAD_ONCE_INIT;

/* Read the configuration while the process is still single-threaded. */
__attribute__((constructor)) static void
fault_init(void)
{
	const char *p = getenv("MOX_FAULT_SYNC_PATH");
	const char *on = getenv("MOX_FAULT_SYNC_ON");
	const char *delay = getenv("MOX_FAULT_SYNC_DELAY_MS");

	if (p != NULL && p[0] != '\0' && on != NULL && on[0] != '\0') {
		fault_path = p;
		fault_on = on;
		fault_delay_ms = delay != NULL ? strtol(delay, NULL, 10) : 0;
	}
}

/* Look up the next definitions of the wrapped functions (libc's). */
static void
fault_resolve(void)
{
	real_fsync = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
	real_fdatasync = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
}

/* True when the fault is switched on and fd's path contains the configured string. */
static int
fault_hits(int fd)
{
	char link[64], path[PATH_MAX];
	struct stat st;
	ssize_t n;
	int saved = errno; /* a call that succeeds leaves errno as it found it */

	if (fault_path == NULL)
		return 0;
	if (stat(fault_on, &st) != 0) {
		errno = saved;
		return 0;
	}
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, path, sizeof(path) - 1);
	errno = saved;
	if (n < 0)
		return 0;
	path[n] = '\0';
	return strstr(path, fault_path) != NULL;
}

/*
 * A hit: fail with EIO, or in delay mode create "<control file>.hit" (so a
 * test knows a delayed call is under way) and wait. Returns -1 with errno
 * set to fail the call, 0 to go on with the real one.
 */
static int
fault_act(void)
{
	char hit[PATH_MAX + 8];
	int saved = errno, fd;

	if (fault_delay_ms <= 0) {
		errno = EIO;
		return -1;
	}
	snprintf(hit, sizeof(hit), "%s.hit", fault_on);
	fd = open(hit, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	if (fd >= 0)
		close(fd);
	usleep((useconds_t)fault_delay_ms * 1000);
	errno = saved;
	return 0;
}

int
fsync(int fd)
{
	pthread_once(&resolve_once, fault_resolve);
	if (fault_hits(fd) && fault_act() < 0)
		return -1;
	if (real_fsync == NULL) {
		errno = ENOSYS;
		return -1;
	}
	return real_fsync(fd);
}

int
fdatasync(int fd)
{
	pthread_once(&resolve_once, fault_resolve);
	if (fault_hits(fd) && fault_act() < 0)
		return -1;
	if (real_fdatasync == NULL) {
		errno = ENOSYS;
		return -1;
	}
	return real_fdatasync(fd);
}
