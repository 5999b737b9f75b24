/*
 * corral-unpack: the only code that touches a layer's directory while it is
 * unpacked. In layer mode (--layer, see "layer mode" below, what Corral uses) it
 * reads the blob, decompresses and hashes it, parses the tar and decides what each
 * entry means (whiteouts, replacements, refusals); in operation mode it is fed those
 * decisions as a stream of operations. Either way every operation resolves its
 * path *beneath* the layer root without following a symlink in any component, so
 * no sequence of entries can make it create, change or remove anything outside
 * that directory:
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
 *   corral-unpack --layer BLOB DIR
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
#include <sys/wait.h>
#include <signal.h>
#include <unistd.h>
#include <stddef.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <isa-l/igzip_lib.h>

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
/*
 * Whether a new file is root:root with exactly the mode it is created with: true in
 * layer mode when the root directory has no setgid bit, since umask is 0 and directory
 * modes (setgid included) are applied only after every entry exists.
 */
static int root_owns_new_files;
static unsigned long op_index;

/* ------------------------------------------------------------ reporting */

static void json_string(const char *s)
{
	putchar('"');
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			printf("\\%c", *p);
		else if (*p < 0x20 || *p == 0x7f)
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

/* Where input comes from: stdin (operation mode) or a decompressed layer (layer mode). */
static size_t read_stdin(unsigned char *buf, size_t cap)
{
	ssize_t n;
	do
		n = read(0, buf, cap);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		fail("read", NULL, errno, strerror(errno));
	return (size_t)n;
}

static size_t (*refill)(unsigned char *buf, size_t cap) = read_stdin;

/* Up to want bytes of input (at least 1) at *out; 0 at end of input. */
static size_t in_peek(size_t want, const unsigned char **out)
{
	if (in_pos == in_len) {
		in_pos = 0;
		in_len = refill(in_buf, sizeof in_buf);
		if (in_len == 0)
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
	/*
	 * Most files are root's: created with their final mode, they need no chown and no
	 * chmod (see root_owns_new_files). Other owners: chown first, then chmod, since chown
	 * drops setuid/setgid.
	 */
	int rooted = root_owns_new_files && o->uid == 0 && o->gid == 0;
	int fd = openat(dir, base, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, rooted ? o->mode & 07777 : 0600);
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
	if ((!rooted && (fchown(fd, o->uid, o->gid) != 0 || fchmod(fd, o->mode & 07777) != 0)) || futimens(fd, ts) != 0)
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

static void set_xattr(const char *path, const char *name, const void *value, size_t len)
{
	int fd = open_node("xattr", path);
	/* /proc/self/fd/N names the inode opened above, whatever happens to its path. */
	char proc[64];
	snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
	if (setxattr(proc, name, value, len, 0) != 0)
		fail("xattr", path, errno, strerror(errno));
	close(fd);
}

static void op_xattr(struct op *o)
{
	static unsigned char value[XATTR_VALUE_MAX];
	if (o->data_len > XATTR_VALUE_MAX)
		fail("xattr", o->path, E2BIG, "xattr value larger than 64 KiB");
	in_exact(value, (size_t)o->data_len, 0);
	set_xattr(o->path, o->arg, value, (size_t)o->data_len);
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

/* ================================================================ layer mode
 *
 * corral-unpack --layer BLOB DIR reads a layer blob (gzip or plain tar; BLOB "-" is
 * stdin: a tar another decompressor produces), hashes the uncompressed stream (the
 * diff ID), parses the tar and decides what each entry means, then applies it with the
 * same operations as above. Node does no per-file work; the checks below mirror what
 * src/image/unpack.ts documents and refuse a hostile layer with a reason; the resolution
 * above keeps the host safe whatever they miss.
 *
 * The verdict is one line of JSON on stdout: {"done":N,"diffId":"sha256:…","size":N},
 * with "inputDigest" and "inputSize" (sha256 and length of every byte read) for stdin
 * and --layer-follow;
 * {"refused":ENTRY,"reason":…} for a layer Corral will not unpack; {"corrupt":…} for a
 * blob that is not a valid gzip or tar; or the operation failure above.
 */

#define TAR_BLOCK 512
#define TAR_EXT_MAX (4u << 20)          /* a PAX or GNU long-name header (tar-stream's cap) */
#define NAME_BYTES_MAX 255
#define REL_PATH_MAX 4095
#define LAYER_ENTRIES_MAX 4000000u      /* paths one layer may hold: bounds the daemon's host memory */

static int blob_fd;
static int gzipped;
/*
 * Gzip is decoded by ISA-L's igzip (isal_inflate: about 1.6x zlib's speed on layers, see
 * bench/README.md). Each member's header is read by isal_read_gzip_header into gz_hdr, kept
 * across reads: isal_inflate's own header reading forgets the flags when a header spans two
 * reads. With crc_flag ISAL_GZIP, isal_inflate checks the trailer (CRC32 and ISIZE).
 */
static struct inflate_state zs;
static struct isal_gzip_header gz_hdr;
static int in_gzip_header;
static unsigned char zin[256 << 10];
static int zin_eof, member_done;
static EVP_MD_CTX *diff_ctx;
static uint64_t diff_bytes;

static pid_t zstd_pid;

/* zstd's verdict once its output ended: NULL if it succeeded, else why not. */
static const char *zstd_failure(void)
{
	static char msg[96];
	int status;
	pid_t pid = zstd_pid;
	zstd_pid = 0;
	if (pid <= 0)
		return NULL;
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return "zstd: cannot wait for the decompressor";
	/* Ended by the pipe this helper closed when it stopped reading: the failure is the tar's. */
	if ((WIFEXITED(status) && WEXITSTATUS(status) == 0) || (WIFSIGNALED(status) && WTERMSIG(status) == SIGPIPE))
		return NULL;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
		return "zstd: cannot run zstd (apt-get install zstd)";
	snprintf(msg, sizeof msg, "zstd: the compressed stream is invalid (%s %d)",
		 WIFEXITED(status) ? "exit status" : "killed by signal", WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
	return msg;
}

static _Noreturn void corrupt(const char *msg)
{
	/* A broken zstd stream shows here as a truncated tar: zstd's reason is the one to give. */
	if (zstd_pid > 0) {
		close(blob_fd);
		const char *z = zstd_failure();
		if (z)
			msg = z;
	}
	printf("{\"corrupt\":");
	json_string(msg);
	printf(",\"index\":%lu}\n", op_index);
	fflush(stdout);
	exit(1);
}

/* The entry name as a message shows it: at most 200 bytes. */
static _Noreturn void refuse(const char *entry, const char *reason)
{
	char shown[201];
	snprintf(shown, sizeof shown, "%s", entry);
	printf("{\"refused\":");
	json_string(shown);
	printf(",\"reason\":");
	json_string(reason);
	printf(",\"index\":%lu}\n", op_index);
	fflush(stdout);
	exit(1);
}

/* s in double quotes, as JSON.stringify writes it (for reasons that name a path). */
static const char *quoted(const char *s)
{
	static char out[4][2 * REL_PATH_MAX + 8];
	static int which;
	char *o = out[which++ & 3], *p = o;
	*p++ = '"';
	for (; *s && p < o + sizeof out[0] - 8; s++) {
		if (*s == '"' || *s == '\\')
			*p++ = '\\';
		*p++ = *s;
	}
	*p++ = '"';
	*p = '\0';
	return o;
}

/*
 * A layer read from stdin or followed as it downloads is hashed as read, every byte of it
 * up to its end (a successful unpack reads to the end): the daemon checks the blob's
 * digest with this instead of hashing the same bytes again.
 */
static int hash_input;
static EVP_MD_CTX *input_ctx;
static uint64_t input_bytes;

/*
 * corral-unpack --layer-follow FILE DIR unpacks a blob while the daemon downloads it into
 * FILE: the daemon writes each batch to the file, then announces on stdin how many bytes of
 * the file are complete, one line each: "N\n" (the first N bytes are written), and last
 * "end N\n" (the blob is N bytes long). The helper reads only announced bytes, never past
 * them, and waits on stdin when it has read them all; so the download is paced by the
 * network and the disk, never by the unpack. stdin closed before "end N" is a failure.
 */
static int following;
static uint64_t blob_pos, announced;
static int announced_end;

/* Reads announcements until one says more than blob_pos is complete, or the end. */
static void await_announcement(void)
{
	static char line[64];
	static size_t line_len;
	while (blob_pos >= announced && !announced_end) {
		ssize_t n;
		do
			n = read(0, line + line_len, sizeof line - line_len);
		while (n < 0 && errno == EINTR);
		if (n < 0)
			fail("read", NULL, errno, strerror(errno));
		if (n == 0)
			fail("read", NULL, EPIPE, "the download stopped before its length was announced");
		line_len += (size_t)n;
		char *nl;
		while (!announced_end && (nl = memchr(line, '\n', line_len)) != NULL) {
			*nl = '\0';
			int end = strncmp(line, "end ", 4) == 0;
			const char *num = end ? line + 4 : line;
			char *stop;
			errno = 0;
			unsigned long long v = strtoull(num, &stop, 10);
			/* Lengths only grow; a line that is not a number is a daemon bug, not data. */
			if (*num < '0' || *num > '9' || *stop != '\0' || errno != 0 || v < announced)
				fail("read", NULL, EINVAL, "bad announcement of the blob's length");
			announced = v;
			announced_end = end;
			size_t used = (size_t)(nl + 1 - line);
			memmove(line, nl + 1, line_len - used);
			line_len -= used;
		}
		if (line_len == sizeof line)
			fail("read", NULL, EINVAL, "bad announcement of the blob's length");
	}
}

/* Up to cap announced bytes of the followed file; 0 once all of it was read. */
static ssize_t read_followed(unsigned char *buf, size_t cap)
{
	await_announcement();
	if (blob_pos >= announced)
		return 0;
	if (cap > announced - blob_pos)
		cap = (size_t)(announced - blob_pos);
	ssize_t n = pread(blob_fd, buf, cap, (off_t)blob_pos);
	if (n == 0)
		fail("read", NULL, EIO, "the blob file is shorter than its announced length");
	if (n > 0)
		blob_pos += (uint64_t)n;
	return n;
}

static size_t read_blob(unsigned char *buf, size_t cap)
{
	ssize_t n;
	do
		n = following ? read_followed(buf, cap) : read(blob_fd, buf, cap);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		fail("read", NULL, errno, strerror(errno));
	if (hash_input && n > 0) {
		EVP_DigestUpdate(input_ctx, buf, (size_t)n);
		input_bytes += (uint64_t)n;
	}
	return (size_t)n;
}

/* A gzip member starts at zs.next_in (the decoder keeps its input across the reset). */
static void gzip_member_start(void)
{
	isal_inflate_reset(&zs);
	zs.crc_flag = ISAL_GZIP;
	isal_gzip_header_init(&gz_hdr);
	gz_hdr.flags = 0;
	in_gzip_header = 1;
}

/* Why ISA-L refused the stream, in zlib's words where zlib has some. */
static const char *gzip_error(int r)
{
	switch (r) {
	case ISAL_INVALID_BLOCK: return "gzip: invalid block type or block lengths";
	case ISAL_INVALID_SYMBOL: return "gzip: invalid code in the compressed data";
	case ISAL_INVALID_LOOKBACK: return "gzip: invalid distance too far back";
	case ISAL_INVALID_WRAPPER: return "gzip: incorrect header check";
	case ISAL_UNSUPPORTED_METHOD: return "gzip: unknown compression method";
	case ISAL_INCORRECT_CHECKSUM: return "gzip: incorrect data check (the trailer's CRC32 or length does not match the data)";
	case ISAL_NEED_DICT: return "gzip: invalid stream (it needs a preset dictionary)";
	default: return "gzip: invalid compressed data";
	}
}

static size_t gunzip_some(unsigned char *buf, size_t cap)
{
	for (;;) {
		if (zs.avail_in == 0 && !zin_eof) {
			size_t n = read_blob(zin, sizeof zin);
			zin_eof = n == 0;
			zs.next_in = zin;
			zs.avail_in = (uint32_t)n;
		}
		if (member_done) {
			if (zs.avail_in == 0) {
				if (zin_eof)
					return 0;
				continue;
			}
			/* Another gzip member (gzip -c a b concatenates them), else garbage. */
			if (zs.next_in[0] != 0x1f)
				corrupt("gzip: data after the end of the compressed stream");
			gzip_member_start();
			member_done = 0;
		}
		if (in_gzip_header) {
			/* ISA-L reads the header's optional fields too (FEXTRA, FNAME, FCOMMENT, FHCRC). */
			int r = isal_read_gzip_header(&zs, &gz_hdr);
			if (r == ISAL_END_INPUT) {
				if (zin_eof)
					corrupt("gzip: unexpected end of file (the layer is truncated)");
				continue;
			}
			if (r == ISAL_INCORRECT_CHECKSUM)
				corrupt("gzip: header crc mismatch");
			if (r != ISAL_DECOMP_OK)
				corrupt(gzip_error(r));
			/* Reserved flag bits: zlib refuses them, so does this. */
			if (gz_hdr.flags & 0xe0)
				corrupt("gzip: unknown header flags set");
			in_gzip_header = 0;
		}
		uint32_t in_before = zs.avail_in;
		zs.next_out = buf;
		zs.avail_out = (uint32_t)cap;
		int r = isal_inflate(&zs);
		size_t made = cap - zs.avail_out;
		if (r < 0)
			corrupt(gzip_error(r));
		/* ISAL_BLOCK_FINISH: the member's data all given out and its trailer checked. */
		if (zs.block_state == ISAL_BLOCK_FINISH)
			member_done = 1;
		else if (made == 0 && zs.avail_in > 0 && zs.avail_in == in_before)
			corrupt("gzip: the decompressor made no progress");
		if (made > 0)
			return made;
		if (zin_eof && zs.avail_in == 0 && !member_done)
			corrupt("gzip: unexpected end of file (the layer is truncated)");
	}
}

/* Uncompressed layer bytes, hashed (and counted) as they pass: the diff ID. */
static size_t read_layer(unsigned char *buf, size_t cap)
{
	size_t n = gzipped ? gunzip_some(buf, cap) : read_blob(buf, cap);
	if (n > 0) {
		EVP_DigestUpdate(diff_ctx, buf, n);
		diff_bytes += n;
	}
	return n;
}

/* Up to len bytes of the tar (fewer only at its end). */
static size_t tar_read(void *dst, size_t len)
{
	unsigned char *d = dst;
	size_t got = 0;
	while (got < len) {
		const unsigned char *p;
		size_t n = in_peek(len - got, &p);
		if (n == 0)
			break;
		memcpy(d + got, p, n);
		in_pos += n;
		got += n;
	}
	return got;
}

static void tar_skip(uint64_t n)
{
	while (n > 0) {
		const unsigned char *p;
		size_t got = in_peek(n > IN_BUF ? IN_BUF : (size_t)n, &p);
		if (got == 0)
			corrupt("tar: unexpected end of data inside an entry");
		in_pos += got;
		n -= got;
	}
}

static uint64_t tar_padding(uint64_t size)
{
	return (TAR_BLOCK - size % TAR_BLOCK) % TAR_BLOCK;
}

/* A numeric header field: octal (leading spaces or NULs, ended by space or NUL) or base-256. */
static int64_t tar_number(const unsigned char *f, size_t len)
{
	if (f[0] & 0x80) {
		/* Big-endian two's complement: 0x80 starts a positive number, 0xff a negative one. */
		int64_t v = f[0] == 0xff ? -1 : (int64_t)(f[0] & 0x7f);
		for (size_t i = 1; i < len; i++) {
			if (v > (INT64_MAX >> 8) || v < (INT64_MIN >> 8))
				corrupt("tar: a base-256 header number out of range");
			v = v * 256 + f[i];
		}
		return v;
	}
	size_t i = 0;
	while (i < len && (f[i] == ' ' || f[i] == '\0'))
		i++;
	uint64_t v = 0;
	for (; i < len && f[i] >= '0' && f[i] <= '7'; i++) {
		if (v >> 60)
			corrupt("tar: an octal header number out of range");
		v = v * 8 + (uint64_t)(f[i] - '0');
	}
	return (int64_t)v;
}

static int tar_checksum_ok(const unsigned char *h)
{
	uint64_t u = 0;
	int64_t s = 0;
	for (int i = 0; i < TAR_BLOCK; i++) {
		unsigned char c = i >= 148 && i < 156 ? ' ' : h[i];
		u += c;
		s += (signed char)c;
	}
	int64_t want = tar_number(h + 148, 8);
	return (int64_t)u == want || s == want;
}

static int all_zero(const unsigned char *h)
{
	for (int i = 0; i < TAR_BLOCK; i++)
		if (h[i])
			return 0;
	return 1;
}

/* A NUL-terminated copy of a fixed-width field. */
static void field(char *dst, const unsigned char *src, size_t width)
{
	size_t n = strnlen((const char *)src, width);
	memcpy(dst, src, n);
	dst[n] = '\0';
}

/* ------------------------------------------------------------ what this layer holds */

enum kind { K_DIR = 1, K_FILE, K_SYMLINK, K_NODE };

struct meta {
	uint32_t mode, uid, gid, mtime_nsec;
	int64_t mtime_sec;
};

struct slot {
	char *key;              /* NULL: empty; TOMBSTONE: deleted */
	unsigned char kind, has_meta;
	struct meta meta;       /* a directory's, applied at the end */
};

static char tombstone_key;
#define TOMBSTONE (&tombstone_key)
static struct slot *slots;
static size_t slot_cap, slot_live, slot_used;

static uint64_t hash_str(const char *s)
{
	uint64_t h = 1469598103934665603ULL;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ULL;
	return h;
}

static struct slot *slot_find(const char *key, int insert)
{
	size_t mask = slot_cap - 1, i = hash_str(key) & mask;
	struct slot *grave = NULL;
	for (;; i = (i + 1) & mask) {
		struct slot *s = &slots[i];
		if (s->key == NULL)
			return insert ? (grave ? grave : s) : NULL;
		if (s->key == TOMBSTONE) {
			if (!grave)
				grave = s;
		} else if (strcmp(s->key, key) == 0) {
			return s;
		}
	}
}

static void slots_grow(void)
{
	struct slot *old = slots;
	size_t old_cap = slot_cap;
	slot_cap = old_cap == 0 ? 1024 : (slot_live * 4 > old_cap ? old_cap * 2 : old_cap);
	slots = calloc(slot_cap, sizeof *slots);
	if (!slots)
		fail("unpack", NULL, ENOMEM, "out of memory for the layer's paths");
	slot_used = 0;
	for (size_t i = 0; i < old_cap; i++) {
		if (old[i].key == NULL || old[i].key == TOMBSTONE)
			continue;
		*slot_find(old[i].key, 1) = old[i];
		slot_used++;
	}
	free(old);
}

static struct slot *kind_of(const char *path)
{
	return slot_find(path, 0);
}

static struct slot *set_kind(const char *path, enum kind k)
{
	struct slot *s = slot_find(path, 0);
	if (!s) {
		if (slot_live >= LAYER_ENTRIES_MAX)
			refuse(path, "more than 4,000,000 paths in one layer");
		if ((slot_used + 1) * 10 > slot_cap * 7) {
			slots_grow();
		}
		s = slot_find(path, 1);
		if (s->key == NULL)
			slot_used++;
		s->key = strdup(path);
		if (!s->key)
			fail("unpack", path, ENOMEM, "out of memory for the layer's paths");
		s->has_meta = 0;
		slot_live++;
	}
	s->kind = (unsigned char)k;
	return s;
}

/* ------------------------------------------------------------ small files, written by worker threads
 *
 * Creating a file is kernel work (inode allocation, directory insertion) that runs in
 * parallel across directories, so in layer mode regular files up to SMALL_FILE_MAX are
 * handed, data copied, to FILE_WORKERS threads while this thread goes on parsing. Their
 * parent is resolved here, beneath the root as for every operation, and passed as a
 * descriptor of its own. Every operation that could touch a file still being written
 * (remove, hard link, xattr, directory metadata, the end) first waits until the workers
 * are idle; a path written twice is removed first, so two jobs never share a path.
 */

#define FILE_WORKERS 3
#define SMALL_FILE_MAX (256u << 10)
#define QUEUE_LEN 256
#define QUEUE_BYTES_MAX (16u << 20)

struct file_job {
	int dir;
	char *path;             /* for messages; base points into it */
	const char *base;
	struct meta_job {
		uint32_t mode, uid, gid, mtime_nsec;
		int64_t mtime_sec;
	} m;
	int rooted;
	unsigned char *data;
	size_t len;
	unsigned long index;
};

static struct file_job queue[QUEUE_LEN];
static size_t q_head, q_count, q_busy, q_bytes;
static pthread_mutex_t q_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t q_nonempty = PTHREAD_COND_INITIALIZER, q_space = PTHREAD_COND_INITIALIZER, q_idle = PTHREAD_COND_INITIALIZER;
static int workers_started;
static struct {
	int set, err;
	unsigned long index;
	char path[PATH_BYTES_MAX + 1];
} worker_failure;

static int write_job(struct file_job *j)
{
	int fd = openat(j->dir, j->base, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, j->rooted ? j->m.mode & 07777 : 0600);
	if (fd < 0)
		return errno;
	for (size_t off = 0; off < j->len;) {
		ssize_t w = write(fd, j->data + off, j->len - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0) {
			int err = errno;
			close(fd);
			return err;
		}
		off += (size_t)w;
	}
	struct timespec t = { .tv_sec = (time_t)j->m.mtime_sec, .tv_nsec = (long)j->m.mtime_nsec };
	struct timespec ts[2] = { t, t };
	if ((!j->rooted && (fchown(fd, j->m.uid, j->m.gid) != 0 || fchmod(fd, j->m.mode & 07777) != 0)) || futimens(fd, ts) != 0) {
		int err = errno;
		close(fd);
		return err;
	}
	return close(fd) == 0 ? 0 : errno;
}

static void *file_worker(void *arg)
{
	(void)arg;
	for (;;) {
		pthread_mutex_lock(&q_lock);
		while (q_count == 0)
			pthread_cond_wait(&q_nonempty, &q_lock);
		struct file_job j = queue[q_head];
		q_head = (q_head + 1) % QUEUE_LEN;
		q_count--;
		q_busy++;
		q_bytes -= j.len;
		int skip = worker_failure.set;
		pthread_cond_signal(&q_space);
		pthread_mutex_unlock(&q_lock);
		int err = skip ? 0 : write_job(&j);
		pthread_mutex_lock(&q_lock);
		if (err && !worker_failure.set) {
			worker_failure.set = 1;
			worker_failure.err = err;
			worker_failure.index = j.index;
			snprintf(worker_failure.path, sizeof worker_failure.path, "%s", j.path);
		}
		q_busy--;
		if (q_count == 0 && q_busy == 0)
			pthread_cond_broadcast(&q_idle);
		pthread_mutex_unlock(&q_lock);
		free(j.data);
		free(j.path);
		close(j.dir);
	}
	return NULL;
}

/* A worker's failure, reported as this thread's own. */
static void check_workers(void)
{
	pthread_mutex_lock(&q_lock);
	int set = worker_failure.set;
	pthread_mutex_unlock(&q_lock);
	if (set) {
		op_index = worker_failure.index;
		fail("file", worker_failure.path, worker_failure.err, strerror(worker_failure.err));
	}
}

/* Waits until every queued file is written; fails with the first worker failure. */
static void workers_idle(void)
{
	if (!workers_started)
		return;
	pthread_mutex_lock(&q_lock);
	while (q_count > 0 || q_busy > 0)
		pthread_cond_wait(&q_idle, &q_lock);
	pthread_mutex_unlock(&q_lock);
	check_workers();
}

static void start_workers(void)
{
	for (int i = 0; i < FILE_WORKERS; i++) {
		pthread_t t;
		pthread_attr_t a;
		pthread_attr_init(&a);
		pthread_attr_setstacksize(&a, 256 << 10);
		if (pthread_create(&t, &a, file_worker, NULL) != 0)
			break; /* fewer workers (or none: files are then written here) */
		pthread_detach(t);
		workers_started++;
	}
}

/* Queues a small regular file (its data read from the tar now) for a worker. */
static void queue_file(struct op *o)
{
	check_workers();
	const char *base;
	int dir = resolve_parent("file", o->path, &base);
	struct file_job j = {
		.m = { o->mode, o->uid, o->gid, o->mtime_nsec, o->mtime_sec },
		.rooted = root_owns_new_files && o->uid == 0 && o->gid == 0,
		.len = (size_t)o->data_len,
		.index = op_index,
	};
	j.dir = fcntl(dir, F_DUPFD_CLOEXEC, 0);
	j.path = strdup(o->path);
	j.data = malloc(j.len ? j.len : 1);
	if (j.dir < 0 || !j.path || !j.data)
		fail("file", o->path, errno ? errno : ENOMEM, "cannot queue the file");
	j.base = j.path + (base - o->path);
	for (size_t got = 0; got < j.len;) {
		const unsigned char *p;
		size_t n = in_peek(j.len - got, &p);
		if (n == 0)
			fail("file", o->path, EPIPE, "input ended inside the file's data");
		memcpy(j.data + got, p, n);
		in_pos += n;
		got += n;
	}
	pthread_mutex_lock(&q_lock);
	while (q_count == QUEUE_LEN || (q_count > 0 && q_bytes + j.len > QUEUE_BYTES_MAX))
		pthread_cond_wait(&q_space, &q_lock);
	queue[(q_head + q_count) % QUEUE_LEN] = j;
	q_count++;
	q_bytes += j.len;
	pthread_cond_signal(&q_nonempty);
	pthread_mutex_unlock(&q_lock);
}

/* ------------------------------------------------------------ operations, as the layer decides them */

static struct op lop; /* the operation being built */

static void lop_begin(char code, const char *path, const char *arg)
{
	if (code == 'r' || code == 'h' || code == 'x' || code == 'm')
		workers_idle(); /* they may touch a file a worker is writing */
	memset(&lop, 0, offsetof(struct op, path));
	lop.code = code;
	lop.path_len = (uint32_t)strlen(path);
	lop.arg_len = (uint32_t)strlen(arg);
	memcpy(lop.path, path, lop.path_len + 1);
	memcpy(lop.arg, arg, lop.arg_len + 1);
	refused_escape = 0;
	op_index++;
}

static void lop_meta(const struct meta *m)
{
	lop.mode = m->mode;
	lop.uid = m->uid;
	lop.gid = m->gid;
	lop.mtime_sec = m->mtime_sec;
	lop.mtime_nsec = m->mtime_nsec;
}

static void do_mkdir(const char *path, uint32_t mode)
{
	lop_begin('d', path, "");
	lop.mode = mode;
	op_mkdir(&lop);
}

static void do_remove(const char *path)
{
	lop_begin('r', path, "");
	op_remove(&lop);
}

static void do_mknod(const char *path, uint32_t mode, uint32_t major, uint32_t minor, const struct meta *m)
{
	lop_begin('n', path, "");
	lop_meta(m);
	lop.mode = mode;
	lop.major = major;
	lop.minor = minor;
	op_mknod(&lop);
}

static void do_xattr(const char *path, const char *name, const void *value, size_t len)
{
	lop_begin('x', path, name);
	set_xattr(path, name, value, len);
}

/*
 * Removes whatever an earlier entry of this layer put at rel, so a later entry replaces
 * it, and forgets everything recorded under it: no deferred work outlives its path.
 */
static void clear_path(const char *rel)
{
	if (!kind_of(rel))
		return;
	size_t n = strlen(rel);
	for (size_t i = 0; i < slot_cap; i++) {
		char *k = slots[i].key;
		if (k == NULL || k == TOMBSTONE)
			continue;
		if (strncmp(k, rel, n) == 0 && (k[n] == '\0' || k[n] == '/')) {
			free(k);
			slots[i].key = TOMBSTONE;
			slot_live--;
		}
	}
	do_remove(rel);
}

/* Makes rel (and its parents) a directory if missing, 0755 like containerd; refuses a symlink or file in the way. */
static void ensure_dir(const char *rel, const char *entry, int create)
{
	struct slot *s = kind_of(rel);
	if (s && s->kind == K_DIR)
		return;
	char cur[REL_PATH_MAX + 1];
	size_t len = strlen(rel);
	char reason[REL_PATH_MAX * 2 + 64];
	for (size_t end = 0; end <= len; end++) {
		if (end < len && rel[end] != '/')
			continue;
		memcpy(cur, rel, end);
		cur[end] = '\0';
		struct slot *c = kind_of(cur);
		if (c && c->kind == K_DIR)
			continue;
		if (c && c->kind == K_SYMLINK) {
			snprintf(reason, sizeof reason, "its path goes through the symlink %s", quoted(cur));
			refuse(entry, reason);
		}
		if (c) {
			snprintf(reason, sizeof reason, "its parent %s is not a directory", quoted(cur));
			refuse(entry, reason);
		}
		if (!create) {
			snprintf(reason, sizeof reason, "%s does not exist in this layer", quoted(cur));
			refuse(entry, reason);
		}
		do_mkdir(cur, 0755);
		set_kind(cur, K_DIR);
	}
}

/*
 * A tar entry name as a path relative to the layer root ("" for the root itself): "./"
 * prefixes and trailing slashes dropped; absolute names, ".." and names Linux cannot hold
 * (longer than PATH_MAX, a component longer than NAME_MAX) refused.
 */
static void checked_relative(const char *name, size_t name_len, char *out)
{
	if (strlen(name) != name_len)
		refuse(name, "a NUL byte in the name");
	if (name[0] == '/')
		refuse(name, "an absolute path would land outside the layer");
	size_t o = 0;
	int too_long = 0, long_part = 0;
	for (const char *s = name; *s;) {
		const char *e = strchr(s, '/');
		size_t n = e ? (size_t)(e - s) : strlen(s);
		if (n == 2 && s[0] == '.' && s[1] == '.')
			refuse(name, "a '..' component would land outside the layer");
		if (n > 0 && !(n == 1 && s[0] == '.')) {
			if (n > NAME_BYTES_MAX)
				long_part = 1;
			if (o + (o > 0) + n > REL_PATH_MAX) {
				too_long = 1;
			} else {
				if (o > 0)
					out[o++] = '/';
				memcpy(out + o, s, n);
				o += n;
			}
		}
		if (!e)
			break;
		s = e + 1;
	}
	out[o] = '\0';
	if (too_long)
		refuse(name, "a name longer than 4095 bytes");
	if (long_part)
		refuse(name, "a path component longer than 255 bytes");
}

/* ------------------------------------------------------------ the tar */

struct xattr_rec {
	const char *name;
	const unsigned char *value;
	size_t len;
};

struct entry {
	char type;
	char *name;
	size_t name_len;
	char *linkname;
	size_t linkname_len;
	int has_linkname;
	struct meta meta;
	uint32_t devmajor, devminor;
	uint64_t size;
	struct xattr_rec xattrs[64];
	int n_xattrs;
	int xattrs_dropped;
};

/* What extended headers said for the next entry. */
static unsigned char *pax_buf;
static char *long_name, *long_link;
static size_t long_name_len, long_link_len;

static unsigned char *read_extended(uint64_t size, const char *what)
{
	if (size > TAR_EXT_MAX) {
		char msg[128];
		snprintf(msg, sizeof msg, "tar: a %s header of %llu bytes (more than 4 MiB)", what, (unsigned long long)size);
		corrupt(msg);
	}
	unsigned char *b = malloc((size_t)size + 1);
	if (!b)
		fail("unpack", NULL, ENOMEM, "out of memory for a tar extended header");
	if (tar_read(b, (size_t)size) != size)
		corrupt("tar: unexpected end of data inside an extended header");
	b[size] = '\0';
	tar_skip(tar_padding(size));
	return b;
}

static int64_t pax_decimal(const unsigned char *v, size_t len, int *ok)
{
	int64_t x = 0;
	*ok = len > 0 && len < 19;
	for (size_t i = 0; i < len && *ok; i++) {
		if (v[i] < '0' || v[i] > '9')
			*ok = 0;
		else
			x = x * 10 + (v[i] - '0');
	}
	return x;
}

/* PAX records ("LEN key=value\n") applied to e; a malformed record ends the parse, as tar-stream does. */
static void apply_pax(struct entry *e, unsigned char *buf, size_t size)
{
	size_t at = 0;
	while (at < size) {
		size_t sp = at;
		while (sp < size && buf[sp] != ' ')
			sp++;
		int ok;
		int64_t len = pax_decimal(buf + at, sp - at, &ok);
		if (!ok || sp >= size || len <= (int64_t)(sp - at + 1) || (uint64_t)len > size - at)
			return;
		unsigned char *rec = buf + sp + 1, *end = buf + at + len - 1; /* without the newline */
		unsigned char *eq = memchr(rec, '=', (size_t)(end - rec));
		if (!eq)
			return;
		*eq = '\0';
		const char *key = (const char *)rec;
		unsigned char *val = eq + 1;
		size_t vlen = (size_t)(end - val);
		*end = '\0'; /* values are also used as strings */
		if (strcmp(key, "path") == 0) {
			e->name = (char *)val;
			e->name_len = vlen;
		} else if (strcmp(key, "linkpath") == 0) {
			e->linkname = (char *)val;
			e->linkname_len = vlen;
			e->has_linkname = 1;
		} else if (strcmp(key, "size") == 0) {
			int64_t v = pax_decimal(val, vlen, &ok);
			if (!ok)
				corrupt("tar: a PAX size that is not a number");
			e->size = (uint64_t)v;
		} else if (strcmp(key, "uid") == 0 || strcmp(key, "gid") == 0) {
			int64_t v = pax_decimal(val, vlen, &ok);
			if (ok && v <= UINT32_MAX)
				*(key[0] == 'u' ? &e->meta.uid : &e->meta.gid) = (uint32_t)v;
		} else if (strcmp(key, "mtime") == 0) {
			const unsigned char *dot = memchr(val, '.', vlen);
			int neg = vlen > 0 && val[0] == '-';
			int64_t sec = pax_decimal(val + neg, (size_t)((dot ? dot : val + vlen) - val) - (size_t)neg, &ok);
			if (ok) {
				uint32_t nsec = 0;
				if (dot) {
					size_t digits = 0;
					for (const unsigned char *d = dot + 1; d < val + vlen && digits < 9 && *d >= '0' && *d <= '9'; d++, digits++)
						nsec = nsec * 10 + (uint32_t)(*d - '0');
					for (; digits < 9; digits++)
						nsec *= 10;
				}
				e->meta.mtime_sec = neg ? -sec : sec;
				e->meta.mtime_nsec = neg ? 0 : nsec;
			}
		} else if (strncmp(key, "SCHILY.xattr.", 13) == 0) {
			if (e->n_xattrs < (int)(sizeof e->xattrs / sizeof e->xattrs[0]))
				e->xattrs[e->n_xattrs++] = (struct xattr_rec){ key + 13, val, vlen };
			else
				e->xattrs_dropped = 1;
		}
		at += (size_t)len;
	}
}

/* The next entry (extended headers applied), or 0 at the end of the tar. */
static int next_entry(struct entry *e, char *name_buf, char *link_buf)
{
	free(pax_buf);
	free(long_name);
	free(long_link);
	pax_buf = NULL;
	long_name = long_link = NULL;
	unsigned char *pax = NULL;
	uint64_t pax_size = 0;
	for (;;) {
		unsigned char h[TAR_BLOCK];
		size_t got = tar_read(h, sizeof h);
		if (got == 0)
			return 0;
		if (got < sizeof h)
			corrupt("tar: unexpected end of data inside a header");
		if (all_zero(h))
			continue; /* end-of-archive blocks; whatever follows is read (and hashed) too */
		if (!tar_checksum_ok(h))
			corrupt("tar: invalid header checksum (the layer is corrupt, or not a tar)");
		char type = (char)h[156];
		int64_t size = tar_number(h + 124, 12);
		if (size < 0)
			corrupt("tar: a negative entry size");
		switch (type) {
		case 'L':
			free(long_name);
			long_name = (char *)read_extended((uint64_t)size, "GNU long name");
			long_name_len = strnlen(long_name, (size_t)size);
			continue;
		case 'K':
			free(long_link);
			long_link = (char *)read_extended((uint64_t)size, "GNU long link");
			long_link_len = strnlen(long_link, (size_t)size);
			continue;
		case 'x':
			free(pax);
			pax = read_extended((uint64_t)size, "PAX");
			pax_size = (uint64_t)size;
			continue;
		case 'g':
			free(read_extended((uint64_t)size, "PAX global")); /* no per-entry meaning Corral uses */
			continue;
		}
		memset(e, 0, sizeof *e);
		e->type = type;
		int ustar = memcmp(h + 257, "ustar\0", 6) == 0;
		if (ustar && h[345]) {
			field(name_buf, h + 345, 155);
			size_t n = strlen(name_buf);
			name_buf[n] = '/';
			field(name_buf + n + 1, h, 100);
		} else {
			field(name_buf, h, 100);
		}
		e->name = name_buf;
		e->name_len = strlen(name_buf);
		field(link_buf, h + 157, 100);
		e->linkname = link_buf;
		e->linkname_len = strlen(link_buf);
		e->has_linkname = h[157] != 0;
		int64_t mode = tar_number(h + 100, 8), uid = tar_number(h + 108, 8), gid = tar_number(h + 116, 8);
		e->meta.mode = (uint32_t)mode & 07777;
		e->meta.uid = uid >= 0 && uid <= UINT32_MAX ? (uint32_t)uid : 0;
		e->meta.gid = gid >= 0 && gid <= UINT32_MAX ? (uint32_t)gid : 0;
		e->meta.mtime_sec = tar_number(h + 136, 12);
		e->devmajor = (uint32_t)tar_number(h + 329, 8);
		e->devminor = (uint32_t)tar_number(h + 337, 8);
		e->size = (uint64_t)size;
		if (long_name) {
			e->name = long_name;
			e->name_len = long_name_len;
		}
		if (long_link) {
			e->linkname = long_link;
			e->linkname_len = long_link_len;
			e->has_linkname = 1;
		}
		if (pax) {
			apply_pax(e, pax, (size_t)pax_size);
			pax_buf = pax;
		}
		/* Old tars mark directories with a trailing slash on a regular-file entry. */
		if ((type == '0' || type == '\0') && e->name_len > 0 && e->name[e->name_len - 1] == '/')
			e->type = '5';
		return 1;
	}
}

#define WHITEOUT_PREFIX ".wh."
#define OPAQUE_MARKER ".wh..wh..opq"

/* Applies one entry (its data is consumed here, or skipped by the caller). Returns whether the data was consumed. */
static int apply_entry(struct entry *e)
{
	static char rel[REL_PATH_MAX + 1], target[REL_PATH_MAX + 1], parent[REL_PATH_MAX + 1], hidden[2 * REL_PATH_MAX + 2];
	char reason[REL_PATH_MAX * 2 + 128];
	checked_relative(e->name, e->name_len, rel);
	if (rel[0] == '\0')
		return 0; /* the layer root itself: the snapshot dir keeps its own attributes */
	const char *slash = strrchr(rel, '/');
	const char *base = slash ? slash + 1 : rel;
	size_t parent_len = slash ? (size_t)(slash - rel) : 0;
	memcpy(parent, rel, parent_len);
	parent[parent_len] = '\0';
	struct meta *m = &e->meta;

	if (strcmp(base, OPAQUE_MARKER) == 0) {
		ensure_dir(parent, e->name, 1);
		do_xattr(parent, "trusted.overlay.opaque", "y", 1);
		return 0;
	}
	if (strncmp(base, WHITEOUT_PREFIX, 4) == 0) {
		if (strncmp(base + 4, WHITEOUT_PREFIX, 4) == 0)
			return 0; /* AUFS metadata (.wh..wh.plnk ...): no overlay meaning */
		const char *hidden_base = base + 4;
		if (!*hidden_base || strcmp(hidden_base, ".") == 0 || strcmp(hidden_base, "..") == 0) {
			snprintf(reason, sizeof reason, "a whiteout of %s would remove the directory itself or its parent", quoted(hidden_base));
			refuse(e->name, reason);
		}
		snprintf(hidden, sizeof hidden, "%s%s%s", parent, parent_len ? "/" : "", hidden_base);
		ensure_dir(parent, e->name, 1);
		clear_path(hidden);
		struct meta wm = { 0, 0, 0, m->mtime_nsec, m->mtime_sec };
		do_mknod(hidden, S_IFCHR, 0, 0, &wm);
		set_kind(hidden, K_NODE);
		return 0;
	}

	ensure_dir(parent, e->name, 1);
	int consumed = 0;
	switch (e->type) {
	case '5': {
		struct slot *s = kind_of(rel);
		if (!s || s->kind != K_DIR) {
			clear_path(rel);
			do_mkdir(rel, 0700);
			s = set_kind(rel, K_DIR);
		}
		s->meta = *m;
		s->has_meta = 1;
		break;
	}
	case '0':
	case '\0':
	case '7':
		clear_path(rel);
		set_kind(rel, K_FILE);
		lop_begin('f', rel, "");
		lop_meta(m);
		lop.data_len = e->size;
		if (workers_started && e->size <= SMALL_FILE_MAX)
			queue_file(&lop);
		else
			op_file(&lop);
		consumed = 1;
		break;
	case '2':
		/* Linux cannot make a symlink to "": refused here with a reason, not failed below. */
		if (!e->has_linkname || e->linkname_len == 0)
			refuse(e->name, "a symlink with an empty target");
		if (e->linkname_len > REL_PATH_MAX)
			refuse(e->name, "a symlink target longer than 4095 bytes");
		if (strlen(e->linkname) != e->linkname_len)
			refuse(e->name, "a NUL byte in its symlink target");
		clear_path(rel);
		set_kind(rel, K_SYMLINK);
		lop_begin('l', rel, e->linkname);
		lop_meta(m);
		op_symlink(&lop);
		break;
	case '1': {
		clear_path(rel); /* first: a link to what it replaces (or to something under it) is refused below */
		checked_relative(e->has_linkname ? e->linkname : "", e->has_linkname ? e->linkname_len : 0, target);
		if (target[0] == '\0')
			refuse(e->name, "a hard link to the layer root");
		char *tslash = strrchr(target, '/');
		if (tslash) {
			*tslash = '\0';
			ensure_dir(target, e->name, 0);
			*tslash = '/';
		}
		struct slot *t = kind_of(target);
		if (!t || t->kind == K_DIR) {
			snprintf(reason, sizeof reason, "its hard-link target %s is not a file earlier in this layer", quoted(e->linkname));
			refuse(e->name, reason);
		}
		enum kind k = (enum kind)t->kind;
		lop_begin('h', rel, target);
		op_link(&lop);
		set_kind(rel, k);
		break;
	}
	case '3':
	case '4':
	case '6': {
		uint32_t type = e->type == '6' ? S_IFIFO : e->type == '4' ? S_IFBLK : S_IFCHR;
		clear_path(rel);
		do_mknod(rel, type | m->mode, e->devmajor, e->devminor, m);
		set_kind(rel, K_NODE);
		break;
	}
	default: {
		char what[64];
		snprintf(what, sizeof what, (unsigned char)e->type >= 0x20 && (unsigned char)e->type < 0x7f ? "unsupported tar entry type '%c'" : "unsupported tar entry type 0x%02x", (unsigned char)e->type);
		refuse(e->name, what);
	}
	}
	/* After the entry's own chown (which clears security.capability). */
	if (e->xattrs_dropped)
		refuse(e->name, "more than 64 xattrs on one entry");
	for (int i = 0; i < e->n_xattrs; i++) {
		const struct xattr_rec *x = &e->xattrs[i];
		/* overlayfs's own xattrs in a layer would redirect lookups; only Corral sets those. */
		if (strncmp(x->name, "trusted.overlay.", 16) == 0)
			continue;
		size_t nlen = strlen(x->name);
		if (nlen == 0 || nlen > NAME_BYTES_MAX) {
			snprintf(reason, sizeof reason, "an xattr name of %zu bytes", nlen);
			refuse(e->name, reason);
		}
		if (x->len > XATTR_VALUE_MAX) {
			snprintf(reason, sizeof reason, "the xattr %s is larger than %d bytes", x->name, XATTR_VALUE_MAX);
			refuse(e->name, reason);
		}
		do_xattr(rel, x->name, x->value, x->len);
	}
	return consumed;
}

/*
 * A zstd blob (0x28 0xb5 0x2f 0xfd): Debian's zstd tool decompresses it (libzstd's headers
 * are not installed) from the start of the file into a pipe read like a plain tar;
 * its exit status is checked when its output ends.
 */
static void start_zstd(void)
{
	int p[2];
	if (following) /* zstd would read the file past what was announced */
		fail("zstd", NULL, EINVAL, "a zstd layer is unpacked from its stored file, not followed");
	if (lseek(blob_fd, 0, SEEK_SET) != 0)
		fail("zstd", NULL, errno, "a zstd layer must be a file (it is read again from its start)");
	if (pipe2(p, O_CLOEXEC) != 0)
		fail("zstd", NULL, errno, strerror(errno));
	fflush(stdout);
	zstd_pid = fork();
	if (zstd_pid < 0)
		fail("zstd", NULL, errno, strerror(errno));
	if (zstd_pid == 0) {
		if (dup2(blob_fd, 0) < 0 || dup2(p[1], 1) < 0)
			_exit(126);
		execlp("zstd", "zstd", "-d", "-c", "-q", (char *)NULL);
		_exit(127);
	}
	close(p[1]);
	close(blob_fd);
	blob_fd = p[0];
	zs.avail_in = 0; /* those two bytes are zstd's to read again */
}

static int unpack_layer(const char *blob, const char *dir, int follow)
{
	if (follow || strcmp(blob, "-") == 0) {
		hash_input = 1;
		input_ctx = EVP_MD_CTX_new();
		if (!input_ctx || EVP_DigestInit_ex(input_ctx, EVP_sha256(), NULL) != 1)
			fail("sha256", NULL, ENOMEM, "cannot start a sha256 digest");
	}
	if (!follow && strcmp(blob, "-") == 0) {
		blob_fd = 0;
		/* A pipe of 1 MiB (if allowed): fewer wake-ups of both sides per MiB of input. */
		(void)fcntl(0, F_SETPIPE_SZ, 1 << 20);
	} else {
		following = follow;
		blob_fd = open(blob, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
		if (blob_fd < 0)
			fail("open", blob, errno, strerror(errno));
	}
	diff_ctx = EVP_MD_CTX_new();
	if (!diff_ctx || EVP_DigestInit_ex(diff_ctx, EVP_sha256(), NULL) != 1)
		fail("sha256", NULL, ENOMEM, "cannot start a sha256 digest");
	/* gzip by its magic bytes (media types lie); anything else is read as a plain tar. */
	size_t head = 0;
	for (size_t n = 1; head < 4 && n > 0; head += n)
		n = read_blob(zin + head, 4 - head);
	zs.avail_in = (uint32_t)head;
	zs.next_in = zin;
	gzipped = head >= 2 && zin[0] == 0x1f && zin[1] == 0x8b;
	if (head == 4 && memcmp(zin, "\x28\xb5\x2f\xfd", 4) == 0)
		start_zstd();
	else if (gzipped) {
		/* zs is static, so zeroed as isal_inflate_init leaves it, and holds the bytes read. */
		gzip_member_start();
	} else {
		/* Those bytes were the tar's first: start the tar with them. */
		memcpy(in_buf, zin, zs.avail_in);
		in_len = zs.avail_in;
		EVP_DigestUpdate(diff_ctx, in_buf, in_len);
		diff_bytes = in_len;
	}
	refill = read_layer;
	root_fd = open(dir, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (root_fd < 0)
		fail("open", dir, errno, strerror(errno));
	struct stat root_st;
	if (fstat(root_fd, &root_st) != 0)
		fail("open", dir, errno, strerror(errno));
	root_owns_new_files = geteuid() == 0 && getegid() == 0 && !(root_st.st_mode & S_ISGID);
	slots_grow();
	set_kind("", K_DIR);
	start_workers();

	static char name_buf[TAR_BLOCK + 2], link_buf[TAR_BLOCK];
	static struct entry e;
	unsigned long entries = 0;
	while (next_entry(&e, name_buf, link_buf)) {
		entries++;
		uint64_t size = e.size;
		int consumed = apply_entry(&e);
		/* Directories, links and nodes carry no data; a size on one is skipped. */
		tar_skip((consumed ? 0 : size) + tar_padding(size));
	}
	/* Directory metadata last: creating entries changes a directory's mtime. */
	for (size_t i = 0; i < slot_cap; i++) {
		struct slot *s = &slots[i];
		if (s->key == NULL || s->key == TOMBSTONE || s->kind != K_DIR || !s->has_meta)
			continue;
		lop_begin('m', s->key, "");
		lop_meta(&s->meta);
		op_meta(&lop);
	}
	workers_idle();
	const char *z = zstd_failure(); /* a zstd stream cut at a tar block boundary still parses */
	if (z)
		corrupt(z);
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int md_len = 0;
	EVP_DigestFinal_ex(diff_ctx, md, &md_len);
	printf("{\"done\":%lu,\"entries\":%lu,\"diffId\":\"sha256:", op_index, entries);
	for (unsigned i = 0; i < md_len; i++)
		printf("%02x", md[i]);
	printf("\",\"size\":%llu", (unsigned long long)diff_bytes);
	if (hash_input) {
		EVP_DigestFinal_ex(input_ctx, md, &md_len);
		printf(",\"inputDigest\":\"sha256:");
		for (unsigned i = 0; i < md_len; i++)
			printf("%02x", md[i]);
		printf("\",\"inputSize\":%llu", (unsigned long long)input_bytes);
	}
	printf("}\n");
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 4 && (strcmp(argv[1], "--layer") == 0 || strcmp(argv[1], "--layer-follow") == 0)) {
		umask(0);
		return unpack_layer(argv[2], argv[3], strcmp(argv[1], "--layer-follow") == 0);
	}
	if (argc != 2) {
		fprintf(stderr, "usage: corral-unpack DIR < OPS | corral-unpack --layer BLOB DIR | corral-unpack --layer-follow FILE DIR < LENGTHS (see native/unpack.c)\n");
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
