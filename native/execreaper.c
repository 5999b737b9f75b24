/*
 * corral-execreaper: runs `<runtime> exec --detach --pid-file <pidfile> ...` and waits
 * for the exec'd command itself, not for the runtime, and not for its pipes.
 *
 *   corral-execreaper <pidfile> <runtime> <runtime args...>
 *
 * Why: a non-detached `runc exec` copies the command's output through pipes of its own
 * and exits only when they reach EOF, so a background descendant holding stdout keeps it
 * (and whoever waits for it) alive for as long as that descendant lives. Detached, the
 * runtime hands our stdio straight to the command and exits at once; the command is then
 * orphaned, and since this process is a child subreaper it is re-parented here, so its
 * exit status is ours to collect. We exit as soon as the command does.
 *
 * The result goes to fd 3 (a pipe from the daemon; close-on-exec here, so neither the
 * runtime nor the command inherits it) as one line:
 *   "exited <code>" | "signaled <signal>" | "runtime-failed <code>" | "lost <errno>"
 * and the exit status mirrors it (code, 128+signal, or 125 when the command never ran).
 * stdin, stdout and stderr pass through untouched.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#define RESULT_FD 3
#define NO_COMMAND 125

static void report(const char *what, int value)
{
	char line[64];
	int n = snprintf(line, sizeof line, "%s %d\n", what, value);
	if (n > 0 && write(RESULT_FD, line, (size_t)n) < 0) {
		/* The daemon went away; the exit status still tells. */
	}
}

static pid_t read_pid(const char *file)
{
	char buf[32] = {0};
	int fd = open(file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
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

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: corral-execreaper <pidfile> <runtime> <runtime args...>\n");
		return 2;
	}
	if (fcntl(RESULT_FD, F_SETFD, FD_CLOEXEC) < 0) {
		fprintf(stderr, "corral-execreaper: fd %d must be open for the result: %s\n", RESULT_FD, strerror(errno));
		return 2;
	}
	if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0) {
		fprintf(stderr, "corral-execreaper: PR_SET_CHILD_SUBREAPER: %s\n", strerror(errno));
		return 2;
	}
	pid_t runtime = fork();
	if (runtime < 0) {
		fprintf(stderr, "corral-execreaper: fork: %s\n", strerror(errno));
		return 2;
	}
	if (runtime == 0) {
		execvp(argv[2], argv + 2);
		fprintf(stderr, "corral-execreaper: cannot run %s: %s\n", argv[2], strerror(errno));
		_exit(127);
	}

	int st = 0;
	while (waitpid(runtime, &st, 0) < 0) {
		if (errno != EINTR) {
			report("runtime-failed", 255);
			return NO_COMMAND;
		}
	}
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		report("runtime-failed", WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
		return NO_COMMAND;
	}
	pid_t command = read_pid(argv[1]);
	if (command <= 0) {
		report("runtime-failed", 0);
		return NO_COMMAND;
	}
	/* The command, and whatever else the runtime orphaned, are ours now: reap until it is. */
	for (;;) {
		pid_t pid = waitpid(-1, &st, 0);
		if (pid < 0) {
			if (errno == EINTR)
				continue;
			report("lost", errno);
			return NO_COMMAND;
		}
		if (pid != command)
			continue;
		if (WIFEXITED(st)) {
			report("exited", WEXITSTATUS(st));
			return WEXITSTATUS(st);
		}
		report("signaled", WTERMSIG(st));
		return 128 + WTERMSIG(st);
	}
}
