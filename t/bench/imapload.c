/*
 * imapload: an IMAP load generator for make bench (plain IMAP on loopback, poll()).
 *
 * Modes (one JSON line on stdout with the result; errors on stderr):
 *   stress   N clients for S seconds, each repeating the session mix of the usual IMAP
 *            stress tests: connect, LOGIN, SELECT INBOX, FETCH a range (ENVELOPE FLAGS),
 *            STORE flags, APPEND, STORE \Deleted, EXPUNGE, LOGOUT. Every completed
 *            command is one operation.
 *   append   fill the INBOX (or -m MAILBOX) with N messages of -b bytes from C connections.
 *   fetchall one connection: time SELECT and FETCH 1:* (UID FLAGS) of -m MAILBOX.
 *   idle     open N connections, LOGIN, SELECT, IDLE; print a JSON line when all are idle,
 *            hold them until stdin reaches end of file (or -t seconds pass), then close.
 * It does not speak TLS or check response contents beyond tags, EXISTS and EXPUNGE.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum il_mode { IL_STRESS, IL_APPEND, IL_FETCHALL, IL_IDLE };

/* Commands of the mix, in session order; the index names the per-command counters. */
enum il_cmd {
	IL_CMD_LOGIN, IL_CMD_SELECT, IL_CMD_FETCH, IL_CMD_STORE, IL_CMD_APPEND,
	IL_CMD_DELETE, IL_CMD_EXPUNGE, IL_CMD_LOGOUT, IL_CMD_IDLE, IL_CMD_FETCHALL, IL_CMD_COUNT
};
static const char *const il_cmd_names[IL_CMD_COUNT] = {
	"login", "select", "fetch", "store", "append", "delete", "expunge", "logout", "idle",
	"fetchall",
};

enum il_state {
	IL_ST_FREE,       /* slot unused, waiting to (re)connect */
	IL_ST_CONNECTING, /* non-blocking connect in progress */
	IL_ST_GREETING,   /* waiting for "* OK" */
	IL_ST_CMD,        /* a tagged command is outstanding */
	IL_ST_APPEND_CONT,/* APPEND sent, waiting for "+" before the literal */
	IL_ST_IDLING,     /* IDLE accepted ("+" seen); holding */
};

struct il_conn {
	int fd;
	enum il_state state;
	enum il_cmd cmd;        /* outstanding command */
	int step;               /* position in the session script */
	unsigned tagn;
	char tag[16];
	char *rbuf;
	size_t rlen, rcap;
	size_t lit;             /* literal bytes still to skip */
	bool in_resp;           /* inside a response that continues after a literal */
	char head[256];         /* first line of the current response */
	char *wbuf;
	size_t wlen, woff, wcap;
	long exists;
	long fetched;           /* untagged FETCH responses seen (fetchall) */
	uint64_t rng;
	double cmd_start;
};

struct il_opts {
	enum il_mode mode;
	const char *host;
	int port;
	const char *user, *pass, *mailbox;
	int clients;
	double seconds;
	long count;
	int msgsize;
	int inflight;
};

static struct il_opts opts = {
	.host = "127.0.0.1", .user = "mox@localhost", .pass = "moxmoxmox", .mailbox = "INBOX",
	.clients = 10, .seconds = 10, .count = 1000, .msgsize = 4096, .inflight = 64,
};

static struct il_conn *conns;
static struct pollfd *pfds;
static double t_begin, t_deadline;
static long n_ok[IL_CMD_COUNT], n_no[IL_CMD_COUNT], n_bad[IL_CMD_COUNT];
static double lat_sum[IL_CMD_COUNT], lat_max[IL_CMD_COUNT];
static long n_cycles, n_conn_err, n_disconnects;
static long appended, append_started;
static long idle_ready, idle_failed, idle_refused;
static char *message;
static size_t message_len;
static double fetch_select_s, fetch_fetch_s;
static bool fetch_done;
static int active;

static void il_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void il_die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("imapload: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(2);
}

static double il_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *il_realloc(void *p, size_t n)
{
	void *q = realloc(p, n);
	if (q == NULL)
		il_die("out of memory (%zu bytes)", n);
	return q;
}

