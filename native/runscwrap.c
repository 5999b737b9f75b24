/*
 * corral-runsc: runs gVisor's runsc in a mount namespace of its own where /proc/sys/net is
 * an empty tmpfs.
 *
 *   corral-runsc <runsc binary> <runsc args...>
 *
 * Why: runsc (up to at least the Debian 2022-12 release) refuses a sandbox in a network
 * namespace that "looks like the host's", and decides that by whether
 * /proc/sys/net/core/rmem_default exists after joining the namespace. Since Linux 6.x that
 * sysctl exists in every network namespace, so runsc refuses every pod network ("cannot run
 * with network enabled in root network namespace"). With /proc/sys/net hidden only from
 * runsc's own processes, the check passes and the sandbox copies the pinned namespace's
 * interfaces as intended. The host, the daemon and every other process keep the real
 * /proc/sys/net.
 *
 * The new mount namespace is a *slave* of the daemon's: mounts the daemon makes or removes
 * later (container root filesystems, the pod's netns pin and shm) still reach runsc's
 * gofer and sandbox processes, and the tmpfs made here never reaches the host. runsc's
 * state (--root) is an ordinary directory on the host's filesystems, the same in both
 * namespaces.
 *
 * Containers of a pod (`create` of a bundle annotated io.kubernetes.cri.container-type =
 * "container", with --pid-file): runsc writes the *sandbox's* PID to the pid file, a process
 * that is no child of the caller and outlives the container. conmon, which monitors the
 * container by that PID, would record an exit at once. So after a successful create this
 * forks a waiter, writes the waiter's PID to the pid file instead, and exits; the waiter
 * (adopted by conmon, a child subreaper) runs `runsc wait <id>` once the container has
 * started (see wait_for_container) and exits with the container's exit status (128+N for signal N, as runsc says).
 * This runsc also gives a pod container the stdio of the `start` process, not of `create`:
 * so the waiter keeps conmon's pipes (fds 0-2), records its PID in <root>/<id>.corral-stdio,
 * and `start` takes them from /proc/<waiter>/fd/0-2 before it becomes runsc.
 *
 * Exit status: runsc's own (this process becomes runsc); 127 when the mount namespace
 * cannot be made or runsc cannot be run, with the reason on stderr.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Global runsc flags Corral passes with their value as the next argument. */
static int flag_takes_value(const char *a)
{
	while (*a == '-')
		a++;
	return strcmp(a, "root") == 0 || strcmp(a, "log") == 0 || strcmp(a, "log-format") == 0 ||
	       strcmp(a, "debug-log") == 0 || strcmp(a, "panic-log") == 0;
}

/* The value of --name (forms: --name V, --name=V, -name V, -name=V) in argv[from..], or NULL. */
static const char *flag_value(int argc, char **argv, int from, const char *name)
{
	size_t n = strlen(name);
	for (int i = from; i < argc; i++) {
		const char *a = argv[i];
		if (a[0] != '-')
			continue;
		a += (a[1] == '-') ? 2 : 1;
		if (strncmp(a, name, n) != 0)
			continue;
		if (a[n] == '=')
			return a + n + 1;
		if (a[n] == '\0' && i + 1 < argc)
			return argv[i + 1];
	}
	return NULL;
}

/* Reads a whole (small) file; NULL on failure. */
static char *read_file(const char *path, size_t max)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	char *buf = malloc(max + 1);
	size_t len = 0;
	ssize_t r;
	while (buf && len < max && (r = read(fd, buf + len, max - len)) > 0)
		len += (size_t)r;
	close(fd);
	if (buf)
		buf[len] = '\0';
	return buf;
}

/* Whether the bundle's config.json says this is an application container of a pod. */
static int is_pod_container(const char *bundle)
{
	char path[4096];
	if (snprintf(path, sizeof path, "%s/config.json", bundle) >= (int)sizeof path)
		return 0;
	char *json = read_file(path, 8 << 20);
	if (!json)
		return 0;
	int found = 0;
	static const char *keys[] = {"\"io.kubernetes.cri.container-type\"", "\"io.kubernetes.cri-o.ContainerType\""};
	for (size_t k = 0; k < 2 && !found; k++) {
		const char *p = strstr(json, keys[k]);
		if (!p)
			continue;
		p += strlen(keys[k]);
		while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == ':')
			p++;
		found = strncmp(p, "\"container\"", 11) == 0;
	}
	free(json);
	return found;
}

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/*
 * The container's status from runsc's state file (<root>/<id>_sandbox:<sandbox id>.state):
 * 1 created (or creating), 0 anything else (running, stopped), -1 no state file (deleted).
 */
