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

#include "pause-loop.h"

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

	if (install_pid1_handlers() != 0) {
		perror("corral-pause: sigaction");
		return 1;
	}
	/* Children that exited before the handler existed (e.g. inherited via exec). */
	reap_all();

	for (;;)
		pause();
}
