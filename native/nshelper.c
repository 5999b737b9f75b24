/*
 * corral-nshelper: creates, removes and inspects Corral's pinned pod
 * namespaces, so that the Node.js daemon never calls unshare(2) or setns(2)
 * itself (both act on the calling thread only, and a libuv pool thread left in
 * a pod's network namespace would later do unrelated work there).
 *
 *   corral-nshelper create [--path FILE] [--sysctl KEY=VALUE]...
 *                          [--ipc FILE] [--uts FILE [--hostname NAME]] [--shm DIR]
 *   corral-nshelper remove FILE...
 *   corral-nshelper check FILE
 *   corral-nshelper -v
 *
 * create: makes each FILE (O_CREAT|O_EXCL, mode 0444; missing parent folders
 * are made 0755), unshares the requested namespaces in this single-threaded
 * process, brings the loopback interface up (when it made a network namespace:
 * --path may be left out for a host-network pod that pins only IPC/UTS), writes the sysctls under
 * /proc/sys (after unshare, /proc/sys/net/... and the IPC/UTS sysctls refer to
 * this process's new namespaces), sets the hostname in the new UTS namespace,
 * and finally bind-mounts /proc/self/ns/<type> onto each FILE. When the
 * process exits, the bind mounts keep the namespaces alive. Any failure undoes
 * every step already taken (unmount, unlink, remove folders it made) and
 * prints {"error":..., "step":..., "errno":..., "code":...}; success prints
 * {"path":FILE,"ipc":FILE,"uts":FILE} (the ones asked for). One JSON object, one line, on stdout, in every case.
 *
 * --shm DIR: also makes DIR (0755) and mounts the pod's /dev/shm tmpfs on it
 * (64 MiB, mode 1777, nosuid, nodev, noexec) in the caller's mount namespace,
 * first, so the pod's files cost one exec, not two (undone like the rest).
 *
 * remove: for each FILE, detaches every mount stacked on it (umount2 with
 * MNT_DETACH; "not a mount point" or "does not exist" mean done) and unlinks
 * it (ENOENT means done; a directory, such as a --shm DIR, is removed with
 * rmdir). Running it twice is harmless.
 *
 * check: {"pinned":true} when FILE is on nsfs, {"pinned":false} when it is
 * not or does not exist. Exit status 0 either way.
 *
 * Mount propagation of the namespace folder (e.g. /var/run/netns): unlike
 * `ip netns add`, this helper deliberately does NOT turn the folder into a
 * shared bind mount of itself. The helper never leaves the caller's mount
 * namespace, so each pin is mounted in the host mount namespace where the
 * daemon, the kubelet, CNI plugins and the OCI runtime (which opens the path
 * before it enters the container) all see it. Whether pins also propagate into
 * other, already-existing mount namespaces (e.g. a CNI agent pod with a
 * HostToContainer hostPath of /var/run/netns) then follows the propagation of
 * the filesystem holding the folder: shared on systemd hosts, where / and /run
 * are shared by default. Changing the propagation of a host folder is a
 * host-wide side effect that would have to be undone by someone, and the
 * helper also serves temporary folders in tests; leaving it alone is what the
 * other CRI runtimes do too. If an administrator does make the folder shared
 * (for instance by running `ip netns add`), Corral's pins simply propagate as
 * well, and removal's MNT_DETACH unmount propagates to the copies.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <net/if.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/types.h>
#include <unistd.h>

#define CORRAL_NSHELPER_VERSION "0.1.0"

#ifndef NSFS_MAGIC
#define NSFS_MAGIC 0x6e736673
#endif
#ifndef UMOUNT_NOFOLLOW
#define UMOUNT_NOFOLLOW 0x00000008
#endif

#define MAX_SYSCTLS 128
#define MAX_DIRS 32
#define MAX_UMOUNT_LAYERS 64
#define SYSCTL_PATH_MAX 320 /* "/proc/sys/" + a name of at most 256 bytes */

#include "json-report.h"

static int usage_error(const char *what)
{
	report_error("args", 0,
		     "%s; usage: corral-nshelper create [--path FILE] [--sysctl K=V]... [--ipc FILE] "
		     "[--uts FILE [--hostname NAME]] | remove FILE... | check FILE",
		     what);
	return 2;
}