static int still_created(const char *root, const char *id)
{
	char prefix[512];
	if (snprintf(prefix, sizeof prefix, "%s_sandbox:", id) >= (int)sizeof prefix)
		return -1;
	DIR *d = opendir(root);
	if (!d)
		return -1;
	struct dirent *e;
	int result = -1;
	while ((e = readdir(d)) != NULL) {
		size_t n = strlen(e->d_name);
		if (strncmp(e->d_name, prefix, strlen(prefix)) != 0 || n < 6 || strcmp(e->d_name + n - 6, ".state") != 0)
			continue;
		char path[4600];
		snprintf(path, sizeof path, "%s/%s", root, e->d_name);
		char *json = read_file(path, 8 << 20);
		if (!json)
			break;
		/* The top-level status comes after bundleDir (the spec, before it, is not searched). */
		const char *after = strstr(json, "\"bundleDir\":");
		const char *st = after ? strstr(after, "\"status\":\"") : NULL;
		result = st && (strncmp(st + 10, "created\"", 8) == 0 || strncmp(st + 10, "creating\"", 9) == 0);
		free(json);
		break;
	}
	closedir(d);
	return result;
}

/*
 * The waiter: once the container has started, `runsc --root R wait ID`; exits with the
 * container's status. It must not ask before: this runsc's `wait` on a created container
 * blocks the sandbox, and `start` with it. So it watches runsc's state file (no process
 * per look), backing off to 250 ms; a container deleted before it started ends it (255).
 */
static char holder_file[4200];

/* The waiter's exit: the container's stdio record goes with it. */
static void waiter_exit(int code)
{
	if (holder_file[0])
		unlink(holder_file);
	_exit(code);
}

static void wait_for_container(const char *runsc, const char *root, const char *id)
{
	long backoff = 10;
	snprintf(holder_file, sizeof holder_file, "%s/%s.corral-stdio", root, id);
	int created;
	prctl(PR_SET_NAME, "runsc-waiter");
	while ((created = still_created(root, id)) == 1) {
		sleep_ms(backoff);
		if (backoff < 250)
			backoff *= 2;
	}
	if (created < 0)
		waiter_exit(255);
	int fds[2];
	if (pipe2(fds, O_CLOEXEC) != 0)
		waiter_exit(255);
	pid_t pid = fork();
	if (pid < 0)
		waiter_exit(255);
	if (pid == 0) {
		dup2(fds[1], 1);
		int null = open("/dev/null", O_RDWR);
		dup2(null, 0);
		dup2(null, 2);
		char rootflag[4200];
		snprintf(rootflag, sizeof rootflag, "--root=%s", root);
		char *args[] = {(char *)runsc, rootflag, "wait", (char *)id, NULL};
		execvp(runsc, args);
		_exit(127);
	}
	close(fds[1]);
	char out[8192];
	size_t len = 0;
	ssize_t r;
	while (len < sizeof out - 1 && ((r = read(fds[0], out + len, sizeof out - 1 - len)) > 0 || (r < 0 && errno == EINTR)))
		if (r > 0)
			len += (size_t)r;
	out[len] = '\0';
	close(fds[0]);
	int st;
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	const char *es = strstr(out, "\"exitStatus\":");
	if (WIFEXITED(st) && WEXITSTATUS(st) == 0 && es)
		waiter_exit(atoi(es + strlen("\"exitStatus\":")) & 0xff);
	waiter_exit(255);
}

/*
 * `start` of a pod container: this runsc gives the container the stdio of the `start`
 * process (not of `create`), so take conmon's pipes back from the waiter that holds them
 * (/proc/<waiter>/fd/N opens the very pipe). No record: not a pod container, nothing to do.
 */
