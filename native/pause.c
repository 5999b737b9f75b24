/*
 * corral-pause: the process that keeps a Corral pod sandbox alive.
 *
 * It does nothing but wait. It may run as PID 1 of a pod-wide PID namespace,
 * which brings two duties:
 *   - The kernel drops signals sent to PID 1 of a namespace unless PID 1 has a
 *     handler for them, so SIGINT and SIGTERM get explicit handlers that exit 0.
 *   - Orphans of the namespace are re-parented to PID 1, so SIGCHLD reaps
 *     every exited child; otherwise zombies would pile up.
 *
 * Built statically by scripts/build-native.sh, so it can be copied into an
 * otherwise empty root filesystem.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define CORRAL_PAUSE_VERSION "0.1.0"

static void on_stop(int sig)
{
	(void)sig;
	_exit(0);
}

static void reap_all(void)
{
	int saved = errno;
	/* waitpid is async-signal-safe; collect every child that has exited. */
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
	errno = saved;
}

static void on_child(int sig)
{
	(void)sig;
	reap_all();
}

static int install(int sig, void (*fn)(int), int flags)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = fn;
	sa.sa_flags = flags;
	sigfillset(&sa.sa_mask);
	return sigaction(sig, &sa, NULL);
}

static void usage(FILE *to)
{
	fprintf(to,
		"corral-pause %s - holds a Corral pod sandbox open\n"
		"usage: corral-pause        wait until SIGINT or SIGTERM, then exit 0\n"
		"       corral-pause -v     print this text and exit\n",
		CORRAL_PAUSE_VERSION);
}

int main(int argc, char **argv)
{
	if (argc > 1) {
		if (argc == 2 && (strcmp(argv[1], "-v") == 0 || strcmp(argv[1], "--version") == 0 ||
				  strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
			usage(stdout);
			return 0;
		}
		usage(stderr);
		return 2;
	}

	if (install(SIGINT, on_stop, 0) != 0 || install(SIGTERM, on_stop, 0) != 0 ||
	    install(SIGCHLD, on_child, SA_NOCLDSTOP | SA_RESTART) != 0) {
		perror("corral-pause: sigaction");
		return 1;
	}
	/* Children that exited before the handler existed (e.g. inherited via exec). */
	reap_all();

	for (;;)
		pause();
}