/* xorshift64*: deterministic per connection, good enough to pick message numbers. */
static uint64_t il_rand(struct il_conn *c)
{
	c->rng ^= c->rng >> 12;
	c->rng ^= c->rng << 25;
	c->rng ^= c->rng >> 27;
	return c->rng * 2685821657736338717ULL;
}

/* A plausible message of exactly msgsize bytes (CRLF lines), built once. */
static void il_make_message(void)
{
	size_t cap = (size_t)opts.msgsize + 1024;
	message = il_realloc(NULL, cap);
	int n = snprintf(message, cap,
	                 "From: Bench Sender <bench@example.org>\r\n"
	                 "To: mox@localhost\r\n"
	                 "Subject: imapload test message\r\n"
	                 "Date: Mon, 01 Jan 2024 12:00:00 +0000\r\n"
	                 "Message-ID: <imapload-%d@example.org>\r\n"
	                 "MIME-Version: 1.0\r\n"
	                 "Content-Type: text/plain; charset=us-ascii\r\n"
	                 "\r\n", (int)getpid());
	if (n < 0 || (size_t)n >= cap)
		il_die("message header too long");
	size_t len = (size_t)n;
	static const char line[] = "The quick brown fox jumps over the lazy dog 0123456789 abcdefghij.\r\n";
	while (len + sizeof(line) - 1 <= (size_t)opts.msgsize) {
		memcpy(message + len, line, sizeof(line) - 1);
		len += sizeof(line) - 1;
	}
	while (len + 2 < (size_t)opts.msgsize)
		message[len++] = 'x';
	message[len++] = '\r';
	message[len++] = '\n';
	message_len = len;
}

static void il_wappend(struct il_conn *c, const char *p, size_t n)
{
	if (c->wlen + n > c->wcap) {
		size_t cap = c->wcap ? c->wcap : 1024;
		while (cap < c->wlen + n)
			cap *= 2;
		c->wbuf = il_realloc(c->wbuf, cap);
		c->wcap = cap;
	}
	memcpy(c->wbuf + c->wlen, p, n);
	c->wlen += n;
}

static void il_send(struct il_conn *c, enum il_cmd cmd, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void il_send(struct il_conn *c, enum il_cmd cmd, const char *fmt, ...)
{
	char line[512];
	snprintf(c->tag, sizeof(c->tag), "t%u", ++c->tagn);
	int n = snprintf(line, sizeof(line), "%s ", c->tag);
	va_list ap;
	va_start(ap, fmt);
	int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 2, fmt, ap);
	va_end(ap);
	if (m < 0 || (size_t)(n + m) >= sizeof(line) - 2)
		il_die("command too long");
	n += m;
	line[n++] = '\r';
	line[n++] = '\n';
	il_wappend(c, line, (size_t)n);
	c->cmd = cmd;
	c->state = IL_ST_CMD;
	c->cmd_start = il_now();
}

static void il_close(struct il_conn *c)
{
	if (c->fd >= 0) {
		close(c->fd);
		active--;
	}
	c->fd = -1;
	c->state = IL_ST_FREE;
	c->rlen = c->wlen = c->woff = c->lit = 0;
	c->in_resp = false;
}

static int il_connect(struct il_conn *c)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		n_conn_err++;
		return -1;
	}
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)opts.port) };
	if (inet_pton(AF_INET, opts.host, &sa.sin_addr) != 1)
		il_die("bad host %s", opts.host);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 && errno != EINPROGRESS) {
		close(fd);
		n_conn_err++;
		return -1;
	}
	c->fd = fd;
	active++;
	c->state = IL_ST_CONNECTING;
	c->step = 0;
	c->exists = 0;
	c->rlen = c->wlen = c->woff = c->lit = 0;
	c->in_resp = false;
	return 1;
}

