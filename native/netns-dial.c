/*
 * corral-netns-dial.node: a Node-API addon that dials a TCP port inside a pod's pinned
 * network namespace and hands the daemon the connected socket, so port-forward bytes go
 * pod socket <-> daemon <-> client, as in containerd, with no helper process and no pipe in
 * between (corral-streamhelper's portforward mode is the fallback when this addon is absent).
 *
 *   dial(netnsPath: string, port: number, timeoutMs: number, done: (err, fd) => void): void
 *
 * Each call starts a detached thread of its own. Only that thread enters the namespace
 * (setns acts on the calling thread; a libuv pool thread or the main thread never does), it
 * makes the socket there (a socket belongs to the namespace it was made in for its whole
 * life), connects to 127.0.0.1:port, else [::1]:port, each bounded by timeoutMs, and ends.
 * `done` is called on the main thread with the connected socket's fd (non-blocking, close-on-
 * exec; the caller owns it: net.Socket({ fd })) or an Error with `code` (errno name) and
 * `errno`. At most MAX_DIALS threads run at once; beyond that `done` gets EAGAIN at once.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <node_api.h>

#define MAX_DIALS 64
#define MAX_PATH 4096

static atomic_int dials_running;

struct dial {
	char netns[MAX_PATH];
	int port;
	int timeout_ms;
	int fd;		/* the connected socket, or -1 */
	int error;	/* errno when fd is -1 (the IPv4 dial's, when both dials failed) */
	int error6;	/* the IPv6 dial's errno, when both failed; else 0 */
	char step[24];	/* what failed: "netns", "connect", "thread", "too many dials" */
	napi_threadsafe_function done;
};

/* Connects s to addr, waiting at most timeout_ms; 0 or -1 with errno. */
static int connect_within(int s, const struct sockaddr *addr, socklen_t len, int timeout_ms)
{
	if (connect(s, addr, len) == 0)
		return 0;
	if (errno != EINPROGRESS)
		return -1;
	struct pollfd p = {.fd = s, .events = POLLOUT};
	int n;
	do
		n = poll(&p, 1, timeout_ms);
	while (n < 0 && errno == EINTR);
	if (n == 0) {
		errno = ETIMEDOUT;
		return -1;
	}
	if (n < 0)
		return -1;
	int err = 0;
	socklen_t elen = sizeof err;
	if (getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &elen) != 0)
		return -1;
	if (err) {
		errno = err;
		return -1;
	}
	return 0;
}

/* A non-blocking socket of family, connected to its loopback address:port; -1 with errno. */
static int dial_loopback(int family, int port, int timeout_ms)
{
	int s = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (s < 0)
		return -1;
	int rc;
	if (family == AF_INET) {
		struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port), .sin_addr = {htonl(INADDR_LOOPBACK)}};
		rc = connect_within(s, (struct sockaddr *)&a, sizeof a, timeout_ms);
	} else {
		struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = htons((unsigned short)port), .sin6_addr = IN6ADDR_LOOPBACK_INIT};
		rc = connect_within(s, (struct sockaddr *)&a, sizeof a, timeout_ms);
	}
	if (rc != 0) {
		int e = errno;
		close(s);
		errno = e;
		return -1;
	}
	return s;
}

static void *dial_thread(void *arg)
{
	struct dial *d = arg;
	int ns = open(d->netns, O_RDONLY | O_CLOEXEC);
	if (ns < 0 || setns(ns, CLONE_NEWNET) != 0) {
		d->error = errno;
		strcpy(d->step, "netns");
	} else {
		/* The pod's localhost, as containerd dials it: 127.0.0.1, else ::1. */
		d->fd = dial_loopback(AF_INET, d->port, d->timeout_ms);
		if (d->fd < 0) {
			d->error = errno;
			d->fd = dial_loopback(AF_INET6, d->port, d->timeout_ms);
			d->error6 = d->fd < 0 ? errno : 0;
			strcpy(d->step, "connect");
		}
	}
	if (ns >= 0)
		close(ns);
	/* This thread is in the pod's namespace now: it only reports, then ends. */
	atomic_fetch_sub(&dials_running, 1);
	if (napi_call_threadsafe_function(d->done, d, napi_tsfn_blocking) != napi_ok) {
		if (d->fd >= 0)
			close(d->fd);
		free(d);
	}
	return NULL;
}

static const char *errno_code(int e)
{
	switch (e) {
	case ECONNREFUSED: return "ECONNREFUSED";
	case ETIMEDOUT: return "ETIMEDOUT";
	case ENOENT: return "ENOENT";
	case EINVAL: return "EINVAL";
	case EPERM: return "EPERM";
	case EACCES: return "EACCES";
	case EAGAIN: return "EAGAIN";
	case ENETUNREACH: return "ENETUNREACH";
	case EHOSTUNREACH: return "EHOSTUNREACH";
	case EADDRNOTAVAIL: return "EADDRNOTAVAIL";
	case EMFILE: return "EMFILE";
	case ENFILE: return "ENFILE";
	case ENOMEM: return "ENOMEM";
	default: return "EIO";
	}
}

