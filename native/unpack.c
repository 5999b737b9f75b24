/*
 * corral-unpack: the only code that touches a layer's directory while it is
 * unpacked. Node parses the tar and decides what each entry means (whiteouts,
 * replacements, refusals); this helper applies the resulting operations, and
 * resolves every path it is given *beneath* the layer root without following a
 * symlink in any component, so no sequence of entries can make it create,
 * change or remove anything outside that directory:
 *
 *   - parents are opened with openat2(root, parent, O_PATH | O_DIRECTORY,
 *     RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS |
 *     RESOLVE_NO_XDEV): a symlink (or `..`, an absolute path, a mount) anywhere
 *     in the path fails with ELOOP / EXDEV instead of being followed;
 *   - the final component is handled with *at calls that never follow it
 *     (O_CREAT|O_EXCL|O_NOFOLLOW, mkdirat, mknodat, symlinkat, linkat without
 *     AT_SYMLINK_FOLLOW, fchownat / utimensat / fchmodat with
 *     AT_SYMLINK_NOFOLLOW, unlinkat), or opened with openat2 O_PATH|O_NOFOLLOW
 *     and changed through that descriptor (xattrs via /proc/self/fd/N, which
 *     names exactly the inode already opened);
 *   - recursive removal opens each directory with O_NOFOLLOW and descends by
 *     descriptor, so a symlink in the tree is unlinked, never entered.
 *
 *   corral-unpack DIR < OPS
 *
 * OPS is a stream of frames, each a 52-byte little-endian header
 *
 *   u8 op, u8 pad[3], u32 mode, u32 uid, u32 gid, i64 mtime_sec,
 *   u32 mtime_nsec, u32 major, u32 minor, u32 path_len, u32 arg_len,
 *   u64 data_len
 *
 * followed by path_len bytes of PATH (relative to DIR, components separated by
 * '/', no empty, '.' or '..' component; empty means DIR itself), arg_len bytes
 * of ARG and data_len bytes of DATA. Operations:
 *
 *   'd' MKDIR    PATH with MODE (an existing directory is kept)
 *   'f' FILE     PATH created (must not exist), DATA written, then owner, MODE
 *                (after chown, which drops setuid/setgid) and mtime
 *   'l' SYMLINK  PATH -> ARG, then owner and mtime of the link itself
 *   'h' LINK     PATH as a hard link to the layer path ARG (never followed)
 *   'n' MKNOD    PATH with MODE (S_IFCHR, S_IFBLK or S_IFIFO), MAJOR, MINOR,
 *                then owner, mode and mtime
 *   'x' XATTR    the extended attribute ARG = DATA on PATH (not followed)
 *   'r' REMOVE   PATH and everything under it (absent is fine)
 *   'm' META     owner, MODE and mtime of the directory PATH (applied last)
 *   'e' END      no more operations
 *
 * The umask is cleared so modes are applied as given. The first failure stops
 * the run and prints one line of JSON {"error":..., "op":..., "path":...,
 * "errno":N, "index":N, "escape":B} on stdout with exit status 1; "escape" is
 * true when resolution was refused (a symlink or `..` in the way). Success
 * prints {"done":N} and exits 0. Input ending without END is an error.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/xattr.h>
#include <unistd.h>

#define HEADER_LEN 52
#define PATH_BYTES_MAX 4096
#define ARG_BYTES_MAX 4096
#define XATTR_VALUE_MAX 65536
#define IN_BUF (1 << 20)
#define RESOLVE_FLAGS (RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)

struct op {
	char code;
	uint32_t mode, uid, gid, mtime_nsec, major, minor;
	int64_t mtime_sec;
	uint32_t path_len, arg_len;
	uint64_t data_len;
	char path[PATH_BYTES_MAX + 1];
	char arg[ARG_BYTES_MAX + 1];
};

static int root_fd = -1;
static unsigned long op_index;

/* ------------------------------------------------------------ reporting */

static void json_string(const char *s)
{
	putchar('"');
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			printf("\\%c", *p);
		else if (*p < 0x20 || *p >= 0x7f)
			printf("\\u%04x", *p);
		else
			putchar(*p);
	}
	putchar('"');
}

/* Set by the resolver when it refused a path (rather than failing to find it). */
static int refused_escape;

static _Noreturn void fail(const char *op, const char *path, int err, const char *msg)
{
	printf("{\"error\":");
	json_string(msg);
	printf(",\"op\":");
	json_string(op);
	printf(",\"path\":");
	json_string(path ? path : "");
	printf(",\"errno\":%d,\"index\":%lu,\"escape\":%s}\n", err, op_index, refused_escape ? "true" : "false");
	fflush(stdout);
	exit(1);
}

