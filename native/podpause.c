/*
 * corral-podpause: starts the init of a pod's shared PID namespace without an OCI
 * runtime (runc create + start of a pause container cost ~85 ms; this costs a fork).
 *
 *   corral-podpause run --pidfile FILE --root DIR [--net FILE] [--ipc FILE] [--uts FILE]
 *                       [--cgroup DIR]... [--cgroup-set DIR/FILE=VALUE]...
 *                       [--oom-score-adj N] [--uid N] [--gid N]
 *   corral-podpause -v
 *
 * run (as root, single-threaded):
 *   1. joins the pod's pinned namespaces (--net/--ipc/--uts: nsfs files made by
 *      corral-nshelper), so the pause shares them and holds none of its own;
 *   2. makes each --cgroup DIR (the sandbox's cgroup in every hierarchy; parents made as
 *      needed, a new cpuset cgroup gets its parent's cpus/mems), writes the --cgroup-set
 *      limits (a limit file the kernel lacks is skipped); the pause is moved into them
 *      before it is released (step 4);
 *   3. unshares a new PID namespace and forks the pause: PID 1 of it. The pause unshares
 *      a mount namespace of its own, makes it private, pivots into an empty
 *      read-only tmpfs mounted on --root (in its own mount namespace only: the host's DIR
 *      stays an empty folder) and detaches the old root, so it holds no host mount;
 *      cwd is /, every fd is closed (0-2 go to /dev/null), it is a session leader,
 *      drops every capability (bounding, ambient, effective, permitted, inheritable),
 *      sets no_new_privs and installs a seccomp filter that allows only what waiting
 *      and reaping need;
 *   4. writes "PID STARTTIME" to --pidfile (atomically, via FILE.tmp) and only then lets
 *      the pause go on: if this launcher dies first, the pause exits, so a pause outlives
 *      its launcher only with its pidfile written;
 *   5. prints {"pid":N,"startTime":"T"} and exits 0. The pause is re-parented to the
 *      host's init, which reaps it.
 * On any failure it kills the pause if there is one, removes the cgroups it made and the
 * pidfile, prints {"error":MSG,"step":STEP[,"errno":N]} and exits 1.
 *
 * The pause itself: SIGTERM/SIGINT exit 0 (a PID 1 gets only the signals it handles),
 * SIGCHLD reaps every exited child (orphans of the pod are re-parented to it). Stop is
 * SIGKILL to everything in its cgroup (the kernel kills the whole PID namespace with it).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/audit.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <grp.h>
#include <unistd.h>

#define CORRAL_PODPAUSE_VERSION "0.1.0"
#define MAX_CGROUPS 32
#define MAX_SETS 32

#include "json-report.h"

/* ---------- the pause (PID 1 of the pod) ---------- */

#include "pause-loop.h"

#ifndef AUDIT_ARCH_CURRENT
#if defined(__x86_64__)
#define AUDIT_ARCH_CURRENT AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define AUDIT_ARCH_CURRENT AUDIT_ARCH_AARCH64
#else
#error "corral-podpause: unknown architecture for the seccomp filter"
#endif
#endif

#define ALLOW(nr) BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (nr), 0, 1), BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)

/*
 * Only what the rest of the pause's life needs: the handshake (read, write, close), waiting
 * (pause / rt_sigsuspend / ppoll, as libc implements pause()), signal delivery and reaping,
 * exiting. Anything else fails with EPERM; another architecture's syscalls kill it.
 */
static int install_seccomp(void)
{
	struct sock_filter filter[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_CURRENT, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
#ifdef __NR_pause
		ALLOW(__NR_pause),
#endif
		ALLOW(__NR_rt_sigsuspend),
		ALLOW(__NR_ppoll),
		ALLOW(__NR_rt_sigreturn),
		ALLOW(__NR_rt_sigprocmask),
		ALLOW(__NR_restart_syscall),
		ALLOW(__NR_wait4),
		ALLOW(__NR_waitid),
		ALLOW(__NR_read),
		ALLOW(__NR_write),
		ALLOW(__NR_close),
		ALLOW(__NR_exit),
		ALLOW(__NR_exit_group),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
	};
	struct sock_fprog prog = { .len = (unsigned short)(sizeof(filter) / sizeof(filter[0])), .filter = filter };
	return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0);
}

