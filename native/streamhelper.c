/*
 * corral-streamhelper: the parts of CRI streaming that Node cannot do itself, one process
 * per session (or per forwarded connection), bridging to the daemon over stdio pipes.
 *
 *   corral-streamhelper exec <pidfile> <console socket|-> <runtime> <runtime args...>
 *   corral-streamhelper attach <conmon attach socket> [--no-stdin]
 *   corral-streamhelper portforward <netns path> <port>
 *
 * exec: runs `<runtime> exec --detach --pid-file <pidfile> ...` as a child subreaper, so
 *   the exec'd command is re-parented here and its exit status is ours to collect (as in
 *   execreaper.c). Without a TTY (console socket "-") the runtime, and so the command,
 *   inherits fds 0-2 (the daemon's pipes: the kernel gives backpressure both ways and the
 *   daemon's stdin EOF is the command's); this process then points its own 0-2 at
 *   /dev/null, so those pipes end when the command (and what it started) lets go of them.
 *   With a TTY the daemon passes `--tty --console-socket <path>`; this process listens on
 *   <path>, receives the pty master (SCM_RIGHTS, which Node cannot), copies fd 0 to the
 *   master and the master to fd 1, and applies "<rows> <cols>\n" lines read from fd 4 with
 *   TIOCSWINSZ. fd 3 gets one line when it is over: "exited <code>", "signaled <signal>",
 *   "runtime-failed <status>" or "lost <errno>".
 * attach: connects to conmon's SOCK_SEQPACKET attach socket (Node's net cannot) and
 *   re-frames its packets (1 byte stream id, then data): id 2 to fd 1, id 3 to fd 2. fd 0
 *   goes to the socket as raw bytes; its EOF is shutdown(SHUT_WR), which conmon turns into
 *   the container's stdin EOF (for stdin_once containers). Ends when conmon closes.
 * portforward (only when the daemon's netns-dial addon is not built: the daemon dials
 *   itself otherwise): setns(CLONE_NEWNET) into the pinned network namespace, connects to
 *   127.0.0.1:<port>, else [::1]:<port>, and copies fd 0 to the socket
 *   (its EOF half-closes the socket) and the socket to fd 1 (its EOF closes fd 1), until
 *   both directions are done (a write to a pod that closed ends the first). Exit 2 (message on stderr) when the dial fails.
 * Static, so it needs only the kernel.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "helper-common.h"

#define REPORT_FD 3
#define RESIZE_FD 4
#define BUF 32768
/* After the command has exited, output still in the pty is read for at most this long. */
#define TTY_DRAIN_MS 2000

static int die(const char *what)
{
	fprintf(stderr, "corral-streamhelper: %s: %s\n", what, strerror(errno));
	return 1;
}

/* Points fds 0..last at /dev/null. */
static void null_stdio(int last)
{
	int fd = open("/dev/null", O_RDWR);
	for (int i = 0; i <= last; i++)
		dup2(fd, i);
	if (fd > 2)
		close(fd);
}

static int receive_fd(int conn)
{
	char data[256];
	struct iovec iov = {.iov_base = data, .iov_len = sizeof data};
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf};
	ssize_t n;
	do
		n = recvmsg(conn, &msg, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -1;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
			int fd;
			memcpy(&fd, CMSG_DATA(c), sizeof fd);
			return fd;
		}
	}
	errno = EBADMSG;
	return -1;
}

/* Parses complete "<rows> <cols>\n" lines from buf and applies the last one. */
static void apply_resizes(char *buf, size_t *len, int master, struct winsize *pending, int *have_pending)
{
	size_t start = 0;
	for (size_t i = 0; i < *len; i++) {
		if (buf[i] != '\n')
			continue;
		buf[i] = 0;
		unsigned rows = 0, cols = 0;
		if (sscanf(buf + start, "%u %u", &rows, &cols) == 2 && rows > 0 && cols > 0 && rows <= 65535 && cols <= 65535) {
			pending->ws_row = (unsigned short)rows;
			pending->ws_col = (unsigned short)cols;
			*have_pending = 1;
		}
		start = i + 1;
	}
	memmove(buf, buf + start, *len - start);
	*len -= start;
	if (*len > 200)
		*len = 0; /* no line is that long: garbage */
	if (master >= 0 && *have_pending) {
		ioctl(master, TIOCSWINSZ, pending);
		*have_pending = 0;
	}
}

