/*
 * corral-netns-dial.node: a Node-API addon that makes a TCP socket inside a pod's pinned
 * network namespace, for the daemon to connect and own (port-forward: pod socket <-> daemon
 * <-> client, as in containerd, with no helper process or pipe in between;
 * corral-streamhelper's portforward mode is the fallback when this addon is absent).
 *
 *   socketIn(netnsPath: string, family: 4 | 6): number
 *
 * Returns a new, unconnected TCP socket (non-blocking, close-on-exec) that belongs to the
 * network namespace pinned at netnsPath: a socket stays in the namespace it was made in for
 * its whole life, so the caller connects it (net.Socket({ fd }).connect) and its traffic is
 * the pod's. Only a short-lived thread of this call's own enters the namespace (setns acts on
 * the calling thread; the main thread and libuv's pool never do): it opens the pin, joins it,
 * makes the socket and ends, and the call waits for it (tens of microseconds: nothing in it
 * blocks, the pin is opened O_NONBLOCK). No other thread ever calls into Node. Throws an
 * Error with `code` (the errno's name) and `errno` when the namespace cannot be entered or the
 * socket made.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <node_api.h>

#define MAX_PATH 4096

struct request {
	char netns[MAX_PATH];
	int family;
	int fd;		/* the socket, or -1 */
	int error;	/* errno when fd is -1 */
	const char *step;
};

/* Runs on its own thread, which ends right after: it is left in the pod's namespace. */
static void *make_socket(void *arg)
{
	struct request *r = arg;
	int ns = open(r->netns, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (ns < 0 || setns(ns, CLONE_NEWNET) != 0) {
		r->error = errno;
		r->step = "entering the pod's network namespace";
	} else {
		r->fd = socket(r->family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (r->fd < 0) {
			r->error = errno;
			r->step = "making a socket in the pod's network namespace";
		}
	}
	if (ns >= 0)
		close(ns);
	return NULL;
}

static napi_value throw_errno(napi_env env, const char *step, const char *path, int e)
{
	char msg[MAX_PATH + 256];
	snprintf(msg, sizeof msg, "%s %s: %s", step, path, strerror(e));
	const char *name = strerrorname_np(e);
	napi_value code, text, err, num;
	napi_create_string_utf8(env, name ? name : "EUNKNOWN", NAPI_AUTO_LENGTH, &code);
	napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &text);
	napi_create_error(env, code, text, &err);
	napi_create_int32(env, e, &num);
	napi_set_named_property(env, err, "errno", num);
	napi_throw(env, err);
	return NULL;
}

static napi_value socket_in(napi_env env, napi_callback_info info)
{
	size_t argc = 2;
	napi_value argv[2];
	struct request r = {.fd = -1};
	size_t len = 0;
	int32_t family = 0;
	if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 2 ||
	    napi_get_value_string_utf8(env, argv[0], r.netns, sizeof r.netns, &len) != napi_ok || len == 0 || len >= sizeof r.netns - 1 ||
	    r.netns[0] != '/' || strlen(r.netns) != len || napi_get_value_int32(env, argv[1], &family) != napi_ok || (family != 4 && family != 6)) {
		napi_throw_type_error(env, NULL, "socketIn(netnsPath: an absolute path, family: 4 or 6)");
		return NULL;
	}
	r.family = family == 4 ? AF_INET : AF_INET6;
	pthread_attr_t attr;
	pthread_t thread;
	int e = pthread_attr_init(&attr);
	if (e == 0) {
		pthread_attr_setstacksize(&attr, 256 * 1024); /* room for the process's static TLS */
		e = pthread_create(&thread, &attr, make_socket, &r);
		pthread_attr_destroy(&attr);
	}
	if (e != 0)
		return throw_errno(env, "starting a thread to enter", r.netns, e);
	pthread_join(thread, NULL);
	if (r.fd < 0)
		return throw_errno(env, r.step, r.netns, r.error);
	napi_value fd;
	napi_create_int32(env, r.fd, &fd);
	return fd;
}

NAPI_MODULE_INIT()
{
	napi_value fn;
	napi_create_function(env, "socketIn", NAPI_AUTO_LENGTH, socket_in, NULL, &fn);
	napi_set_named_property(env, exports, "socketIn", fn);
	return exports;
}