/* Needs CAP_SETPCAP: done before a setuid to a non-root user clears the effective set. */
static int drop_bounding_set(void)
{
	for (int cap = 0; cap <= 63; cap++)
		if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL)
			return -1;
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL)
		return -1;
	return 0;
}

static int drop_capabilities(void)
{
	struct __user_cap_header_struct hdr = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
	struct __user_cap_data_struct data[2];
	memset(data, 0, sizeof(data));
	return (int)syscall(SYS_capset, &hdr, data);
}

/* Tells the launcher why the pause could not be set up ("step\terrno\tmessage"), exits. */
static void pause_fail(int fd, const char *step, const char *what)
{
	char buf[512];
	int n = snprintf(buf, sizeof(buf), "E%s\t%d\t%s", step, errno, what);
	if (n > 0 && write(fd, buf, (size_t)(n < (int)sizeof(buf) ? n : (int)sizeof(buf) - 1)) < 0) {
		/* the launcher is gone: nothing to tell */
	}
	_exit(1);
}

static void run_pause(int to_launcher, int from_launcher, const char *root, int uid, int gid)
{
	/* Not in the daemon's process group or session: no signal meant for it reaches us. */
	if (setsid() < 0)
		pause_fail(to_launcher, "setsid", "setsid");
	int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (devnull < 0)
		pause_fail(to_launcher, "devnull", "cannot open /dev/null");
	/* The root: an empty read-only tmpfs in a private mount namespace, the host's mounts detached. */
	if (unshare(CLONE_NEWNS) != 0)
		pause_fail(to_launcher, "unshare", "cannot unshare a mount namespace");
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0)
		pause_fail(to_launcher, "mount", "cannot make the mount namespace private");
	if (mount("corral-pause", root, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k,nr_inodes=2,mode=0555") != 0)
		pause_fail(to_launcher, "mount", "cannot mount the empty root");
	if (chdir(root) != 0)
		pause_fail(to_launcher, "chdir", "cannot enter the empty root");
	if (syscall(SYS_pivot_root, ".", ".") != 0)
		pause_fail(to_launcher, "pivot_root", "pivot_root");
	if (umount2(".", MNT_DETACH) != 0)
		pause_fail(to_launcher, "umount", "cannot detach the old root");
	if (chdir("/") != 0)
		pause_fail(to_launcher, "chdir", "chdir /");
	/* fds: 0-2 on /dev/null, the two handshake pipes, nothing else. */
	if (dup2(devnull, 0) < 0 || dup2(devnull, 1) < 0 || dup2(devnull, 2) < 0)
		pause_fail(to_launcher, "dup2", "dup2");
	if (dup3(to_launcher, 3, O_CLOEXEC) < 0 || dup3(from_launcher, 4, O_CLOEXEC) < 0)
		pause_fail(to_launcher, "dup2", "dup2");
	to_launcher = 3;
	from_launcher = 4;
	if (syscall(SYS_close_range, 5, ~0U, 0) != 0)
		for (int fd = 5; fd < 1024; fd++)
			close(fd);
	if (gid >= 0 && (setgroups(0, NULL) != 0 || setresgid(gid, gid, gid) != 0))
		pause_fail(to_launcher, "setgid", "cannot set the group");
	if (drop_bounding_set() != 0)
		pause_fail(to_launcher, "capabilities", "cannot drop the bounding set");
	if (uid >= 0 && setresuid(uid, uid, uid) != 0)
		pause_fail(to_launcher, "setuid", "cannot set the user");
	if (drop_capabilities() != 0)
		pause_fail(to_launcher, "capabilities", "cannot drop capabilities");
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
		pause_fail(to_launcher, "no_new_privs", "PR_SET_NO_NEW_PRIVS");
	if (install_pid1_handlers() != 0)
		pause_fail(to_launcher, "sigaction", "sigaction");
	if (install_seccomp() != 0)
		pause_fail(to_launcher, "seccomp", "cannot install the seccomp filter");
	/* Ready; then wait for the launcher to have written the pidfile. */
	if (write(to_launcher, "R", 1) != 1)
		_exit(1);
	close(to_launcher);
	char go = 0;
	ssize_t n;
	do
		n = read(from_launcher, &go, 1);
	while (n < 0 && errno == EINTR);
	if (n != 1 || go != 'G')
		_exit(1);
	close(from_launcher);
	for (;;)
		pause();
}

/* ---------- the launcher ---------- */

static char *made_cgroups[MAX_CGROUPS];
static int n_made_cgroups;

static int read_small(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, len - 1);
	close(fd);
	if (n < 0)
		return -1;
	buf[n] = '\0';
	return (int)n;
}