/* ------------------------------------------------------------ input */

static unsigned char in_buf[IN_BUF];
static size_t in_pos, in_len;

/* Up to want bytes of input (at least 1) at *out; 0 at end of input. */
static size_t in_peek(size_t want, const unsigned char **out)
{
	if (in_pos == in_len) {
		ssize_t n;
		do
			n = read(0, in_buf, sizeof in_buf);
		while (n < 0 && errno == EINTR);
		if (n < 0)
			fail("read", NULL, errno, strerror(errno));
		in_pos = 0;
		in_len = (size_t)n;
		if (n == 0)
			return 0;
	}
	size_t have = in_len - in_pos;
	*out = in_buf + in_pos;
	return have < want ? have : want;
}

static void in_exact(void *dst, size_t len, int first)
{
	unsigned char *d = dst;
	size_t got = 0;
	while (got < len) {
		const unsigned char *p;
		size_t n = in_peek(len - got, &p);
		if (n == 0) {
			if (first && got == 0)
				fail("read", NULL, EPIPE, "input ended without an END operation");
			fail("read", NULL, EPIPE, "input ended inside an operation");
		}
		memcpy(d + got, p, n);
		in_pos += n;
		got += n;
	}
}

static uint32_t le32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const unsigned char *p)
{
	return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

static void read_op(struct op *o)
{
	unsigned char h[HEADER_LEN];
	in_exact(h, sizeof h, 1);
	o->code = (char)h[0];
	o->mode = le32(h + 4);
	o->uid = le32(h + 8);
	o->gid = le32(h + 12);
	o->mtime_sec = (int64_t)le64(h + 16);
	o->mtime_nsec = le32(h + 24);
	o->major = le32(h + 28);
	o->minor = le32(h + 32);
	o->path_len = le32(h + 36);
	o->arg_len = le32(h + 40);
	o->data_len = le64(h + 44);
	if (o->path_len > PATH_BYTES_MAX)
		fail("read", NULL, ENAMETOOLONG, "path longer than 4096 bytes");
	if (o->arg_len > ARG_BYTES_MAX)
		fail("read", NULL, ENAMETOOLONG, "argument longer than 4096 bytes");
	in_exact(o->path, o->path_len, 0);
	o->path[o->path_len] = '\0';
	in_exact(o->arg, o->arg_len, 0);
	o->arg[o->arg_len] = '\0';
	if (strlen(o->path) != o->path_len || strlen(o->arg) != o->arg_len)
		fail("read", o->path, EINVAL, "a NUL byte in a path or argument");
	if (o->mtime_nsec >= 1000000000u)
		fail("read", o->path, EINVAL, "mtime nanoseconds out of range");
}

/* Discards n bytes of input (the data of an operation that does not use it). */
static void in_skip(uint64_t n)
{
	while (n > 0) {
		const unsigned char *p;
		size_t got = in_peek(n > IN_BUF ? IN_BUF : (size_t)n, &p);
		if (got == 0)
			fail("read", NULL, EPIPE, "input ended inside an operation");
		in_pos += got;
		n -= got;
	}
}

/* ------------------------------------------------------------ resolution */

/* A relative layer path: no leading or trailing '/', no empty, '.' or '..' component. */
static int well_formed(const char *p)
{
	if (*p == '\0')
		return 1;
	const char *s = p;
	for (;;) {
		const char *e = strchr(s, '/');
		size_t n = e ? (size_t)(e - s) : strlen(s);
		if (n == 0 || (n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.'))
			return 0;
		if (!e)
			return 1;
		s = e + 1;
	}
}

static int openat2_beneath(const char *path, uint64_t flags)
{
	struct open_how how = { .flags = flags | O_CLOEXEC, .resolve = RESOLVE_FLAGS };
	long fd;
	do
		fd = syscall(SYS_openat2, root_fd, path, &how, sizeof how);
	while (fd < 0 && errno == EAGAIN);
	if (fd < 0 && errno == ENOSYS)
		fail("openat2", path, ENOSYS, "openat2(2) is not available: Corral needs Linux 5.6 or later to unpack layers safely");
	if (fd < 0 && (errno == ELOOP || errno == EXDEV))
		refused_escape = 1;
	return (int)fd;
}

/* The parent directory most recently resolved, reused while nothing is removed. */
static char cached_parent[PATH_BYTES_MAX + 1];
static int cached_fd = -1;

static void forget_cached_parent(void)
{
	if (cached_fd >= 0)
		close(cached_fd);
	cached_fd = -1;
}

/*
 * Splits the layer path into its parent (resolved to an O_PATH directory fd,
 * beneath the root, with no symlink followed) and its final component.
 */
static int resolve_parent(const char *op, char *path, const char **base)
{
	if (!well_formed(path) || *path == '\0') {
		refused_escape = 1;
		fail(op, path, EINVAL, "not a relative path beneath the layer (empty, '.', '..' or absolute)");
	}
	char *slash = strrchr(path, '/');
	if (!slash) {
		*base = path;
		return root_fd;
	}
	*slash = '\0';
	*base = slash + 1;
	if (cached_fd >= 0 && strcmp(cached_parent, path) == 0) {
		*slash = '/';
		return cached_fd;
	}
	int fd = openat2_beneath(path, O_PATH | O_DIRECTORY);
	if (fd < 0) {
		int err = errno;
		*slash = '/';
		fail(op, path, err, err == ELOOP || err == EXDEV ? "the parent directory is (or goes through) a symlink or leaves the layer" : strerror(err));
	}
	forget_cached_parent();
	strcpy(cached_parent, path);
	cached_fd = fd;
	*slash = '/';
	return fd;
}

/* The inode at path itself (a symlink is not followed), as an O_PATH fd. */
static int open_node(const char *op, const char *path)
{
	if (!well_formed(path)) {
		refused_escape = 1;
		fail(op, path, EINVAL, "not a relative path beneath the layer ('.', '..' or absolute)");
	}
	if (*path == '\0')
		return dup(root_fd);
	int fd = openat2_beneath(path, O_PATH | O_NOFOLLOW);
	if (fd < 0)
		fail(op, path, errno, errno == ELOOP || errno == EXDEV ? "the path goes through a symlink or leaves the layer" : strerror(errno));
	return fd;
}

/* ------------------------------------------------------------ operations */

static struct timespec mtime_of(const struct op *o)
{
	struct timespec t = { .tv_sec = (time_t)o->mtime_sec, .tv_nsec = (long)o->mtime_nsec };
	return t;
}

/* Owner, mode (after chown) and mtime of the final component, never followed. */
static void set_meta_at(const char *op, const char *path, int dir, const char *base, const struct op *o, int is_symlink)
{
	if (fchownat(dir, base, o->uid, o->gid, AT_SYMLINK_NOFOLLOW) != 0)
		fail(op, path, errno, strerror(errno));
	if (!is_symlink && fchmodat(dir, base, o->mode & 07777, AT_SYMLINK_NOFOLLOW) != 0)
		fail(op, path, errno, strerror(errno));
	struct timespec ts[2] = { mtime_of(o), mtime_of(o) };
	if (utimensat(dir, base, ts, AT_SYMLINK_NOFOLLOW) != 0)
		fail(op, path, errno, strerror(errno));
}

static void write_all(const char *path, int fd, const void *p, size_t n)
{
	const char *c = p;
	while (n > 0) {
		ssize_t w = write(fd, c, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			fail("file", path, errno, strerror(errno));
		c += w;
		n -= (size_t)w;
	}
}

static void op_file(struct op *o)
{
	const char *base;
	int dir = resolve_parent("file", o->path, &base);
	int fd = openat(dir, base, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		fail("file", o->path, errno, strerror(errno));
	uint64_t left = o->data_len;
	while (left > 0) {
		const unsigned char *p;
		size_t n = in_peek(left > IN_BUF ? IN_BUF : (size_t)left, &p);
		if (n == 0)
			fail("file", o->path, EPIPE, "input ended inside the file's data");
		write_all(o->path, fd, p, n);
		in_pos += n;
		left -= n;
	}
	struct timespec ts[2] = { mtime_of(o), mtime_of(o) };
	if (fchown(fd, o->uid, o->gid) != 0 || fchmod(fd, o->mode & 07777) != 0 || futimens(fd, ts) != 0)
		fail("file", o->path, errno, strerror(errno));
	if (close(fd) != 0)
		fail("file", o->path, errno, strerror(errno));
}

static void op_mkdir(struct op *o)
{
	const char *base;
	int dir = resolve_parent("mkdir", o->path, &base);
	if (mkdirat(dir, base, o->mode & 07777) == 0)
		return;
	int err = errno;
	struct stat st;
	if (err == EEXIST && fstatat(dir, base, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode))
		return;
	fail("mkdir", o->path, err, strerror(err));
}

static void op_symlink(struct op *o)
{
	const char *base;
	int dir = resolve_parent("symlink", o->path, &base);
	if (symlinkat(o->arg, dir, base) != 0)
		fail("symlink", o->path, errno, strerror(errno));
	set_meta_at("symlink", o->path, dir, base, o, 1);
}

static void op_link(struct op *o)
{
	if (!well_formed(o->arg) || *o->arg == '\0') {
		refused_escape = 1;
		fail("link", o->arg, EINVAL, "hard-link target is not a relative path beneath the layer");
	}
	int target = open_node("link", o->arg);
	const char *base;
	int dir = resolve_parent("link", o->path, &base);
	/* AT_EMPTY_PATH links the inode already opened (needs CAP_DAC_READ_SEARCH: root). */
	if (linkat(target, "", dir, base, AT_EMPTY_PATH) != 0)
		fail("link", o->path, errno, strerror(errno));
	close(target);
}

static void op_mknod(struct op *o)
{
	mode_t type = (mode_t)o->mode & S_IFMT;
	if (type != S_IFCHR && type != S_IFBLK && type != S_IFIFO)
		fail("mknod", o->path, EINVAL, "MODE must carry a character device, block device or fifo type");
	const char *base;
	int dir = resolve_parent("mknod", o->path, &base);
	if (mknodat(dir, base, (mode_t)o->mode, makedev(o->major, o->minor)) != 0)
		fail("mknod", o->path, errno, strerror(errno));
	set_meta_at("mknod", o->path, dir, base, o, 0);
}

static void op_xattr(struct op *o)
{
	static unsigned char value[XATTR_VALUE_MAX];
	if (o->data_len > XATTR_VALUE_MAX)
		fail("xattr", o->path, E2BIG, "xattr value larger than 64 KiB");
	in_exact(value, (size_t)o->data_len, 0);
	int fd = open_node("xattr", o->path);
	/* /proc/self/fd/N names the inode opened above, whatever happens to its path. */
	char proc[64];
	snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
	if (setxattr(proc, o->arg, value, (size_t)o->data_len, 0) != 0)
		fail("xattr", o->path, errno, strerror(errno));
	close(fd);
}

/* Removes name in dir (descending by descriptor, never through a symlink). */
static int remove_at(int dir, const char *name)
{
	if (unlinkat(dir, name, 0) == 0 || errno == ENOENT)
		return 0;
	if (errno != EISDIR)
		return -1;
	int fd = openat(dir, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -1;
	DIR *d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -1;
	}
	struct dirent *e;
	int r = 0;
	while (r == 0 && (errno = 0, e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		r = remove_at(dirfd(d), e->d_name);
	}
	if (r == 0 && errno != 0)
		r = -1;
	int saved = errno;
	closedir(d);
	errno = saved;
	if (r != 0)
		return r;
	return unlinkat(dir, name, AT_REMOVEDIR);
}

static void op_remove(struct op *o)
{
	const char *base;
	int dir = resolve_parent("remove", o->path, &base);
	/* The cached parent may be the removed directory or below it. */
	int keep = dup(dir);
	forget_cached_parent();
	if (keep < 0)
		fail("remove", o->path, errno, strerror(errno));
	if (remove_at(keep, base) != 0)
		fail("remove", o->path, errno, strerror(errno));
	close(keep);
}

static void op_meta(struct op *o)
{
	int fd = open_node("meta", o->path);
	struct stat st;
	if (fstat(fd, &st) != 0)
		fail("meta", o->path, errno, strerror(errno));
	if (!S_ISDIR(st.st_mode))
		fail("meta", o->path, ENOTDIR, "not a directory");
	char proc[64];
	snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
	struct timespec ts[2] = { mtime_of(o), mtime_of(o) };
	if (fchownat(fd, "", o->uid, o->gid, AT_EMPTY_PATH) != 0 || chmod(proc, o->mode & 07777) != 0 || utimensat(AT_FDCWD, proc, ts, 0) != 0)
		fail("meta", o->path, errno, strerror(errno));
	close(fd);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: corral-unpack DIR < OPS (see native/unpack.c)\n");
		return 2;
	}
	umask(0);
	root_fd = open(argv[1], O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (root_fd < 0)
		fail("open", argv[1], errno, strerror(errno));
	static struct op o;
	for (;; op_index++) {
		read_op(&o);
		refused_escape = 0;
		if (o.code != 'f' && o.code != 'x')
			in_skip(o.data_len);
		switch (o.code) {
		case 'd': op_mkdir(&o); break;
		case 'f': op_file(&o); break;
		case 'l': op_symlink(&o); break;
		case 'h': op_link(&o); break;
		case 'n': op_mknod(&o); break;
		case 'x': op_xattr(&o); break;
		case 'r': op_remove(&o); break;
		case 'm': op_meta(&o); break;
		case 'e':
			printf("{\"done\":%lu}\n", op_index);
			return 0;
		default:
			fail("read", o.path, EINVAL, "unknown operation");
		}
	}
}
