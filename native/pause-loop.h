/*
 * The duties of a pod's PID 1, shared by corral-pause (the OCI pause container) and
 * corral-podpause (Corral's own pause): the kernel drops signals sent to PID 1 of a
 * namespace unless it has handlers, so SIGINT and SIGTERM exit 0; orphans are re-parented to
 * PID 1, so SIGCHLD reaps every exited child. Header-only (one static binary per source).
 */
#ifndef CORRAL_PAUSE_LOOP_H
#define CORRAL_PAUSE_LOOP_H

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

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

/* SIGINT/SIGTERM exit 0, SIGCHLD reaps; 0 on success, else -1 with errno. */
static int install_pid1_handlers(void)
{
	if (install(SIGINT, on_stop, 0) != 0 || install(SIGTERM, on_stop, 0) != 0 ||
	    install(SIGCHLD, on_child, SA_NOCLDSTOP | SA_RESTART) != 0)
		return -1;
	return 0;
}

#endif