static int write_small(const char *path, const char *value)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return -1;
	ssize_t w = write(fd, value, strlen(value));
	int saved = errno;
	close(fd);
	errno = saved;
	return w == (ssize_t)strlen(value) ? 0 : -1;
}

/* A new cpuset cgroup starts with no cpus and mems: nothing could join it. Copy the parent's. */
static int inherit_cpuset(const char *dir)
{
	char file[PATH_MAX], parent[PATH_MAX], value[4096];
	static const char *const keys[] = { "cpuset.cpus", "cpuset.mems" };
	for (int i = 0; i < 2; i++) {
		if (snprintf(file, sizeof(file), "%s/%s", dir, keys[i]) >= (int)sizeof(file)) {
			errno = ENAMETOOLONG;
			return -1;
		}
		int n = read_small(file, value, sizeof(value));
		if (n < 0)
			return errno == ENOENT ? 0 : -1; /* not a cpuset hierarchy */
		if (n > 0 && value[0] != '\n')
			continue;
		snprintf(parent, sizeof(parent), "%s", dir);
		char *slash = strrchr(parent, '/');
		if (!slash)
			return -1;
		snprintf(slash, sizeof(parent) - (size_t)(slash - parent), "/%s", keys[i]);
		if (read_small(parent, value, sizeof(value)) < 0 || write_small(file, value) != 0)
			return -1;
	}
	return 0;
}

/* mkdir, making missing parents first: 1 if it made buf, 0 if buf was there, -1 on error. The
 * leaf is tried first, as its parents (the pod's and kubelet's cgroups, shared with other
 * pods) nearly always exist: one mkdir per hierarchy, not one per path component. */
static int make_dir_and_parents(char *buf)
{
	for (int made_parent = 0;; made_parent = 1) {
		if (mkdir(buf, 0755) == 0) {
			if (inherit_cpuset(buf) == 0)
				return 1;
			int e = errno;
			rmdir(buf); /* made here and unusable: not left behind (the caller records only a leaf that worked) */
			errno = e;
			return -1;
		}
		if (errno == EEXIST)
			return 0;
		char *slash = strrchr(buf, '/');
		if (errno != ENOENT || made_parent || !slash || slash == buf)
			return -1;
		*slash = '\0';
		int parent = make_dir_and_parents(buf);
		*slash = '/';
		if (parent < 0)
			return -1;
	}
}