/* ---------- create ---------- */

struct target {
	const char *type; /* "net", "ipc", "uts": name under /proc/self/ns */
	int flag;         /* CLONE_NEW* */
	const char *path; /* NULL when not requested */
	int created;
	int mounted;
};

static struct target targets[3] = {
	{ "net", CLONE_NEWNET, NULL, 0, 0 },
	{ "ipc", CLONE_NEWIPC, NULL, 0, 0 },
	{ "uts", CLONE_NEWUTS, NULL, 0, 0 },
};

static char *made_dirs[MAX_DIRS];
static int n_made_dirs;

static const char *shm_dir;
static int shm_made, shm_mounted;

static void undo(void)
{
	for (int i = 2; i >= 0; i--) {
		struct target *t = &targets[i];
		if (t->mounted && umount2(t->path, MNT_DETACH | UMOUNT_NOFOLLOW) == 0)
			t->mounted = 0;
		if (t->created && unlink(t->path) == 0)
			t->created = 0;
	}
	if (shm_mounted && umount2(shm_dir, MNT_DETACH | UMOUNT_NOFOLLOW) == 0)
		shm_mounted = 0;
	if (shm_made && rmdir(shm_dir) == 0)
		shm_made = 0;
	/* Innermost first; a folder someone else has meanwhile used stays (ENOTEMPTY). */
	while (n_made_dirs > 0) {
		char *d = made_dirs[--n_made_dirs];
		rmdir(d);
		free(d);
	}
}

static int fail(const char *step, int err, const char *fmt, ...)
{
	char msg[900];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	undo();
	report_error(step, err, "%s", msg);
	return 1;
}

static int valid_target_path(const char *p)
{
	size_t len = strlen(p);
	return p[0] == '/' && len > 1 && len < PATH_MAX && p[len - 1] != '/';
}

/* mkdir -p of the folder holding `path`, 0755, remembering what it made. */
static int make_parents(const char *path)
{
	char buf[PATH_MAX];
	snprintf(buf, sizeof(buf), "%s", path);
	char *slash = strrchr(buf, '/');
	if (slash == buf)
		return 0; /* a file directly under / */
	*slash = '\0';
	for (char *p = buf + 1;; p++) {
		if (*p != '/' && *p != '\0')
			continue;
		char saved = *p;
		*p = '\0';
		if (mkdir(buf, 0755) == 0) {
			if (n_made_dirs >= MAX_DIRS) {
				rmdir(buf);
				errno = ENAMETOOLONG;
				return -1;
			}
			made_dirs[n_made_dirs] = strdup(buf);
			if (!made_dirs[n_made_dirs]) {
				rmdir(buf);
				errno = ENOMEM;
				return -1;
			}
			n_made_dirs++;
		} else if (errno != EEXIST) {
			return -1;
		}
		*p = saved;
		if (saved == '\0')
			return 0;
	}
}

static int loopback_up(void)
{
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0 && errno == EAFNOSUPPORT)
		fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	struct ifreq ifr;
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "lo");
	int rc = ioctl(fd, SIOCGIFFLAGS, &ifr);
	if (rc == 0 && !(ifr.ifr_flags & IFF_UP)) {
		ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
		rc = ioctl(fd, SIOCSIFFLAGS, &ifr);
	}
	int saved = errno;
	close(fd);
	errno = saved;
	return rc;
}

/*
 * Turns a sysctl name into a /proc/sys path. As with sysctl(8): without a '/',
 * dots separate components (net.ipv4.ip_forward); with one, '/' separates them
 * and dots are literal (net/ipv4/conf/eth0.100/rp_filter). Rejects names that
 * could leave /proc/sys.
 */