/* Next command of the session script; stress mode only. */
static void il_stress_next(struct il_conn *c)
{
	for (;;) {
		int step = c->step++;
		switch (step) {
		case 0:
			il_send(c, IL_CMD_LOGIN, "LOGIN \"%s\" \"%s\"", opts.user, opts.pass);
			return;
		case 1:
			il_send(c, IL_CMD_SELECT, "SELECT \"%s\"", opts.mailbox);
			return;
		case 2:
			if (c->exists > 0) {
				long lo = 1 + (long)(il_rand(c) % (uint64_t)c->exists);
				long hi = lo + 9 > c->exists ? c->exists : lo + 9;
				il_send(c, IL_CMD_FETCH, "FETCH %ld:%ld (ENVELOPE FLAGS)", lo, hi);
				return;
			}
			break;
		case 3:
			if (c->exists > 0) {
				static const char *const flags[] = { "\\Seen", "\\Flagged", "\\Answered" };
				uint64_t r = il_rand(c);
				il_send(c, IL_CMD_STORE, "STORE %ld %cFLAGS (%s)",
				        1 + (long)(r % (uint64_t)c->exists), (r >> 32) & 1 ? '+' : '-',
				        flags[(r >> 40) % 3]);
				return;
			}
			break;
		case 4: {
			char line[128];
			snprintf(c->tag, sizeof(c->tag), "t%u", ++c->tagn);
			int n = snprintf(line, sizeof(line), "%s APPEND \"%s\" {%zu}\r\n", c->tag,
			                 opts.mailbox, message_len);
			il_wappend(c, line, (size_t)n);
			c->cmd = IL_CMD_APPEND;
			c->state = IL_ST_APPEND_CONT;
			c->cmd_start = il_now();
			return;
		}
		case 5:
			if (c->exists > 0) {
				il_send(c, IL_CMD_DELETE, "STORE %ld +FLAGS.SILENT (\\Deleted)",
				        1 + (long)(il_rand(c) % (uint64_t)c->exists));
				return;
			}
			break;
		case 6:
			il_send(c, IL_CMD_EXPUNGE, "EXPUNGE");
			return;
		case 7:
			il_send(c, IL_CMD_LOGOUT, "LOGOUT");
			return;
		default:
			n_cycles++;
			il_close(c);
			return;
		}
	}
}

static void il_append_next(struct il_conn *c)
{
	int step = c->step++;
	if (step == 0) {
		il_send(c, IL_CMD_LOGIN, "LOGIN \"%s\" \"%s\"", opts.user, opts.pass);
		return;
	}
	if (append_started >= opts.count) {
		if (c->cmd == IL_CMD_LOGOUT) {
			il_close(c);
			return;
		}
		il_send(c, IL_CMD_LOGOUT, "LOGOUT");
		return;
	}
	append_started++;
	char line[128];
	snprintf(c->tag, sizeof(c->tag), "t%u", ++c->tagn);
	int n = snprintf(line, sizeof(line), "%s APPEND \"%s\" {%zu}\r\n", c->tag, opts.mailbox,
	                 message_len);
	il_wappend(c, line, (size_t)n);
	c->cmd = IL_CMD_APPEND;
	c->state = IL_ST_APPEND_CONT;
	c->cmd_start = il_now();
}

static void il_fetchall_next(struct il_conn *c)
{
	int step = c->step++;
	switch (step) {
	case 0:
		il_send(c, IL_CMD_LOGIN, "LOGIN \"%s\" \"%s\"", opts.user, opts.pass);
		break;
	case 1:
		il_send(c, IL_CMD_SELECT, "SELECT \"%s\"", opts.mailbox);
		break;
	case 2:
		c->fetched = 0;
		il_send(c, IL_CMD_FETCHALL, "FETCH 1:* (UID FLAGS)");
		break;
	case 3:
		il_send(c, IL_CMD_LOGOUT, "LOGOUT");
		break;
	default:
		fetch_done = true;
		il_close(c);
	}
}

static void il_idle_next(struct il_conn *c)
{
	int step = c->step++;
	switch (step) {
	case 0:
		il_send(c, IL_CMD_LOGIN, "LOGIN \"%s\" \"%s\"", opts.user, opts.pass);
		break;
	case 1:
		il_send(c, IL_CMD_SELECT, "SELECT \"%s\"", opts.mailbox);
		break;
	case 2:
		il_send(c, IL_CMD_IDLE, "IDLE");
		break;
	}
}