static napi_value make_error(napi_env env, const char *step, int e, int e6)
{
	char msg[256];
	if (e6)
		snprintf(msg, sizeof msg, "%s: 127.0.0.1: %s; [::1]: %s", step, strerror(e), strerror(e6));
	else
		snprintf(msg, sizeof msg, "%s: %s", step, strerror(e));
	napi_value code, text, err, num;
	napi_create_string_utf8(env, errno_code(e), NAPI_AUTO_LENGTH, &code);
	napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &text);
	napi_create_error(env, code, text, &err);
	napi_create_int32(env, e, &num);
	napi_set_named_property(env, err, "errno", num);
	return err;
}

/* On the main thread: done(err) or done(null, fd); the struct is freed here. */
static void call_done(napi_env env, napi_value js_done, void *context, void *data)
{
	(void)context;
	struct dial *d = data;
	if (env && js_done) {
		napi_value undefined, argv[2];
		napi_get_undefined(env, &undefined);
		if (d->fd >= 0) {
			napi_get_null(env, &argv[0]);
			napi_create_int32(env, d->fd, &argv[1]);
			d->fd = -1; /* handed over */
		} else {
			argv[0] = make_error(env, d->step, d->error, d->error6);
			argv[1] = undefined;
		}
		napi_call_function(env, undefined, js_done, 2, argv, NULL);
	}
	if (d->fd >= 0)
		close(d->fd);
	napi_release_threadsafe_function(d->done, napi_tsfn_release);
	free(d);
}

static napi_value throw_type(napi_env env, const char *msg)
{
	napi_throw_type_error(env, NULL, msg);
	return NULL;
}

static napi_value dial(napi_env env, napi_callback_info info)
{
	size_t argc = 4;
	napi_value argv[4];
	if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 4)
		return throw_type(env, "dial(netnsPath, port, timeoutMs, done)");
	struct dial *d = calloc(1, sizeof *d);
	if (!d)
		return throw_type(env, "out of memory");
	d->fd = -1;
	size_t len = 0;
	int32_t port = 0, timeout = 0;
	napi_valuetype t;
	if (napi_get_value_string_utf8(env, argv[0], d->netns, sizeof d->netns, &len) != napi_ok || len == 0 || len >= sizeof d->netns - 1 || d->netns[0] != '/' ||
	    napi_get_value_int32(env, argv[1], &port) != napi_ok || port < 1 || port > 65535 ||
	    napi_get_value_int32(env, argv[2], &timeout) != napi_ok || timeout < 1 ||
	    napi_typeof(env, argv[3], &t) != napi_ok || t != napi_function) {
		free(d);
		return throw_type(env, "dial(netnsPath: absolute path, port: 1-65535, timeoutMs: > 0, done: function)");
	}
	d->port = port;
	d->timeout_ms = timeout;
	napi_value name;
	napi_create_string_utf8(env, "corral-netns-dial", NAPI_AUTO_LENGTH, &name);
	if (napi_create_threadsafe_function(env, argv[3], NULL, name, 0, 1, NULL, NULL, NULL, call_done, &d->done) != napi_ok) {
		free(d);
		return throw_type(env, "cannot create the completion callback");
	}
	/* A dial in flight does not keep the daemon's event loop alive (shutdown is not held up
	 * by a pod that drops SYNs); its callback still runs while the loop does. */
	napi_unref_threadsafe_function(env, d->done);
	pthread_attr_t attr;
	pthread_t th;
	int started = -1;
	if (atomic_fetch_add(&dials_running, 1) >= MAX_DIALS) {
		atomic_fetch_sub(&dials_running, 1);
		d->error = EAGAIN;
		strcpy(d->step, "too many dials");
	} else if (pthread_attr_init(&attr) == 0) {
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		pthread_attr_setstacksize(&attr, 256 * 1024); /* room for the process's static TLS */
		started = pthread_create(&th, &attr, dial_thread, d);
		pthread_attr_destroy(&attr);
		if (started != 0) {
			atomic_fetch_sub(&dials_running, 1);
			d->error = started;
			strcpy(d->step, "thread");
		}
	}
	if (started != 0) /* report on the main thread, later, like a dial that failed */
		napi_call_threadsafe_function(d->done, d, napi_tsfn_blocking);
	return NULL;
}

NAPI_MODULE_INIT()
{
	napi_value fn;
	napi_create_function(env, "dial", NAPI_AUTO_LENGTH, dial, NULL, &fn);
	napi_set_named_property(env, exports, "dial", fn);
	return exports;
}