static int run_exec(int argc, char **argv)
{
	if (argc < 5) {
		fprintf(stderr, "usage: corral-streamhelper exec <pidfile> <console socket|-> <runtime> <runtime args...>\n");
		return 2;
	}
	const char *pidfile = argv[2];
	const char *console = strcmp(argv[3], "-") == 0 ? NULL : argv[3];
	if (fcntl(REPORT_FD, F_SETFD, FD_CLOEXEC) < 0)
		return die("fd 3 must be open for the result");
	if (console && fcntl(RESIZE_FD, F_SETFD, FD_CLOEXEC) < 0)
		return die("fd 4 must be open for resize events");
	sigset_t chld;
	const char *failed = NULL;
	int sfd = become_subreaper(&chld, 0, &failed);
	if (sfd < 0)
		return die(failed);
	signal(SIGPIPE, SIG_IGN);

	int listener = -1;
	if (console) {
		struct sockaddr_un sa = {.sun_family = AF_UNIX};
		if (strlen(console) >= sizeof sa.sun_path) {
			errno = ENAMETOOLONG;
			return die("console socket path");
		}
		strcpy(sa.sun_path, console);
		unlink(console);
		listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (listener < 0 || bind(listener, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(listener, 1) < 0)
			return die("console socket");
	}

	pid_t runtime = fork();
	if (runtime < 0)
		return die("fork");
	if (runtime == 0) {
		sigprocmask(SIG_UNBLOCK, &chld, NULL);
		signal(SIGPIPE, SIG_DFL);
		/* With a TTY, the command's stdio is the pty: the runtime gets none of ours but stderr. */
		if (console)
			null_stdio(1);
		execvp(argv[4], argv + 4);
		fprintf(stderr, "corral-streamhelper: cannot run %s: %s\n", argv[4], strerror(errno));
		_exit(127);
	}

	int master = -1;
	int in_fd = console ? 0 : -1; /* the daemon's input for the pty */
	int resize_fd = console ? RESIZE_FD : -1;
	if (!console)
		null_stdio(2); /* the pipes now belong to the command alone */
	else
		fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
	char inbuf[BUF];
	size_t in_len = 0, in_off = 0;
	char rbuf[256];
	size_t r_len = 0;
	struct winsize pending = {0};
	int have_pending = 0;

	struct exec_watch watch = {.runtime = runtime, .pidfile = pidfile};
	long long drain_until = -1;
	char obuf[BUF];

	for (;;) {
		struct pollfd fds[5];
		int nf = 0;
		fds[nf++] = (struct pollfd){.fd = sfd, .events = POLLIN};
		int i_listen = -1, i_master = -1, i_in = -1, i_resize = -1;
		if (listener >= 0)
			i_listen = nf, fds[nf++] = (struct pollfd){.fd = listener, .events = POLLIN};
		if (master >= 0)
			i_master = nf, fds[nf++] = (struct pollfd){.fd = master, .events = (short)(POLLIN | (in_len > in_off ? POLLOUT : 0))};
		if (in_fd >= 0 && master >= 0 && in_len == in_off)
			i_in = nf, fds[nf++] = (struct pollfd){.fd = in_fd, .events = POLLIN};
		if (resize_fd >= 0)
			i_resize = nf, fds[nf++] = (struct pollfd){.fd = resize_fd, .events = POLLIN};
		int timeout = -1;
		if (drain_until >= 0) {
			long long left = drain_until - now_ms();
			timeout = left > 0 ? (int)left : 0;
		}
		int n = poll(fds, (nfds_t)nf, timeout);
		if (n < 0 && errno != EINTR)
			return die("poll");

		if (i_listen >= 0 && (fds[i_listen].revents & POLLIN)) {
			int conn = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
			if (conn >= 0) {
				master = receive_fd(conn);
				close(conn);
				if (master >= 0) {
					fcntl(master, F_SETFL, fcntl(master, F_GETFL) | O_NONBLOCK);
					close(listener);
					listener = -1;
					unlink(console);
					if (have_pending) {
						ioctl(master, TIOCSWINSZ, &pending);
						have_pending = 0;
					}
				}
			}
		}
		if (i_resize >= 0 && (fds[i_resize].revents & (POLLIN | POLLHUP | POLLERR))) {
			ssize_t r = read(resize_fd, rbuf + r_len, sizeof rbuf - 1 - r_len);
			if (r > 0) {
				r_len += (size_t)r;
				apply_resizes(rbuf, &r_len, master, &pending, &have_pending);
			} else if (r == 0 || (errno != EINTR && errno != EAGAIN)) {
				resize_fd = -1;
			}
		}
		if (i_in >= 0 && (fds[i_in].revents & (POLLIN | POLLHUP | POLLERR))) {
			ssize_t r = read(in_fd, inbuf, sizeof inbuf);
			if (r > 0)
				in_len = (size_t)r, in_off = 0;
			else if (r == 0 || (errno != EINTR && errno != EAGAIN))
				in_fd = -1; /* the client's stdin ended: the command runs on until it exits */
		}
		if (master >= 0 && in_len > in_off) {
			ssize_t w = write(master, inbuf + in_off, in_len - in_off);
			if (w > 0)
				in_off += (size_t)w;
			else if (w < 0 && errno != EAGAIN && errno != EINTR)
				in_len = in_off = 0, in_fd = -1;
			if (in_off == in_len)
				in_len = in_off = 0;
		}
		if (i_master >= 0 && (fds[i_master].revents & (POLLIN | POLLHUP | POLLERR))) {
			for (;;) {
				ssize_t r = read(master, obuf, sizeof obuf);
				if (r > 0) {
					if (write_all(1, obuf, (size_t)r) < 0) {
						/* The client is gone; keep draining so the command never blocks. */
					}
					continue;
				}
				if (r < 0 && errno == EINTR)
					continue;
				if (r < 0 && errno == EAGAIN)
					break;
				/* EIO: every holder of the slave has closed it. */
				close(master);
				master = -2;
				break;
			}
		}

		struct signalfd_siginfo si;
		while (read(sfd, &si, sizeof si) == sizeof si) {
		}
		reap_children(&watch);
		if (!watch.verdict)
			continue;
		if (!console || !watch.runtime_ok)
			break;
		/* TTY: the master may still be on its way (a fast command), then its output. */
		if (drain_until < 0)
			drain_until = now_ms() + TTY_DRAIN_MS;
		if (master == -2 || now_ms() >= drain_until)
			break;
	}
	if (listener >= 0) {
		close(listener);
		unlink(console);
	}
	char line[64];
	int len = snprintf(line, sizeof line, "%s %d\n", watch.verdict, watch.value);
	write_all(REPORT_FD, line, (size_t)len);
	return 0;
}

static int run_attach(int argc, char **argv)
{
	if (argc != 3 && !(argc == 4 && strcmp(argv[3], "--no-stdin") == 0)) {
		fprintf(stderr, "usage: corral-streamhelper attach <attach socket> [--no-stdin]\n");
		return 2;
	}
	/* A client without stdin must not look like one whose stdin ended (that closes a stdin_once container's). */
	int in_open = argc == 3;
	signal(SIGPIPE, SIG_IGN);
	/* stderr is the container's: our own complaints go to fd 3 when the daemon gave one. */
	int err_fd = fcntl(REPORT_FD, F_GETFD) >= 0 ? REPORT_FD : 2;
	/* sun_path holds 108 bytes; reach the socket through its directory's fd instead. */
	char *dir = strdup(argv[2]);
	char *slash = strrchr(dir, '/');
	const char *base = argv[2];
	int dfd = -1;
	if (slash) {
		*slash = 0;
		base = slash + 1;
		dfd = open(*dir ? dir : "/", O_PATH | O_DIRECTORY | O_CLOEXEC);
		if (dfd < 0) {
			dprintf(err_fd, "opening the directory of conmon's attach socket %s: %s\n", argv[2], strerror(errno));
			return 2;
		}
	}
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (dfd >= 0)
		snprintf(sa.sun_path, sizeof sa.sun_path, "/proc/self/fd/%d/%s", dfd, base);
	else
		snprintf(sa.sun_path, sizeof sa.sun_path, "%s", base);
	int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (s < 0 || connect(s, (struct sockaddr *)&sa, sizeof sa) < 0) {
		dprintf(err_fd, "connecting to conmon's attach socket %s: %s\n", argv[2], strerror(errno));
		return 2;
	}
	char buf[BUF + 1];
	for (;;) {
		struct pollfd fds[2] = {{.fd = s, .events = POLLIN}, {.fd = in_open ? 0 : -1, .events = POLLIN}};
		if (poll(fds, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			return die("poll");
		}
		if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
			ssize_t r = recv(s, buf, sizeof buf, 0);
			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0)
				return 0; /* conmon is gone: the container's output has ended */
			int out = buf[0] == 3 ? 2 : buf[0] == 2 ? 1 : -1;
			if (out >= 0 && r > 1 && write_all(out, buf + 1, (size_t)r - 1) < 0)
				return 0; /* the daemon's end is gone (it would have killed us otherwise) */
		}
		if (fds[1].revents & (POLLIN | POLLHUP | POLLERR)) {
			ssize_t r = read(0, buf, BUF);
			if (r > 0) {
				if (send(s, buf, (size_t)r, MSG_NOSIGNAL) < 0)
					return 0;
			} else if (r == 0 || errno != EINTR) {
				in_open = 0;
				shutdown(s, SHUT_WR);
			}
		}
	}
}

