/*
 * readflood DIR N MS: opens, reads and closes DIR/.f<i> (i < N, round robin)
 * for MS milliseconds as fast as it can, like a backup or an indexer reading
 * a Maildir: each file queues an IN_OPEN and an IN_CLOSE_NOWRITE for an
 * inotify watch on DIR. Prints how many files it read. Used by
 * t/test_watch.py.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static long long
now_ms(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1000LL + t.tv_nsec / 1000000;
}

int
main(int argc, char **argv)
{
	char path[4096], buf[512];
	long n, k = 0;
	long long end;

	if (argc != 4 || (n = atol(argv[2])) <= 0) {
		fprintf(stderr, "usage: readflood DIR N MS\n");
		return 2;
	}
	end = now_ms() + atol(argv[3]);
	while (now_ms() < end) {
		snprintf(path, sizeof(path), "%s/.f%ld", argv[1], k % n);
		int fd = open(path, O_RDONLY);
		if (fd >= 0) {
			if (read(fd, buf, sizeof(buf)) < 0)
				perror(path);
			close(fd);
		}
		k++;
	}
	printf("%ld\n", k);
	return 0;
}
