/*
 * corral-execreaper: runs `<runtime> exec --detach --pid-file <pidfile> ...` for ExecSync,
 * waits for the exec'd command itself (not for the runtime, not for its pipes), and hands
 * back the last <cap> bytes of its stdout and of its stderr.
 *
 *   corral-execreaper <cap bytes> <drain ms> <pidfile> <runtime> <runtime args...>
 *
 * Why a helper:
 * - A non-detached `runc exec` relays the command's output through pipes of its own and
 *   exits only when they reach EOF, so a background descendant holding stdout would hold
 *   the call for as long as it lives. Detached, the runtime gives the command our pipes and
 *   exits at once; the command is orphaned, and as this process is a child subreaper it is
 *   re-parented here, so its exit status is ours to collect.
 * - Output is read here into two fixed rings of <cap> bytes, so a flood (`cat /dev/zero`)
 *   costs the daemon nothing and never blocks the command on a full pipe.
 *
 * When the command has exited, output still arriving is read for up to <drain ms>, then
 * the pipes are closed on whoever still holds them. On exit, this writes the stdout tail to
 * fd 1, the stderr tail to fd 2, then one line to fd 3 (close-on-exec here: neither the
 * runtime nor the command inherits it):
 *   "exited <code> <dropped out> <dropped err>" | "signaled <signal> ..." |
 *   "runtime-failed <code> ..." (the tails are then the runtime's own output) | "lost <errno> ..."
 * The exit status mirrors it (code, 128+signal, or 125 when the command never ran).
 * As soon as the command's status is known, a line "done <verdict> <value>" goes to fd 3
 * first. SIGUSR1 ends the drain at once (the daemon's deadline came after the command
 * finished). The daemon enforces the deadline itself (it kills the command's cgroup and
 * this helper).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "helper-common.h"

#define RESULT_FD 3
#define NO_COMMAND 125

struct ring {
	int fd; /* read end, -1 once at EOF or closed */
	char *buf;
	size_t cap, start, len;
	unsigned long long dropped;
};

static void ring_push(struct ring *r, const char *p, size_t n)
{
	if (r->cap == 0) {
		r->dropped += n;
		return;
	}
	if (!r->buf) {
		r->buf = malloc(r->cap);
		if (!r->buf) {
			r->dropped += n;
			return;
		}
	}
	if (n >= r->cap) {
		r->dropped += r->len + (n - r->cap);
		memcpy(r->buf, p + (n - r->cap), r->cap);
		r->start = 0;
		r->len = r->cap;
		return;
	}
	size_t end = (r->start + r->len) % r->cap;
	size_t first = n < r->cap - end ? n : r->cap - end;
	memcpy(r->buf + end, p, first);
	memcpy(r->buf, p + first, n - first);
	if (r->len + n > r->cap) {
		size_t over = r->len + n - r->cap;
		r->dropped += over;
		r->start = (r->start + over) % r->cap;
		r->len = r->cap;
	} else {
		r->len += n;
	}
}

static void ring_flush(struct ring *r, int to)
{
	if (!r->len)
		return;
	size_t first = r->len < r->cap - r->start ? r->len : r->cap - r->start;
	write_all(to, r->buf + r->start, first);
	write_all(to, r->buf, r->len - first);
}

/* Reads what is there (the fd is non-blocking); closes it at EOF. */
static void ring_drain(struct ring *r)
{
	static char chunk[65536];
	while (r->fd >= 0) {
		ssize_t n = read(r->fd, chunk, sizeof chunk);
		if (n > 0) {
			ring_push(r, chunk, (size_t)n);
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		close(r->fd);
		r->fd = -1;
	}
}

static int parse_size(const char *s, unsigned long long max, unsigned long long *out)
{
	char *end = NULL;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || !end || *end || v > max)
		return -1;
	*out = v;
	return 0;
}

static int die(const char *what)
{
	fprintf(stderr, "corral-execreaper: %s: %s\n", what, strerror(errno));
	return 2;
}