static int sysctl_path(const char *key, size_t keylen, char *out, size_t outlen)
{
	if (keylen == 0 || keylen > 256 || key[0] == '/' || key[0] == '.')
		return -1;
	int slashes = memchr(key, '/', keylen) != NULL;
	char sep = slashes ? '/' : '.';
	size_t n = (size_t)snprintf(out, outlen, "/proc/sys/");
	size_t comp_start = n;
	for (size_t i = 0; i < keylen; i++) {
		unsigned char c = (unsigned char)key[i];
		if (c <= 0x20 || c == 0x7f)
			return -1;
		if (n + 2 >= outlen)
			return -1;
		if (c == (unsigned char)sep) {
			size_t comp_len = n - comp_start;
			if (comp_len == 0 || (comp_len == 1 && out[comp_start] == '.') ||
			    (comp_len == 2 && out[comp_start] == '.' && out[comp_start + 1] == '.'))
				return -1;
			out[n++] = '/';
			comp_start = n;
		} else {
			out[n++] = (char)c;
		}
	}
	size_t comp_len = n - comp_start;
	if (comp_len == 0 || (comp_len == 1 && out[comp_start] == '.') ||
	    (comp_len == 2 && out[comp_start] == '.' && out[comp_start + 1] == '.'))
		return -1;
	out[n] = '\0';
	return 0;
}

/*
 * The namespace (index in targets[]) a /proc/sys path belongs to: 0 net, 1 ipc, or -1
 * for a node-wide sysctl. The helper writes a sysctl only into a namespace it has just
 * made, so a host-network pod's net.* sysctl can never reach the host's.
 */
static int sysctl_target(const char *path)
{
	const char *rel = path + strlen("/proc/sys/");
	if (strncmp(rel, "net/", 4) == 0)
		return 0;
	if (strncmp(rel, "kernel/shm", 10) == 0 || strncmp(rel, "kernel/msg", 10) == 0 ||
	    strncmp(rel, "kernel/sem", 10) == 0 || strncmp(rel, "fs/mqueue/", 10) == 0)
		return 1;
	return -1;
}

static int write_sysctl(const char *path, const char *value)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return -1;
	size_t len = strlen(value);
	ssize_t w = write(fd, value, len);
	int saved = errno;
	if (close(fd) != 0 && w >= 0) {
		saved = errno;
		w = -1;
	}
	if (w < 0) {
		errno = saved;
		return -1;
	}
	if ((size_t)w != len) {
		errno = EIO;
		return -1;
	}
	return 0;
}