static void il_next(struct il_conn *c)
{
	switch (opts.mode) {
	case IL_STRESS: il_stress_next(c); break;
	case IL_APPEND: il_append_next(c); break;
	case IL_FETCHALL: il_fetchall_next(c); break;
	case IL_IDLE: il_idle_next(c); break;
	}
}

/* A command failed in a way the script cannot continue from: drop the connection. */
static void il_fail(struct il_conn *c, const char *why)
{
	if (opts.mode == IL_IDLE) {
		idle_failed++;
		fprintf(stderr, "imapload: idle connection failed: %s\n", why);
	} else if (opts.mode != IL_STRESS) {
		il_die("%s failed: %s", il_cmd_names[c->cmd], why);
	}
	n_disconnects++;
	il_close(c);
}

/* One complete response (its first line in head). Returns false if the connection closed. */
static bool il_response(struct il_conn *c, const char *head)
{
	double now = il_now();
	if (c->state == IL_ST_GREETING) {
		if (strncmp(head, "* OK", 4) != 0 && strncmp(head, "* PREAUTH", 9) != 0) {
			il_fail(c, head);
			return false;
		}
		il_next(c);
		return c->fd >= 0;
	}
	if (head[0] == '*') {
		char *end;
		long n = strtol(head + 2, &end, 10);
		if (end != head + 2) {
			if (strncmp(end, " EXISTS", 7) == 0)
				c->exists = n;
			else if (strncmp(end, " EXPUNGE", 8) == 0 && c->exists > 0)
				c->exists--;
			else if (strncmp(end, " FETCH", 6) == 0)
				c->fetched++;
		}
		return true;
	}
	if (head[0] == '+') {
		if (c->state == IL_ST_APPEND_CONT) {
			il_wappend(c, message, message_len);
			il_wappend(c, "\r\n", 2);
			c->state = IL_ST_CMD;
		} else if (c->state == IL_ST_CMD && c->cmd == IL_CMD_IDLE) {
			c->state = IL_ST_IDLING;
			n_ok[IL_CMD_IDLE]++;
			idle_ready++;
		}
		return true;
	}
	size_t tl = strlen(c->tag);
	if (strncmp(head, c->tag, tl) != 0 || head[tl] != ' ')
		return true; /* not ours (a stray tag): ignore */
	const char *st = head + tl + 1;
	enum il_cmd cmd = c->cmd;
	bool ok = strncmp(st, "OK", 2) == 0;
	double lat = now - c->cmd_start;
	if (opts.mode != IL_STRESS || now <= t_deadline) {
		if (ok)
			n_ok[cmd]++;
		else if (strncmp(st, "NO", 2) == 0)
			n_no[cmd]++;
		else
			n_bad[cmd]++;
		lat_sum[cmd] += lat;
		if (lat > lat_max[cmd])
			lat_max[cmd] = lat;
	}
	if (cmd == IL_CMD_SELECT && opts.mode == IL_FETCHALL)
		fetch_select_s = lat;
	if (cmd == IL_CMD_FETCHALL)
		fetch_fetch_s = lat;
	if (cmd == IL_CMD_APPEND && ok && opts.mode == IL_APPEND)
		appended++;
	if (!ok && cmd == IL_CMD_IDLE) {
		/* No IDLE: hold the connection idle after SELECT all the same. */
		idle_refused++;
		idle_ready++;
		c->state = IL_ST_IDLING;
		return true;
	}
	if (!ok && (cmd == IL_CMD_LOGIN || cmd == IL_CMD_SELECT ||
	            (opts.mode != IL_STRESS && cmd != IL_CMD_LOGOUT))) {
		il_fail(c, head);
		return false;
	}
	if (opts.mode == IL_STRESS && now > t_deadline) {
		il_close(c);
		return false;
	}
	if (cmd == IL_CMD_LOGOUT && opts.mode != IL_FETCHALL && opts.mode != IL_APPEND) {
		if (opts.mode == IL_STRESS)
			n_cycles++;
		il_close(c);
		return false;
	}
	il_next(c);
	return c->fd >= 0;
}