static int start_with_container_stdio(const char *root, const char *id)
{
	char holder[4200], path[64];
	if (snprintf(holder, sizeof holder, "%s/%s.corral-stdio", root, id) >= (int)sizeof holder)
		return 0;
	char *num = read_file(holder, 32);
	if (!num)
		return 0;
	int pid = atoi(num);
	free(num);
	/* The waiter's command line names the container: a reused PID is not taken for it. */
	snprintf(path, sizeof path, "/proc/%d/cmdline", pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	char cmd[65536];
	ssize_t n = fd >= 0 ? read(fd, cmd, sizeof cmd - 1) : -1;
	if (fd >= 0)
		close(fd);
	int named = 0;
	for (ssize_t i = 0; n > 0 && i < n; i += (ssize_t)strlen(cmd + i) + 1) {
		cmd[n] = '\0';
		if (strcmp(cmd + i, id) == 0)
			named = 1;
	}
	if (pid <= 0 || !named) {
		fprintf(stderr, "corral-runsc: the process holding container %s's stdio (%d) is gone\n", id, pid);
		return -1;
	}
	static const int flags[3] = {O_RDONLY, O_WRONLY, O_WRONLY};
	for (int i = 0; i < 3; i++) {
		snprintf(path, sizeof path, "/proc/%d/fd/%d", pid, i);
		int f = open(path, flags[i]);
		if (f < 0 || dup2(f, i) < 0) {
			fprintf(stderr, "corral-runsc: taking container %s's stdio from %s: %s\n", id, path, strerror(errno));
			return -1;
		}
		if (f != i)
			close(f);
	}
	return 0;
}

/*
 * create of a pod's container: runs runsc as a child; on success starts the waiter and
 * puts its PID in the pid file. Returns the exit status for this process.
 */
static int create_with_waiter(char **argv, const char *root, const char *pid_file, const char *id)
{
	pid_t pid = fork();
	if (pid < 0) {
		fprintf(stderr, "corral-runsc: fork: %s\n", strerror(errno));
		return 127;
	}
	if (pid == 0) {
		execvp(argv[0], argv);
		fprintf(stderr, "corral-runsc: cannot run %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	int st;
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return 127;
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
	pid_t waiter = fork();
	if (waiter < 0) {
		fprintf(stderr, "corral-runsc: fork (waiter): %s\n", strerror(errno));
		return 127;
	}
	if (waiter == 0) {
		/*
		 * Keeps conmon's stdio pipes (0-2) for `start`, where this runsc hands a pod
		 * container's stdio to the sandbox (see start_with_container_stdio); nothing else.
		 */
		for (int fd = 3; fd < 1024; fd++)
			close(fd);
		wait_for_container(argv[0], root, id);
	}
	char holder[4200];
	if (snprintf(holder, sizeof holder, "%s/%s.corral-stdio", root, id) < (int)sizeof holder) {
		char num0[32];
		int fd0 = open(holder, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		int n0 = snprintf(num0, sizeof num0, "%d", (int)waiter);
		if (fd0 < 0 || write(fd0, num0, (size_t)n0) != n0) {
			fprintf(stderr, "corral-runsc: writing %s: %s\n", holder, strerror(errno));
			kill(waiter, SIGKILL);
			return 127;
		}
		close(fd0);
	}
	char tmp[4200], num[32];
	if (snprintf(tmp, sizeof tmp, "%s.corral-tmp", pid_file) >= (int)sizeof tmp)
		goto fail;
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		goto fail;
	int n = snprintf(num, sizeof num, "%d", (int)waiter);
	if (write(fd, num, (size_t)n) != n || close(fd) != 0 || rename(tmp, pid_file) != 0)
		goto fail;
	return 0;
fail:
	fprintf(stderr, "corral-runsc: writing the waiter's pid to %s: %s\n", pid_file, strerror(errno));
	kill(waiter, SIGKILL);
	return 127;
}

int main(int argc, char **argv)
{
	if (argc < 2 || argv[1][0] == '\0') {
		fprintf(stderr, "usage: corral-runsc <runsc binary> <runsc args...>\n");
		return 127;
	}
	if (unshare(CLONE_NEWNS) != 0) {
		fprintf(stderr, "corral-runsc: unshare(CLONE_NEWNS): %s (needs CAP_SYS_ADMIN)\n", strerror(errno));
		return 127;
	}
	if (mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) != 0) {
		fprintf(stderr, "corral-runsc: making / a slave mount: %s\n", strerror(errno));
		return 127;
	}
	if (mount("corral-runsc", "/proc/sys/net", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY, "size=4k,mode=0555") != 0) {
		fprintf(stderr, "corral-runsc: hiding /proc/sys/net (tmpfs): %s\n", strerror(errno));
		return 127;
	}
	/* The subcommand: the first argument that is not a global flag (or a flag's value). */
	int sub = 2;
	while (sub < argc && argv[sub][0] == '-')
		sub += (strchr(argv[sub], '=') == NULL && flag_takes_value(argv[sub])) ? 2 : 1;
	if (sub < argc && strcmp(argv[sub], "create") == 0) {
		const char *pid_file = flag_value(argc, argv, sub + 1, "pid-file");
		const char *bundle = flag_value(argc, argv, sub + 1, "bundle");
		const char *id = argv[argc - 1];
		if (pid_file && is_pod_container(bundle ? bundle : "."))
			{
			const char *root = flag_value(sub, argv, 2, "root");
			return create_with_waiter(argv + 1, root ? root : "/var/run/runsc", pid_file, id);
		}
	}
	if (sub < argc && strcmp(argv[sub], "start") == 0) {
		const char *root = flag_value(sub, argv, 2, "root");
		if (start_with_container_stdio(root ? root : "/var/run/runsc", argv[argc - 1]) != 0)
			return 127;
	}
	execvp(argv[1], argv + 1);
	fprintf(stderr, "corral-runsc: cannot run %s: %s\n", argv[1], strerror(errno));
	return 127;
}