/* mkdir -p; remembers the leaf if it made it (parents are shared with other pods and stay). */
static int make_cgroup(const char *dir)
{
	char buf[PATH_MAX];
	if (snprintf(buf, sizeof(buf), "%s", dir) >= (int)sizeof(buf)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	int made = make_dir_and_parents(buf);
	if (made < 0)
		return -1;
	if (made == 1 && n_made_cgroups < MAX_CGROUPS)
		made_cgroups[n_made_cgroups++] = strdup(buf);
	return 0;
}

static void undo_cgroups(void)
{
	for (int i = n_made_cgroups - 1; i >= 0; i--)
		for (int tries = 0; tries < 200 && rmdir(made_cgroups[i]) != 0 && errno == EBUSY; tries++)
			usleep(1000); /* the killed pause is still leaving it */
}

static const char *pidfile_path;
static char pidfile_tmp[PATH_MAX];

static int fail(const char *step, int err, const char *fmt, ...)
{
	char msg[900];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (pidfile_path) {
		unlink(pidfile_tmp);
		unlink(pidfile_path);
	}
	undo_cgroups();
	report_error(step, err, "%s", msg);
	return 1;
}

static int join_ns(const char *file, int type, const char *what)
{
	if (!file)
		return 0;
	int fd = open(file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return fail("setns", errno, "cannot open the pod's %s namespace %s", what, file);
	if (setns(fd, type) != 0) {
		int e = errno;
		close(fd);
		return fail("setns", e, "cannot join the pod's %s namespace %s", what, file);
	}
	close(fd);
	return 0;
}

/* Field 22 of /proc/PID/stat: what the daemon compares to tell a live pause from a reused PID. */
static int start_time(pid_t pid, char *out, size_t len)
{
	char path[64], buf[1024];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	if (read_small(path, buf, sizeof(buf)) < 0)
		return -1;
	char *p = strrchr(buf, ')');
	if (!p)
		return -1;
	p += 2;
	for (int field = 3; field < 22; field++) {
		p = strchr(p, ' ');
		if (!p)
			return -1;
		p++;
	}
	size_t n = strcspn(p, " ");
	if (n == 0 || n >= len)
		return -1;
	memcpy(out, p, n);
	out[n] = '\0';
	return 0;
}

static int parse_int(const char *s, long min, long max, long *out)
{
	char *end = NULL;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || !end || *end || end == s || v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

static int cmd_run(int argc, char **argv)
{
	const char *net = NULL, *ipc = NULL, *uts = NULL, *root = NULL, *pidfile = NULL, *oom = NULL;
	const char *cgroups[MAX_CGROUPS], *sets[MAX_SETS];
	int n_cgroups = 0, n_sets = 0;
	long uid = -1, gid = -1;

	for (int i = 0; i < argc; i++) {
		const char *a = argv[i];
		if (i + 1 >= argc) {
			report_error("args", 0, "%s needs a value", a);
			return 2;
		}
		const char *v = argv[++i];
		if (strcmp(a, "--net") == 0)
			net = v;
		else if (strcmp(a, "--ipc") == 0)
			ipc = v;
		else if (strcmp(a, "--uts") == 0)
			uts = v;
		else if (strcmp(a, "--root") == 0)
			root = v;
		else if (strcmp(a, "--pidfile") == 0)
			pidfile = v;
		else if (strcmp(a, "--oom-score-adj") == 0)
			oom = v;
		else if (strcmp(a, "--cgroup") == 0 && n_cgroups < MAX_CGROUPS)
			cgroups[n_cgroups++] = v;
		else if (strcmp(a, "--cgroup-set") == 0 && n_sets < MAX_SETS)
			sets[n_sets++] = v;
		else if (strcmp(a, "--uid") == 0 && parse_int(v, 0, 0x7fffffff, &uid) == 0)
			;
		else if (strcmp(a, "--gid") == 0 && parse_int(v, 0, 0x7fffffff, &gid) == 0)
			;
		else {
			report_error("args", 0, "bad option %s %s", a, v);
			return 2;
		}
	}
	if (!root || root[0] != '/' || !pidfile || pidfile[0] != '/') {
		report_error("args", 0, "run needs --root DIR and --pidfile FILE (absolute)");
		return 2;
	}
	if (snprintf(pidfile_tmp, sizeof(pidfile_tmp), "%s.tmp", pidfile) >= (int)sizeof(pidfile_tmp)) {
		report_error("args", 0, "--pidfile is too long");
		return 2;
	}
	long oom_value = 0;
	if (oom && parse_int(oom, -1000, 1000, &oom_value) != 0) {
		report_error("args", 0, "--oom-score-adj must be -1000..1000");
		return 2;
	}

	/* 1. The pod's namespaces: the pause holds only its PID namespace. */
	if (join_ns(net, CLONE_NEWNET, "network") || join_ns(ipc, CLONE_NEWIPC, "IPC") || join_ns(uts, CLONE_NEWUTS, "UTS"))
		return 1;

	/* 2. Its cgroups, with their limits (the pause is moved in once it exists). */
	for (int i = 0; i < n_cgroups; i++)
		if (make_cgroup(cgroups[i]) != 0)
			return fail("cgroup", errno, "cannot create cgroup %s", cgroups[i]);
	for (int i = 0; i < n_sets; i++) {
		char file[PATH_MAX];
		const char *eq = strchr(sets[i], '=');
		if (!eq || (size_t)(eq - sets[i]) >= sizeof(file))
			return fail("args", 0, "bad --cgroup-set %s (want FILE=VALUE)", sets[i]);
		memcpy(file, sets[i], (size_t)(eq - sets[i]));
		file[eq - sets[i]] = '\0';
		if (write_small(file, eq + 1) != 0 && errno != ENOENT)
			return fail("cgroup", errno, "cannot write %s to %s", eq + 1, file);
	}
	if (oom) {
		char value[16];
		snprintf(value, sizeof(value), "%ld", oom_value);
		if (write_small("/proc/self/oom_score_adj", value) != 0)
			return fail("oom_score_adj", errno, "cannot set oom_score_adj %s", value);
	}

	/* 3. A PID namespace (for the pause's children), then the pause, which makes its own mount namespace. */
	if (unshare(CLONE_NEWPID) != 0)
		return fail("unshare", errno, "cannot unshare a PID namespace");
	int up[2], down[2];
	if (pipe2(up, O_CLOEXEC) != 0 || pipe2(down, O_CLOEXEC) != 0)
		return fail("pipe", errno, "pipe");
	pidfile_path = pidfile;
	fflush(stdout);
	pid_t pid = fork();
	if (pid < 0)
		return fail("fork", errno, "fork");
	if (pid == 0) {
		close(up[0]);
		close(down[1]);
		run_pause(up[1], down[0], root, (int)uid, (int)gid);
	}
	close(up[1]);
	close(down[0]);

	/* Ready, or why not. */
	char msg[512];
	ssize_t n;
	do
		n = read(up[0], msg, sizeof(msg) - 1);
	while (n < 0 && errno == EINTR);
	if (n != 1 || msg[0] != 'R') {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		if (n > 1 && msg[0] == 'E') {
			msg[n] = '\0';
			char *step = msg + 1, *err = strchr(step, '\t');
			char *text = err ? strchr(err + 1, '\t') : NULL;
			if (err && text) {
				*err++ = '\0';
				*text++ = '\0';
				return fail(step, atoi(err), "the pause could not be set up: %s", text);
			}
		}
		return fail("pause", 0, "the pause exited during its setup");
	}

	/* Into its cgroups before it may go on (this launcher never joins them: undo can rmdir). */
	for (int i = 0; i < n_cgroups; i++) {
		char procs[PATH_MAX], value[16];
		snprintf(procs, sizeof(procs), "%s/cgroup.procs", cgroups[i]);
		snprintf(value, sizeof(value), "%d", (int)pid);
		if (write_small(procs, value) != 0) {
			int e = errno;
			kill(pid, SIGKILL);
			waitpid(pid, NULL, 0);
			return fail("cgroup", e, "cannot move the pause into cgroup %s", cgroups[i]);
		}
	}

	/* 4. The pidfile, before the pause may live on. */
	char started[32];
	char line[64];
	if (start_time(pid, started, sizeof(started)) != 0) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		return fail("stat", errno, "cannot read the start time of the pause %d", (int)pid);
	}
	snprintf(line, sizeof(line), "%d %s\n", (int)pid, started);
	int fd = open(pidfile_tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (fd < 0 || write(fd, line, strlen(line)) != (ssize_t)strlen(line) || close(fd) != 0 || rename(pidfile_tmp, pidfile) != 0) {
		int e = errno;
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		return fail("pidfile", e, "cannot write %s", pidfile);
	}
	if (write(down[1], "G", 1) != 1) {
		int e = errno;
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		return fail("pause", e, "cannot release the pause");
	}
	printf("{\"pid\":%d,\"startTime\":\"%s\"}\n", (int)pid, started);
	return fflush(stdout) == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
	if (argc >= 2 && (strcmp(argv[1], "-v") == 0 || strcmp(argv[1], "--version") == 0)) {
		printf("corral-podpause %s\n", CORRAL_PODPAUSE_VERSION);
		return 0;
	}
	if (argc >= 2 && strcmp(argv[1], "run") == 0)
		return cmd_run(argc - 2, argv + 2);
	report_error("args", 0, "usage: corral-podpause run --pidfile FILE --root DIR [--net FILE] [--ipc FILE] [--uts FILE] [--cgroup DIR]... [--cgroup-set FILE=VALUE]... [--oom-score-adj N] [--uid N] [--gid N]");
	return 2;
}