/* Parse what has been read: split into responses, skipping literals. */
static void il_parse(struct il_conn *c)
{
	size_t pos = 0;
	while (pos < c->rlen && c->fd >= 0) {
		if (c->lit > 0) {
			size_t skip = c->rlen - pos < c->lit ? c->rlen - pos : c->lit;
			pos += skip;
			c->lit -= skip;
			continue;
		}
		char *start = c->rbuf + pos;
		char *nl = memchr(start, '\n', c->rlen - pos);
		if (nl == NULL)
			break;
		size_t len = (size_t)(nl - start);
		if (len > 0 && start[len - 1] == '\r')
			len--;
		if (!c->in_resp) {
			size_t hl = len < sizeof(c->head) - 1 ? len : sizeof(c->head) - 1;
			memcpy(c->head, start, hl);
			c->head[hl] = 0;
		}
		pos += (size_t)(nl - start) + 1;
		/* A line ending in {N} or {N+} announces N literal bytes, then the response goes on. */
		if (len >= 3 && start[len - 1] == '}') {
			size_t i = len - 1;
			if (i > 0 && start[i - 1] == '+')
				i--;
			size_t digits_end = i;
			while (i > 0 && start[i - 1] >= '0' && start[i - 1] <= '9')
				i--;
			if (i > 0 && start[i - 1] == '{' && i < digits_end) {
				c->lit = strtoul(start + i, NULL, 10);
				c->in_resp = true;
				continue;
			}
		}
		c->in_resp = false;
		if (!il_response(c, c->head))
			return;
	}
	if (c->fd < 0)
		return;
	memmove(c->rbuf, c->rbuf + pos, c->rlen - pos);
	c->rlen -= pos;
}

