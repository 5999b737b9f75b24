/*
 * corral-fsnodes: the two filesystem operations a layer unpacker needs that
 * Node.js has no API for: making device nodes and fifos (mknod(2)) and setting
 * extended attributes on a path without following a final symlink
 * (lsetxattr(2)). Overlay whiteouts are 0/0 character devices and opaque
 * directories carry the trusted.overlay.opaque xattr, so every image with a
 * deleted file needs this.
 *
 *   corral-fsnodes < OPS
 *
 * OPS is a sequence of NUL-terminated fields (paths may hold any byte but
 * NUL), one operation after another:
 *
 *   "mknod" PATH MODE MAJOR MINOR   MODE in octal with its S_IFCHR, S_IFBLK or
 *                                   S_IFIFO type bits; an existing PATH is an
 *                                   error (the caller removes it first)
 *   "xattr" PATH NAME HEXVALUE      lsetxattr(PATH, NAME, value, 0)
 *
 * PATH must be absolute; the caller has already checked that it stays inside
 * the directory being filled. The umask is cleared so MODE is applied as
 * given. The first failure stops the run and prints one line of JSON,
 * {"error":..., "op":..., "path":..., "errno":N}, on stdout with exit status
 * 1; success prints {"done":N} and exits 0.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/xattr.h>
#include <unistd.h>

#define FIELD_MAX 8192
#define XATTR_VALUE_MAX 65536

static void json_string(const char *s)
{
	putchar('"');
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			printf("\\%c", *p);
		else if (*p < 0x20)
			printf("\\u%04x", *p);
		else
			putchar(*p);
	}
	putchar('"');
}

static int fail(const char *op, const char *path, int err, const char *msg)
{
	printf("{\"error\":");
	json_string(msg);
	printf(",\"op\":");
	json_string(op);
	printf(",\"path\":");
	json_string(path ? path : "");
	printf(",\"errno\":%d}\n", err);
	return 1;
}

/* Reads one NUL-terminated field; 1 on success, 0 at a clean end of input, -1 on error. */
static int read_field(char *buf, size_t cap, int first)
{
	size_t n = 0;
	int c;
	while ((c = getchar()) != EOF) {
		if (c == '\0') {
			buf[n] = '\0';
			return 1;
		}
		if (n + 1 >= cap)
			return -1;
		buf[n++] = (char)c;
	}
	return (first && n == 0) ? 0 : -1;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static int parse_ulong(const char *s, int base, unsigned long *out)
{
	char *end;
	errno = 0;
	*out = strtoul(s, &end, base);
	return errno == 0 && *s != '\0' && *end == '\0';
}

int main(int argc, char **argv)
{
	if (argc > 1) {
		fprintf(stderr, "usage: corral-fsnodes < OPS (NUL-separated: mknod PATH MODE MAJOR MINOR | xattr PATH NAME HEX)\n");
		return 2;
	}
	static char op[16], path[FIELD_MAX], a[FIELD_MAX], b[FIELD_MAX], c[FIELD_MAX * 2 + 2];
	static unsigned char value[XATTR_VALUE_MAX];
	unsigned long done = 0;
	umask(0);
	for (;;) {
		int r = read_field(op, sizeof op, 1);
		if (r == 0)
			break;
		if (r < 0 || read_field(path, sizeof path, 0) < 0)
			return fail("read", NULL, EINVAL, "malformed input: expected an operation and a path");
		if (path[0] != '/')
			return fail(op, path, EINVAL, "path must be absolute");
		if (strcmp(op, "mknod") == 0) {
			unsigned long mode, major, minor;
			if (read_field(a, sizeof a, 0) < 0 || read_field(b, sizeof b, 0) < 0 || read_field(c, sizeof c, 0) < 0)
				return fail(op, path, EINVAL, "mknod needs MODE MAJOR MINOR");
			if (!parse_ulong(a, 8, &mode) || !parse_ulong(b, 10, &major) || !parse_ulong(c, 10, &minor))
				return fail(op, path, EINVAL, "mknod: MODE must be octal, MAJOR and MINOR decimal");
			mode_t type = (mode_t)mode & S_IFMT;
			if (type != S_IFCHR && type != S_IFBLK && type != S_IFIFO)
				return fail(op, path, EINVAL, "mknod: MODE must carry a character device, block device or fifo type");
			if (mknod(path, (mode_t)mode, makedev(major, minor)) != 0)
				return fail(op, path, errno, strerror(errno));
		} else if (strcmp(op, "xattr") == 0) {
			if (read_field(a, sizeof a, 0) < 0 || read_field(c, sizeof c, 0) < 0)
				return fail(op, path, EINVAL, "xattr needs NAME HEXVALUE");
			size_t hexlen = strlen(c);
			if (hexlen % 2 != 0 || hexlen / 2 > sizeof value)
				return fail(op, path, EINVAL, "xattr: value must be an even number of hex digits, at most 64 KiB");
			for (size_t i = 0; i < hexlen / 2; i++) {
				int hi = hexval(c[2 * i]), lo = hexval(c[2 * i + 1]);
				if (hi < 0 || lo < 0)
					return fail(op, path, EINVAL, "xattr: value is not hex");
				value[i] = (unsigned char)(hi * 16 + lo);
			}
			if (lsetxattr(path, a, value, hexlen / 2, 0) != 0)
				return fail(op, path, errno, strerror(errno));
		} else {
			return fail(op, path, EINVAL, "unknown operation (expected mknod or xattr)");
		}
		done++;
	}
	printf("{\"done\":%lu}\n", done);
	return 0;
}
