/*
 * Shared by execreaper.c and streamhelper.c (static functions, #included by each; each
 * helper is still one gcc invocation). Both run `<runtime> exec --detach --pid-file ...`
 * as a child subreaper and collect the exit status of the command re-parented to them.
 * Needs _GNU_SOURCE and the includes of its users (fcntl, poll, signal, signalfd, prctl,
 * wait, time, unistd, errno, stdlib, string).
 */
#ifndef CORRAL_HELPER_COMMON_H
#define CORRAL_HELPER_COMMON_H

#define REAPED_KEPT 64

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Writes everything, waiting out a non-blocking fd that is full. 0, or -1 when it is gone. */
static int write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				struct pollfd pf = {.fd = fd, .events = POLLOUT};
				poll(&pf, 1, -1);
				continue;
			}
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* The PID the runtime wrote to its --pid-file, or -1. */
static pid_t read_pid(const char *file)
{
	char buf[32] = {0};
	int fd = open(file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n <= 0)
		return -1;
	char *end = NULL;
	long pid = strtol(buf, &end, 10);
	if (pid <= 0 || (end && *end != '\0' && *end != '\n'))
		return -1;
	return (pid_t)pid;
}

/*
 * Makes this process a child subreaper and blocks SIGCHLD (plus extra_signal, unless 0)
 * into *mask, returning a non-blocking signalfd for them. On failure -1, with *failed
 * naming the step (errno says why).
 */
static int become_subreaper(sigset_t *mask, int extra_signal, const char **failed)
{
	if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0) {
		*failed = "PR_SET_CHILD_SUBREAPER";
		return -1;
	}
	sigemptyset(mask);
	sigaddset(mask, SIGCHLD);
	if (extra_signal)
		sigaddset(mask, extra_signal);
	if (sigprocmask(SIG_BLOCK, mask, NULL) < 0) {
		*failed = "sigprocmask";
		return -1;
	}
	int sfd = signalfd(-1, mask, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sfd < 0) {
		*failed = "signalfd";
		return -1;
	}
	return sfd;
}

/* What is known of a detached `<runtime> exec` and the command it started. */
struct exec_watch {
	pid_t runtime;
	const char *pidfile;
	pid_t command;   /* from the pid file once the runtime has exited 0 */
	int runtime_ok;  /* the runtime exited 0 and wrote a PID */
	const char *verdict; /* NULL until known: exited, signaled, runtime-failed, lost */
	int value;
	struct {
		pid_t pid;
		int status;
	} reaped[REAPED_KEPT];
	unsigned reaped_next;
};

/* Reaps every child that has exited (WNOHANG) and settles the verdict when it can. */
static void reap_children(struct exec_watch *w)
{
	for (;;) {
		int st = 0;
		pid_t pid = waitpid(-1, &st, WNOHANG);
		if (pid == 0)
			break;
		if (pid < 0) {
			if (errno == EINTR)
				continue;
			/* No child left, and the command was never collected. */
			if (!w->verdict) {
				w->verdict = "lost";
				w->value = errno;
			}
			break;
		}
		if (pid == w->runtime) {
			if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
				w->verdict = "runtime-failed";
				w->value = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
			} else if ((w->command = read_pid(w->pidfile)) <= 0) {
				w->verdict = "runtime-failed";
				w->value = 0;
			} else {
				w->runtime_ok = 1;
			}
		} else {
			/*
			 * runc's command is re-parented here when runc exits, crun's as soon as
			 * crun's intermediate child exits: it may be reaped before we know its
			 * PID, so remember the last few statuses.
			 */
			w->reaped[w->reaped_next % REAPED_KEPT].pid = pid;
			w->reaped[w->reaped_next % REAPED_KEPT].status = st;
			w->reaped_next++;
		}
		if (w->command > 0 && !w->verdict) {
			for (unsigned i = 0; i < REAPED_KEPT; i++) {
				if (w->reaped[i].pid != w->command)
					continue;
				int cst = w->reaped[i].status;
				w->verdict = WIFEXITED(cst) ? "exited" : "signaled";
				w->value = WIFEXITED(cst) ? WEXITSTATUS(cst) : WTERMSIG(cst);
			}
		}
	}
}

#endif