/* Dials address:port (an IPv4 or IPv6 literal). */
static int dial_address(const char *address, int port)
{
	struct sockaddr_in a4 = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
	struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_port = htons((unsigned short)port)};
	int family;
	if (inet_pton(AF_INET, address, &a4.sin_addr) == 1)
		family = AF_INET;
	else if (inet_pton(AF_INET6, address, &a6.sin6_addr) == 1)
		family = AF_INET6;
	else {
		errno = EINVAL;
		return -1;
	}
	int s = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		return -1;
	int rc = family == AF_INET ? connect(s, (struct sockaddr *)&a4, sizeof a4) : connect(s, (struct sockaddr *)&a6, sizeof a6);
	if (rc < 0) {
		int e = errno;
		close(s);
		errno = e;
		return -1;
	}
	return s;
}

/* Dials the pod's localhost, as containerd does: 127.0.0.1, or ::1. */
static int dial(int family, int port)
{
	return dial_address(family == AF_INET ? "127.0.0.1" : "::1", port);
}

static int run_portforward(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: corral-streamhelper portforward <netns path> <port>\n");
		return 2;
	}
	char *end;
	long port = strtol(argv[3], &end, 10);
	if (*end || port < 1 || port > 65535) {
		fprintf(stderr, "corral-streamhelper: invalid port %s\n", argv[3]);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	int ns = open(argv[2], O_RDONLY | O_CLOEXEC);
	if (ns < 0 || setns(ns, CLONE_NEWNET) < 0) {
		fprintf(stderr, "entering the pod's network namespace %s: %s\n", argv[2], strerror(errno));
		return 2;
	}
	close(ns);
	int s;
	if ((s = dial(AF_INET, (int)port)) < 0) {
		int e4 = errno;
		s = dial(AF_INET6, (int)port);
		if (s < 0) {
			fprintf(stderr, "dialing localhost:%ld in the pod: 127.0.0.1: %s; [::1]: %s\n", port, strerror(e4), strerror(errno));
			return 2;
		}
	}
	int in_open = 1, out_open = 1;
	char buf[BUF];
	while (out_open || in_open) {
		struct pollfd fds[2] = {{.fd = out_open ? s : -1, .events = POLLIN}, {.fd = in_open ? 0 : -1, .events = POLLIN}};
		if (poll(fds, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			return die("poll");
		}
		if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
			ssize_t r = read(s, buf, sizeof buf);
			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0 || write_all(1, buf, (size_t)r) < 0) {
				out_open = 0; /* the pod's side ended (or the client's reading side) */
				close(1);
			}
		}
		if (in_open && (fds[1].revents & (POLLIN | POLLHUP | POLLERR))) {
			ssize_t r = read(0, buf, sizeof buf);
			if (r > 0) {
				if (write_all(s, buf, (size_t)r) < 0)
					in_open = 0;
			} else if (r == 0 || errno != EINTR) {
				in_open = 0;
				shutdown(s, SHUT_WR);
			}
		}
	}
	close(s);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc >= 2 && strcmp(argv[1], "exec") == 0)
		return run_exec(argc, argv);
	if (argc >= 2 && strcmp(argv[1], "attach") == 0)
		return run_attach(argc, argv);
	if (argc >= 2 && strcmp(argv[1], "portforward") == 0)
		return run_portforward(argc, argv);
	fprintf(stderr, "usage: corral-streamhelper exec|attach|portforward ...\n");
	return 2;
}