int main(int argc, char **argv)
{
	unsigned long long cap, drain_ms;
	if (argc < 6 || parse_size(argv[1], 1ULL << 30, &cap) || parse_size(argv[2], 3600000, &drain_ms)) {
		fprintf(stderr, "usage: corral-execreaper <cap bytes> <drain ms> <pidfile> <runtime> <runtime args...>\n");
		return 2;
	}
	const char *pidfile = argv[3];
	if (fcntl(RESULT_FD, F_SETFD, FD_CLOEXEC) < 0)
		return die("fd 3 must be open for the result");
	sigset_t chld;
	const char *failed = NULL;
	int sfd = become_subreaper(&chld, SIGUSR1, &failed);
	if (sfd < 0)
		return die(failed);
	/* Our own stdout being a closed pipe must not kill us before the result is out. */
	signal(SIGPIPE, SIG_IGN);

	int outp[2], errp[2];
	if (pipe2(outp, O_CLOEXEC) < 0 || pipe2(errp, O_CLOEXEC) < 0)
		return die("pipe2");
	pid_t runtime = fork();
	if (runtime < 0)
		return die("fork");
	if (runtime == 0) {
		sigprocmask(SIG_UNBLOCK, &chld, NULL);
		signal(SIGPIPE, SIG_DFL);
		if (dup2(outp[1], 1) < 0 || dup2(errp[1], 2) < 0)
			_exit(127);
		execvp(argv[4], argv + 4);
		fprintf(stderr, "corral-execreaper: cannot run %s: %s\n", argv[4], strerror(errno));
		_exit(127);
	}
	close(outp[1]);
	close(errp[1]);
	struct ring rings[2] = {{.fd = outp[0], .cap = cap}, {.fd = errp[0], .cap = cap}};
	for (int i = 0; i < 2; i++)
		fcntl(rings[i].fd, F_SETFL, O_NONBLOCK);

	struct exec_watch watch = {.runtime = runtime, .pidfile = pidfile};
	long long drain_until = -1;
	for (;;) {
		int timeout = -1;
		if (drain_until >= 0) {
			long long left = drain_until - now_ms();
			timeout = left > 0 ? (int)left : 0;
		}
		struct pollfd fds[3] = {{.fd = rings[0].fd, .events = POLLIN}, {.fd = rings[1].fd, .events = POLLIN}, {.fd = sfd, .events = POLLIN}};
		int n = poll(fds, 3, timeout);
		if (n < 0 && errno != EINTR)
			return die("poll");
		for (int i = 0; i < 2; i++)
			ring_drain(&rings[i]);
		struct signalfd_siginfo si;
		int stop_draining = 0;
		while (read(sfd, &si, sizeof si) == sizeof si)
			if (si.ssi_signo == SIGUSR1)
				stop_draining = 1;
		reap_children(&watch);
		if (watch.verdict && drain_until < 0) {
			drain_until = now_ms() + (long long)drain_ms;
			/* Early word for the daemon: at its deadline, a finished command is not killed. */
			char early[64];
			int len = snprintf(early, sizeof early, "done %s %d\n", watch.verdict, watch.value);
			write_all(RESULT_FD, early, (size_t)len);
		}
		if (watch.verdict && stop_draining)
			drain_until = now_ms();
		int open_pipes = (rings[0].fd >= 0) + (rings[1].fd >= 0);
		if (watch.verdict && (open_pipes == 0 || now_ms() >= drain_until))
			break;
	}
	/* Whoever still holds the pipes gets EPIPE from now on. */
	for (int i = 0; i < 2; i++)
		if (rings[i].fd >= 0)
			close(rings[i].fd);
	ring_flush(&rings[0], 1);
	ring_flush(&rings[1], 2);
	char line[128];
	int len = snprintf(line, sizeof line, "%s %d %llu %llu\n", watch.verdict, watch.value, rings[0].dropped, rings[1].dropped);
	write_all(RESULT_FD, line, (size_t)len);
	if (strcmp(watch.verdict, "exited") == 0)
		return watch.value;
	if (strcmp(watch.verdict, "signaled") == 0)
		return 128 + watch.value;
	return NO_COMMAND;
}
