/*
 * small-files-wall: how fast this machine's filesystem takes many small files, with no
 * tar, gzip or hashing in the way: the wall that corral-unpack (and GNU tar, and
 * containerd) meet on a layer of 1-8 KiB files. It creates 4,200 files of 1-8 KiB (as
 * pullbench's "thousands" layer) in a fresh directory DIR, from THREADS threads, into one
 * directory or DIRS directories, each file openat(O_CREAT|O_EXCL) + write + close, with
 * META=1 also fchmod + futimens (what corral-unpack does for a file not root's), META=2 (or
 * 3, with fchmod + futimens) each thread filling a directory of its own. Prints the time,
 * MB/s of file data and microseconds per file. Remove DIR afterwards.
 *
 *   gcc -O2 -pthread -o /tmp/small-files-wall bench/small-files-wall.c
 *   /tmp/small-files-wall DIR THREADS DIRS META
 *
 * DIR must be on the filesystem to measure (pullbench puts its stores under /run).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define FILES 4200
#define THREADS_MAX 16
#define DIRS_MAX 64

static int nthreads, ndirs, meta, root;
static char data[8192];

static double now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

/* 1-8 KiB, spread deterministically. */
static size_t size_of(int i)
{
	return 1024 + (i * 2654435761u) % (7 * 1024);
}

static void *worker(void *arg)
{
	long id = (long)arg;
	int dirfd[DIRS_MAX];
	for (int d = 0; d < ndirs; d++) {
		char n[32];
		snprintf(n, sizeof n, "d%d", d);
		dirfd[d] = openat(root, n, O_PATH | O_DIRECTORY);
		if (dirfd[d] < 0) {
			perror("open dir");
			exit(1);
		}
	}
	for (int i = (int)id; i < FILES; i += nthreads) {
		char n[32];
		snprintf(n, sizeof n, "f%05d", i);
		int d = ndirs == 1 ? 0 : (meta & 2) ? (int)id % ndirs : i % ndirs;
		int fd = openat(dirfd[d], n, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
		if (fd < 0) {
			perror("openat");
			exit(1);
		}
		size_t s = size_of(i);
		if (write(fd, data, s) != (ssize_t)s) {
			perror("write");
			exit(1);
		}
		if (meta & 1) {
			struct timespec ts[2] = { { 1, 0 }, { 1, 0 } };
			if (fchmod(fd, 0644) != 0 || futimens(fd, ts) != 0) {
				perror("fchmod/futimens");
				exit(1);
			}
		}
		close(fd);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc != 5) {
		fprintf(stderr, "usage: %s DIR THREADS DIRS META (see bench/small-files-wall.c)\n", argv[0]);
		return 2;
	}
	nthreads = atoi(argv[2]);
	ndirs = atoi(argv[3]);
	meta = atoi(argv[4]);
	if (nthreads < 1 || nthreads > THREADS_MAX || ndirs < 1 || ndirs > DIRS_MAX || meta < 0 || meta > 3) {
		fprintf(stderr, "THREADS 1-%d, DIRS 1-%d, META 0-3\n", THREADS_MAX, DIRS_MAX);
		return 2;
	}
	memset(data, 'x', sizeof data);
	if (mkdir(argv[1], 0755) != 0) {
		perror("mkdir DIR (must not exist)");
		return 1;
	}
	root = open(argv[1], O_PATH | O_DIRECTORY);
	for (int d = 0; d < ndirs; d++) {
		char n[32];
		snprintf(n, sizeof n, "d%d", d);
		mkdirat(root, n, 0755);
	}
	long bytes = 0;
	for (int i = 0; i < FILES; i++)
		bytes += (long)size_of(i);
	double t0 = now_ms();
	pthread_t th[THREADS_MAX];
	for (long t = 0; t < nthreads; t++)
		pthread_create(&th[t], NULL, worker, (void *)t);
	for (int t = 0; t < nthreads; t++)
		pthread_join(th[t], NULL);
	double ms = now_ms() - t0;
	printf("threads %d dirs %d meta %d: %d files, %.1f MB in %.0f ms = %.1f MB/s, %.0f us/file\n", nthreads, ndirs, meta, FILES,
	       bytes / 1e6, ms, bytes / 1e6 / (ms / 1e3), ms * 1e3 / FILES);
	return 0;
}