static void il_read(struct il_conn *c)
{
	for (;;) {
		if (c->rcap - c->rlen < 2048) {
			size_t cap = c->rcap ? c->rcap * 2 : 4096;
			if (cap > (64u << 20))
				il_die("response line over 64 MB");
			c->rbuf = il_realloc(c->rbuf, cap);
			c->rcap = cap;
		}
		ssize_t n = read(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		if (n <= 0) {
			if (c->cmd == IL_CMD_LOGOUT && c->state == IL_ST_CMD) {
				/* Closed right after BYE: count the logout as done. */
				if (opts.mode == IL_STRESS) {
					if (il_now() <= t_deadline) {
						n_ok[IL_CMD_LOGOUT]++;
						n_cycles++;
					}
				} else if (opts.mode == IL_FETCHALL) {
					fetch_done = true;
				}
				il_close(c);
				return;
			}
			il_fail(c, n == 0 ? "connection closed by server" : strerror(errno));
			return;
		}
		c->rlen += (size_t)n;
		il_parse(c);
		if (c->fd < 0)
			return;
	}
}

static void il_write(struct il_conn *c)
{
	while (c->woff < c->wlen) {
		ssize_t n = write(c->fd, c->wbuf + c->woff, c->wlen - c->woff);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		if (n < 0) {
			il_fail(c, strerror(errno));
			return;
		}
		c->woff += (size_t)n;
	}
	c->wlen = c->woff = 0;
}

static void il_usage(void)
{
	fprintf(stderr,
	        "usage: imapload MODE -p PORT [-H HOST] [-u USER] [-w PASS] [-m MAILBOX]\n"
	        "                [-c CLIENTS] [-s SECONDS] [-n COUNT] [-b BYTES] [-i INFLIGHT]\n"
	        "modes: stress, append, fetchall, idle\n");
	exit(2);
}

static void il_raise_nofile(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

static void il_report(double elapsed)
{
	long ops = 0, errors = 0;
	for (int i = 0; i < IL_CMD_COUNT; i++) {
		ops += n_ok[i] + n_no[i] + n_bad[i];
		errors += n_no[i] + n_bad[i];
	}
	printf("{\"mode\":\"%s\",\"clients\":%d,\"seconds\":%.3f,\"ops\":%ld,\"ops_per_s\":%.1f,"
	       "\"errors\":%ld,\"cycles\":%ld,\"conn_errors\":%ld,\"disconnects\":%ld",
	       opts.mode == IL_STRESS ? "stress" : opts.mode == IL_APPEND ? "append" :
	       opts.mode == IL_FETCHALL ? "fetchall" : "idle",
	       opts.clients, elapsed, ops, elapsed > 0 ? (double)ops / elapsed : 0.0, errors,
	       n_cycles, n_conn_err, n_disconnects);
	if (opts.mode == IL_APPEND)
		printf(",\"appended\":%ld", appended);
	if (opts.mode == IL_FETCHALL)
		printf(",\"select_s\":%.4f,\"fetch_s\":%.4f,\"fetched\":%ld", fetch_select_s,
		       fetch_fetch_s, conns[0].fetched);
	if (opts.mode == IL_IDLE)
		printf(",\"ready\":%ld,\"failed\":%ld,\"idle_refused\":%ld", idle_ready, idle_failed,
		       idle_refused);
	printf(",\"per_cmd\":{");
	bool first = true;
	for (int i = 0; i < IL_CMD_COUNT; i++) {
		long n = n_ok[i] + n_no[i] + n_bad[i];
		if (n == 0)
			continue;
		printf("%s\"%s\":{\"ok\":%ld,\"no\":%ld,\"bad\":%ld,\"avg_ms\":%.2f,\"max_ms\":%.1f}",
		       first ? "" : ",", il_cmd_names[i], n_ok[i], n_no[i], n_bad[i],
		       lat_sum[i] * 1000 / (double)n, lat_max[i] * 1000);
		first = false;
	}
	printf("}}\n");
	fflush(stdout);
}

int main(int argc, char **argv)
{
	if (argc < 2)
		il_usage();
	if (strcmp(argv[1], "stress") == 0)
		opts.mode = IL_STRESS;
	else if (strcmp(argv[1], "append") == 0)
		opts.mode = IL_APPEND;
	else if (strcmp(argv[1], "fetchall") == 0)
		opts.mode = IL_FETCHALL;
	else if (strcmp(argv[1], "idle") == 0)
		opts.mode = IL_IDLE;
	else
		il_usage();
	optind = 2;
	int ch;
	while ((ch = getopt(argc, argv, "H:p:u:w:m:c:s:n:b:i:")) != -1) {
		switch (ch) {
		case 'H': opts.host = optarg; break;
		case 'p': opts.port = atoi(optarg); break;
		case 'u': opts.user = optarg; break;
		case 'w': opts.pass = optarg; break;
		case 'm': opts.mailbox = optarg; break;
		case 'c': opts.clients = atoi(optarg); break;
		case 's': opts.seconds = atof(optarg); break;
		case 'n': opts.count = atol(optarg); break;
		case 'b': opts.msgsize = atoi(optarg); break;
		case 'i': opts.inflight = atoi(optarg); break;
		default: il_usage();
		}
	}
	if (opts.port <= 0 || opts.port > 65535 || opts.clients <= 0 || opts.clients > 1000000 ||
	    opts.msgsize < 512 || opts.msgsize > (64 << 20) || opts.inflight <= 0)
		il_usage();
	if (opts.mode == IL_FETCHALL)
		opts.clients = 1;
	signal(SIGPIPE, SIG_IGN);
	il_raise_nofile();
	il_make_message();

	conns = il_realloc(NULL, sizeof(*conns) * (size_t)opts.clients);
	memset(conns, 0, sizeof(*conns) * (size_t)opts.clients);
	pfds = il_realloc(NULL, sizeof(*pfds) * ((size_t)opts.clients + 1));
	for (int i = 0; i < opts.clients; i++) {
		conns[i].fd = -1;
		conns[i].rng = 0x9E3779B97F4A7C15ULL * (uint64_t)(i + 1);
	}

	t_begin = il_now();
	t_deadline = t_begin + opts.seconds;
	int next_idle = 0;       /* idle mode: next connection to open */
	bool reported = false;   /* idle mode: readiness line printed */
	bool stdin_open = true;
	bool append_connected = false;
	for (;;) {
		double now = il_now();
		/* Start connections. */
		if (opts.mode == IL_IDLE) {
			while (next_idle < opts.clients && now < t_deadline &&
			       (long)next_idle - idle_ready - idle_failed < opts.inflight) {
				if (il_connect(&conns[next_idle]) < 0)
					idle_failed++;
				next_idle++;
			}
			if (!reported && (idle_ready + idle_failed >= opts.clients || now >= t_deadline)) {
				il_report(now - t_begin);
				reported = true;
			}
			if (reported && !stdin_open)
				break;
			if (reported && now >= t_deadline + 3600)
				break;
		} else if (opts.mode == IL_STRESS) {
			if (now >= t_deadline)
				break;
			for (int i = 0; i < opts.clients; i++)
				if (conns[i].state == IL_ST_FREE)
					il_connect(&conns[i]);
		} else if (opts.mode == IL_APPEND) {
			if (!append_connected) {
				for (int i = 0; i < opts.clients; i++)
					if (il_connect(&conns[i]) < 0)
						il_die("cannot connect to port %d", opts.port);
				append_connected = true;
			}
			if (active == 0)
				break;
		} else { /* fetchall */
			if (fetch_done)
				break;
			if (conns[0].state == IL_ST_FREE && il_connect(&conns[0]) < 0)
				il_die("cannot connect to port %d", opts.port);
		}

		int n = 0;
		for (int i = 0; i < opts.clients; i++) {
			struct il_conn *c = &conns[i];
			if (c->fd < 0)
				continue;
			short ev = POLLIN;
			if (c->state == IL_ST_CONNECTING || c->woff < c->wlen)
				ev |= POLLOUT;
			pfds[n].fd = c->fd;
			pfds[n].events = ev;
			pfds[n].revents = 0;
			n++;
		}
		int stdin_slot = -1;
		if (opts.mode == IL_IDLE && reported && stdin_open) {
			stdin_slot = n;
			pfds[n].fd = 0;
			pfds[n].events = POLLIN;
			pfds[n].revents = 0;
			n++;
		}
		int timeout = 100;
		if (n == 0 && opts.mode == IL_STRESS)
			timeout = 10; /* all refused: retry soon */
		int r = poll(pfds, (nfds_t)n, timeout);
		if (r < 0 && errno != EINTR)
			il_die("poll: %s", strerror(errno));
		if (r <= 0)
			continue;
		if (stdin_slot >= 0 && pfds[stdin_slot].revents) {
			char buf[256];
			ssize_t k = read(0, buf, sizeof(buf));
			if (k <= 0)
				stdin_open = false;
		}
		/* Map poll slots back to connections (same order as built). */
		int slot = 0;
		for (int i = 0; i < opts.clients && slot < n; i++) {
			struct il_conn *c = &conns[i];
			if (c->fd < 0 || pfds[slot].fd != c->fd)
				continue;
			short re = pfds[slot++].revents;
			if (re == 0)
				continue;
			if (c->state == IL_ST_CONNECTING) {
				int err = 0;
				socklen_t el = sizeof(err);
				getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
				if (err != 0) {
					n_conn_err++;
					if (opts.mode == IL_IDLE) {
						il_fail(c, strerror(err));
					} else if (opts.mode == IL_STRESS) {
						il_close(c);
					} else {
						il_die("connect to port %d: %s", opts.port, strerror(err));
					}
					continue;
				}
				c->state = IL_ST_GREETING;
			}
			if (re & (POLLIN | POLLHUP | POLLERR))
				il_read(c);
			if (c->fd >= 0 && c->woff < c->wlen)
				il_write(c);
		}
	}
	double elapsed = il_now() - t_begin;
	if (opts.mode == IL_STRESS)
		elapsed = opts.seconds;
	if (opts.mode != IL_IDLE)
		il_report(elapsed);
	for (int i = 0; i < opts.clients; i++)
		if (conns[i].fd >= 0)
			il_close(&conns[i]);
	return 0;
}