static int cmd_create(int argc, char **argv)
{
	const char *sysctls[MAX_SYSCTLS];
	int n_sysctls = 0;
	const char *hostname = NULL;

	for (int i = 0; i < argc; i++) {
		const char *a = argv[i];
		const char **slot = NULL;
		if (strcmp(a, "--path") == 0 || strcmp(a, "--net") == 0)
			slot = &targets[0].path;
		else if (strcmp(a, "--ipc") == 0)
			slot = &targets[1].path;
		else if (strcmp(a, "--uts") == 0)
			slot = &targets[2].path;
		else if (strcmp(a, "--hostname") == 0)
			slot = &hostname;
		else if (strcmp(a, "--shm") == 0)
			slot = &shm_dir;
		else if (strcmp(a, "--sysctl") == 0 || strcmp(a, "-s") == 0) {
			if (i + 1 >= argc)
				return usage_error("--sysctl needs KEY=VALUE");
			if (n_sysctls >= MAX_SYSCTLS)
				return usage_error("too many --sysctl options");
			sysctls[n_sysctls++] = argv[++i];
			continue;
		} else {
			char what[320];
			snprintf(what, sizeof(what), "unknown option '%.256s'", a);
			return usage_error(what);
		}
		if (i + 1 >= argc) {
			char what[320];
			snprintf(what, sizeof(what), "%.256s needs a value", a);
			return usage_error(what);
		}
		if (*slot) {
			char what[320];
			snprintf(what, sizeof(what), "%.256s given twice", a);
			return usage_error(what);
		}
		*slot = argv[++i];
	}

	if (!targets[0].path && !targets[1].path && !targets[2].path)
		return usage_error("create needs --path FILE, --ipc FILE or --uts FILE");
	for (int i = 0; i < 3; i++) {
		if (targets[i].path && !valid_target_path(targets[i].path)) {
			char what[320];
			snprintf(what, sizeof(what), "--%s path must be absolute and name a file: '%.256s'",
				 i == 0 ? "path" : targets[i].type, targets[i].path);
			return usage_error(what);
		}
		for (int j = 0; j < i; j++)
			if (targets[i].path && targets[j].path && strcmp(targets[i].path, targets[j].path) == 0)
				return usage_error("the same file is given for two namespaces");
	}
	if (shm_dir && !valid_target_path(shm_dir))
		return usage_error("--shm must be an absolute folder path");
	if (hostname && !targets[2].path)
		/* Without a new UTS namespace this would rename the host. */
		return usage_error("--hostname needs --uts FILE");
	if (hostname && (hostname[0] == '\0' || strlen(hostname) > 64))
		return usage_error("--hostname must be 1 to 64 bytes");

	/* Check every sysctl name before touching anything. */
	char sysctl_paths[MAX_SYSCTLS][SYSCTL_PATH_MAX];
	const char *sysctl_values[MAX_SYSCTLS];
	for (int i = 0; i < n_sysctls; i++) {
		const char *eq = strchr(sysctls[i], '=');
		if (!eq || sysctl_path(sysctls[i], (size_t)(eq - sysctls[i]), sysctl_paths[i], SYSCTL_PATH_MAX) != 0) {
			char what[320];
			snprintf(what, sizeof(what), "bad --sysctl '%.256s' (want KEY=VALUE with a plain sysctl name)",
				 sysctls[i]);
			return usage_error(what);
		}
		sysctl_values[i] = eq + 1;
		int owner = sysctl_target(sysctl_paths[i]);
		if (owner < 0 || !targets[owner].path) {
			char what[400];
			snprintf(what, sizeof(what), "--sysctl '%.256s' is not in a namespace this call creates (%s)", sysctls[i],
				 owner < 0 ? "node-wide" : owner == 0 ? "needs --path" : "needs --ipc");
			return usage_error(what);
		}
	}

	umask(022);

	/* 0. The pod's /dev/shm tmpfs. */
	if (shm_dir) {
		if (make_parents(shm_dir) != 0)
			return fail("mkdir", errno, "cannot create the folder for %s", shm_dir);
		if (mkdir(shm_dir, 0755) == 0)
			shm_made = 1;
		else if (errno != EEXIST)
			return fail("shm", errno, "cannot create %s", shm_dir);
		if (mount("shm", shm_dir, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=67108864") != 0)
			return fail("shm", errno, "cannot mount the pod's shm tmpfs on %s", shm_dir);
		shm_mounted = 1;
	}

	/* 1. The mount-point files. */
	int flags = 0;
	for (int i = 0; i < 3; i++) {
		struct target *t = &targets[i];
		if (!t->path)
			continue;
		flags |= t->flag;
		if (make_parents(t->path) != 0)
			return fail("mkdir", errno, "cannot create the folder for %s", t->path);
		int fd = open(t->path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0444);
		if (fd < 0)
			return fail("create", errno, "cannot create %s", t->path);
		t->created = 1;
		close(fd);
	}

	/* 2. New namespaces for this (single-threaded) process. */
	if (unshare(flags) != 0)
		return fail("unshare", errno, "unshare of the pod namespaces failed");

	/* 3. Loopback up inside the new network namespace (never in the host's). */
	if (targets[0].path && loopback_up() != 0)
		return fail("loopback", errno, "cannot bring lo up in the new network namespace");

	/* 4. Namespaced sysctls, in the order given. */
	for (int i = 0; i < n_sysctls; i++) {
		if (write_sysctl(sysctl_paths[i], sysctl_values[i]) != 0) {
			int e = errno;
			int klen = (int)(strchr(sysctls[i], '=') - sysctls[i]);
			return fail("sysctl", e, "cannot set sysctl %.*s=%s", klen, sysctls[i], sysctl_values[i]);
		}
	}

	/* 5. Hostname in the new UTS namespace. */
	if (hostname && sethostname(hostname, strlen(hostname)) != 0)
		return fail("hostname", errno, "cannot set the hostname to '%s'", hostname);

	/* 6. Pin: bind-mount our namespace files onto the targets. */
	for (int i = 0; i < 3; i++) {
		struct target *t = &targets[i];
		if (!t->path)
			continue;
		char src[64];
		snprintf(src, sizeof(src), "/proc/self/ns/%s", t->type);
		if (mount(src, t->path, NULL, MS_BIND, NULL) != 0)
			return fail("mount", errno, "cannot bind-mount %s onto %s", src, t->path);
		t->mounted = 1;
	}

	for (int i = 0; i < n_made_dirs; i++)
		free(made_dirs[i]);
	n_made_dirs = 0;

	static const char *const keys[3] = { "path", "ipc", "uts" };
	const char *sep = "{";
	for (int i = 0; i < 3; i++) {
		if (!targets[i].path)
			continue;
		fprintf(stdout, "%s\"%s\":", sep, keys[i]);
		json_string(stdout, targets[i].path);
		sep = ",";
	}
	fputs("}\n", stdout);
	return fflush(stdout) == 0 ? 0 : 1;
}

/* ---------- remove ---------- */

static int gone(int e)
{
	return e == ENOENT || e == ENOTDIR;
}

static int cmd_remove(int argc, char **argv)
{
	if (argc == 0)
		return usage_error("remove needs at least one FILE");
	for (int i = 0; i < argc; i++)
		if (argv[i][0] == '\0')
			return usage_error("remove: empty path");

	/* Every file is attempted; the first failure is the one reported. */
	int failed = 0;
	for (int i = 0; i < argc; i++) {
		const char *p = argv[i];
		int still_mounted = 0;
		/* Unmount every layer (a path pinned twice has two); EINVAL = no more. */
		for (int layer = 0;; layer++) {
			if (umount2(p, MNT_DETACH | UMOUNT_NOFOLLOW) == 0) {
				if (layer + 1 < MAX_UMOUNT_LAYERS)
					continue;
				if (!failed)
					report_error("umount", 0, "%s: still mounted after %d unmounts", p, MAX_UMOUNT_LAYERS);
				failed = still_mounted = 1;
				break;
			}
			if (errno == EINVAL || gone(errno))
				break;
			if (!failed)
				report_error("umount", errno, "cannot unmount %s", p);
			failed = still_mounted = 1;
			break;
		}
		if (still_mounted)
			continue; /* never unlink a path that may still hold a namespace */
		if (unlink(p) == 0 || gone(errno))
			continue;
		int e = errno;
		const char *step = "unlink";
		if (e == EISDIR) { /* a --shm folder */
			if (rmdir(p) == 0 || gone(errno))
				continue;
			e = errno;
			step = "rmdir";
		}
		if (!failed)
			report_error(step, e, "cannot remove %s", p);
		failed = 1;
	}
	if (failed)
		return 1;
	fputs("{\"removed\":true}\n", stdout);
	return fflush(stdout) == 0 ? 0 : 1;
}

/* ---------- check ---------- */

static int cmd_check(int argc, char **argv)
{
	if (argc != 1)
		return usage_error("check needs exactly one FILE");
	struct statfs sf;
	int pinned;
	if (statfs(argv[0], &sf) == 0) {
		pinned = (unsigned long)sf.f_type == (unsigned long)NSFS_MAGIC;
	} else if (gone(errno)) {
		pinned = 0;
	} else {
		report_error("statfs", errno, "cannot inspect %s", argv[0]);
		return 1;
	}
	fputs(pinned ? "{\"pinned\":true}\n" : "{\"pinned\":false}\n", stdout);
	return fflush(stdout) == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
	if (argc < 2)
		return usage_error("no command");
	const char *cmd = argv[1];
	if (strcmp(cmd, "-v") == 0 || strcmp(cmd, "--version") == 0) {
		printf("corral-nshelper %s\n", CORRAL_NSHELPER_VERSION);
		return 0;
	}
	if (strcmp(cmd, "create") == 0)
		return cmd_create(argc - 2, argv + 2);
	if (strcmp(cmd, "remove") == 0)
		return cmd_remove(argc - 2, argv + 2);
	if (strcmp(cmd, "check") == 0)
		return cmd_check(argc - 2, argv + 2);
	char what[320];
	snprintf(what, sizeof(what), "unknown command '%.256s'", cmd);
	return usage_error(what);
}
