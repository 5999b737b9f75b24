/*
 * corral-spawner: runs programs for the daemon, so that the daemon does not fork itself.
 *
 * Node's child_process.spawn forks the whole daemon (fork(2): its page tables, ~70 MiB of
 * them mapped, copied on the main thread, then a copy-on-write fault for every page the
 * daemon touches next). This small static process is started once and runs every program,
 * so each CNI plugin or helper costs the daemon one message each way instead of a fork
 * (a fork of this process copies a few pages).
 *
 * Protocol, on stdin (requests) and stdout (replies); native-endian u32 fields; a "str" is
 * a u32 length and that many bytes:
 *   request: u32 len (of what follows), u32 id (never 0), u32 timeout_ms (0: none), u32 flags
 *            (bit 0: the program gets `input` on a pipe as its stdin, else /dev/null;
 *            bit 1, with bit 0: that pipe stays open after `input` for "stdin data"
 *            frames, until an "end stdin" frame),
 *            u32 argc, argc × str (argv[0] is the program: a path, or a name looked up in
 *            the PATH of the given environment), u32 envc, envc × str ("K=V"),
 *            str cwd (empty: the spawner's), str input
 *   control: u32 len, u32 0, u32 op, u32 job id, then for op 1 the bytes (the rest):
 *            op 1 "stdin data": queued for the job's stdin pipe (bit 1 above), written as
 *            the program reads it (POLLOUT: a program that does not read blocks nobody);
 *            more than MAX_STDIN_QUEUED bytes waiting SIGKILLs the job (reply flag bit 2);
 *            op 2 "end stdin": the pipe is closed once what is queued is written;
 *            op 3 "kill": SIGKILL to the job's process group, as at its timeout.
 *            A control frame for a job that is gone (or whose stdin is) is ignored.
 *   reply:   u32 len, u32 id, i32 spawn_errno (0: it ran), i32 exit_code (-1: killed or
 *            not run), i32 signal (0: none), u32 flags (bit 0/1: stdout/stderr truncated
 *            at MAX_OUTPUT; bit 2: killed for too much stdin queued), str stdout, str stderr
 * The reply is sent once the program has exited and both its output pipes are closed
 * (as Node's 'close' event). Each program is the leader of a new session (as `detached`),
 * with default signal dispositions, an empty signal mask and only fds 0-2; at its timeout
 * its whole process group is SIGKILLed.
 *
 * EOF on stdin (the daemon is gone) ends the spawner at once; so does the daemon's death
 * (PR_SET_PDEATHSIG). A malformed request ends it with a message on stderr: the daemon
 * fails the calls in flight and starts another. Programs in flight die with the spawner
 * (each gets PR_SET_PDEATHSIG SIGKILL): nobody would enforce their timeout or read their
 * result any more, and a CNI ADD that ran on after the daemon's rollback (its DEL) had
 * undone it would leave its veth and IP reservation behind.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_FRAME (64u << 20)
#define MAX_OUTPUT (16u << 20)
#define MAX_ITEMS 65536u
#define MAX_STDIN_QUEUED (1u << 20)
#define FLAG_INPUT 1u
#define FLAG_STDIN_STREAM 2u
#define OP_STDIN_DATA 1u
#define OP_STDIN_END 2u
#define OP_KILL 3u
#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

struct buf {
	char *p;
	size_t len, cap;
	int truncated;
};

struct job {
	uint32_t id;
	pid_t pid;
	int out_fd, err_fd, in_fd;
	char *input; /* what is still to be written to in_fd: input_off..input_len */
	size_t input_len, input_off;
	int stdin_open; /* a streamed stdin the daemon has not ended yet */
	int stdin_overflow;
	struct buf out, err;
	int exited, status, killed;
	long long deadline; /* ms, CLOCK_MONOTONIC; 0: none */
	struct job *next;
};

static struct job *jobs;

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void die(const char *what)
{
	fprintf(stderr, "corral-spawner: %s\n", what);
	exit(2);
}

static void *xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);
	if (!q)
		die("out of memory");
	return q;
}

static void buf_add(struct buf *b, const void *data, size_t n, size_t limit)
{
	if (b->len + n > limit) {
		b->truncated = 1;
		n = limit > b->len ? limit - b->len : 0;
	}
	if (n == 0)
		return;
	if (b->len + n > b->cap) {
		b->cap = (b->len + n) * 2 < limit ? (b->len + n) * 2 : limit;
		b->p = xrealloc(b->p, b->cap);
	}
	memcpy(b->p + b->len, data, n);
	b->len += n;
}

/* Writes everything to a possibly non-blocking fd; exits when the daemon is gone. */
static void write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				struct pollfd pf = {.fd = fd, .events = POLLOUT};
				poll(&pf, 1, -1);
				continue;
			}
			exit(0);
		}
		p += w;
		n -= (size_t)w;
	}
}

static void put_u32(struct buf *b, uint32_t v)
{
	buf_add(b, &v, 4, SIZE_MAX);
}

static void reply(uint32_t id, int spawn_errno, int code, int sig, struct buf *out, struct buf *err, int stdin_overflow)
{
	struct buf r = {0};
	size_t outl = out ? out->len : 0, errl = err ? err->len : 0;
	put_u32(&r, 0);
	put_u32(&r, id);
	put_u32(&r, (uint32_t)spawn_errno);
	put_u32(&r, (uint32_t)code);
	put_u32(&r, (uint32_t)sig);
	put_u32(&r, (out && out->truncated ? 1u : 0u) | (err && err->truncated ? 2u : 0u) | (stdin_overflow ? 4u : 0u));
	put_u32(&r, (uint32_t)outl);
	if (outl)
		buf_add(&r, out->p, outl, SIZE_MAX);
	put_u32(&r, (uint32_t)errl);
	if (errl)
		buf_add(&r, err->p, errl, SIZE_MAX);
	uint32_t len = (uint32_t)(r.len - 4);
	memcpy(r.p, &len, 4);
	write_all(1, r.p, r.len);
	free(r.p);
}

/* A cursor over one request frame; any read past its end is a malformed request. */
struct cursor {
	const char *p, *end;
};

static uint32_t get_u32(struct cursor *c)
{
	uint32_t v;
	if (c->end - c->p < 4)
		die("malformed request (short field)");
	memcpy(&v, c->p, 4);
	c->p += 4;
	return v;
}

/* A NUL-terminated copy of the next str (NULs inside are refused: they would cut it). */
static char *get_str(struct cursor *c, size_t *len_out)
{
	uint32_t n = get_u32(c);
	if ((size_t)(c->end - c->p) < n)
		die("malformed request (short string)");
	if (memchr(c->p, '\0', n) && !len_out)
		die("malformed request (NUL in a string)");
	char *s = xrealloc(NULL, (size_t)n + 1);
	memcpy(s, c->p, n);
	s[n] = '\0';
	c->p += n;
	if (len_out)
		*len_out = n;
	return s;
}

static char **get_strs(struct cursor *c, uint32_t *count)
{
	uint32_t n = get_u32(c);
	if (n > MAX_ITEMS)
		die("malformed request (too many strings)");
	char **v = xrealloc(NULL, ((size_t)n + 1) * sizeof(char *));
	for (uint32_t i = 0; i < n; i++)
		v[i] = get_str(c, NULL);
	v[n] = NULL;
	*count = n;
	return v;
}

static void free_strs(char **v)
{
	for (char **p = v; *p; p++)
		free(*p);
	free(v);
}

/* The raw rt_sigaction argument: glibc's sigaction() refuses its own internal signals (32, 33). */
struct kernel_sigaction {
	void (*handler)(int);
	unsigned long flags;
	void (*restorer)(void);
	uint64_t mask;
};

/* This process: what a program checks its parent against (see child_exec). */
static pid_t spawner_pid;

/*
 * In the forked child: what Node's spawn gives a program (a new session, every signal at
 * its default, none blocked, only fds 0-2: every other fd of the spawner is O_CLOEXEC),
 * then execve of argv[0], looked up in the PATH of its environment like execvp. Never
 * returns: on failure the errno goes to err_pipe and the child exits 127. No malloc here.
 */
static void child_exec(char **argv, char **envp, int in_fd, int out_fd, int err_fd, const char *cwd, int err_pipe)
{
	int e = 0;
	setsid();
	/* Dies with the spawner (see the top); a spawner already gone before this: not run at all. */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != spawner_pid)
		goto fail;
	for (int sig = 1; sig <= 64; sig++) {
		struct kernel_sigaction dfl = {.handler = SIG_DFL};
		syscall(SYS_rt_sigaction, sig, &dfl, NULL, 8);
	}
	uint64_t none = 0;
	syscall(SYS_rt_sigprocmask, SIG_SETMASK, &none, NULL, 8);
	if (in_fd < 0 && (in_fd = open("/dev/null", O_RDONLY | O_CLOEXEC)) < 0)
		goto fail;
	if (dup2(in_fd, 0) < 0 || dup2(out_fd, 1) < 0 || dup2(err_fd, 2) < 0)
		goto fail;
	if (cwd[0] && chdir(cwd) < 0)
		goto fail;
	const char *file = argv[0];
	if (file[0] == '\0') {
		errno = ENOENT;
		goto fail;
	}
	if (strchr(file, '/')) {
		execve(file, argv, envp);
		goto fail;
	}
	const char *path = NULL;
	for (char **ev = envp; *ev; ev++)
		if (strncmp(*ev, "PATH=", 5) == 0)
			path = *ev + 5;
	if (!path)
		path = DEFAULT_PATH;
	size_t flen = strlen(file);
	int saw_eacces = 0;
	char cand[PATH_MAX];
	for (const char *p = path;; p++) {
		const char *colon = strchrnul(p, ':');
		size_t dlen = (size_t)(colon - p);
		if (dlen + flen + 3 <= sizeof cand) {
			size_t off = 0;
			if (dlen == 0)
				cand[off++] = '.'; /* an empty PATH entry is the current directory */
			memcpy(cand + off, p, dlen);
			off += dlen;
			cand[off++] = '/';
			memcpy(cand + off, file, flen + 1);
			execve(cand, argv, envp);
			if (errno == EACCES)
				saw_eacces = 1;
			else if (errno != ENOENT && errno != ENOTDIR)
				goto fail;
		}
		if (*colon == '\0')
			break;
		p = colon;
	}
	errno = saw_eacces ? EACCES : ENOENT;
fail:
	e = errno;
	if (write(err_pipe, &e, sizeof e) < 0) {
		/* nothing more to do: the spawner sees exit status 127 */
	}
	_exit(127);
}

/* Forks and execs; the program's PID, or -errno when it could not be started. */
static pid_t spawn_program(char **argv, char **envp, int in_fd, int out_fd, int err_fd, const char *cwd)
{
	int ep[2];
	if (pipe2(ep, O_CLOEXEC) < 0)
		return -errno;
	/* fork, not posix_spawn: glibc's posix_spawn leaves its internal signals 32 and 33
	   ignored in the program. This process is small: its fork is cheap. */
	pid_t pid = fork();
	if (pid < 0) {
		int e = errno;
		close(ep[0]);
		close(ep[1]);
		return -e;
	}
	if (pid == 0)
		child_exec(argv, envp, in_fd, out_fd, err_fd, cwd, ep[1]);
	close(ep[1]);
	int e = 0;
	ssize_t n;
	do
		n = read(ep[0], &e, sizeof e);
	while (n < 0 && errno == EINTR);
	close(ep[0]);
	if (n == (ssize_t)sizeof e) {
		/* It never ran: reap it now (SIGCHLD is blocked; reap() will not find it). */
		while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
			;
		return -(e ? e : EIO);
	}
	return pid;
}

static void start_job(const char *frame, size_t len)
{
	struct cursor c = {frame, frame + len};
	uint32_t id = get_u32(&c);
	uint32_t timeout_ms = get_u32(&c);
	uint32_t flags = get_u32(&c);
	uint32_t argc, envc;
	char **argv = get_strs(&c, &argc);
	char **envp = get_strs(&c, &envc);
	char *cwd = get_str(&c, NULL);
	size_t input_len = 0;
	char *input = get_str(&c, &input_len);
	if (c.p != c.end)
		die("malformed request (trailing bytes)");
	if (argc == 0)
		die("malformed request (no program)");

	int out[2] = {-1, -1}, err[2] = {-1, -1}, in[2] = {-1, -1};
	int e = 0;
	if (pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0 || ((flags & FLAG_INPUT) && pipe2(in, O_CLOEXEC) < 0))
		e = errno;
	pid_t pid = -1;
	if (!e) {
		pid = spawn_program(argv, envp, (flags & FLAG_INPUT) ? in[0] : -1, out[1], err[1], cwd);
		if (pid < 0)
			e = (int)-pid;
	}
	free_strs(argv);
	free_strs(envp);
	free(cwd);
	/* The child's ends are the child's now (or nobody's). */
	int child_ends[] = {out[1], err[1], in[0]};
	for (int i = 0; i < 3; i++)
		if (child_ends[i] >= 0)
			close(child_ends[i]);
	if (e) {
		int ours[] = {out[0], err[0], in[1]};
		for (int i = 0; i < 3; i++)
			if (ours[i] >= 0)
				close(ours[i]);
		free(input);
		reply(id, e, -1, 0, NULL, NULL, 0);
		return;
	}
	struct job *j = xrealloc(NULL, sizeof *j);
	memset(j, 0, sizeof *j);
	j->id = id;
	j->pid = pid;
	j->out_fd = out[0];
	j->err_fd = err[0];
	j->in_fd = in[1];
	j->input = input;
	j->input_len = input_len;
	j->stdin_open = (flags & FLAG_INPUT) && (flags & FLAG_STDIN_STREAM);
	j->deadline = timeout_ms ? now_ms() + timeout_ms : 0;
	fcntl(j->out_fd, F_SETFL, O_NONBLOCK);
	fcntl(j->err_fd, F_SETFL, O_NONBLOCK);
	if (j->in_fd >= 0) {
		fcntl(j->in_fd, F_SETFL, O_NONBLOCK);
		if (input_len == 0 && !j->stdin_open) {
			close(j->in_fd);
			j->in_fd = -1;
		}
	}
	j->next = jobs;
	jobs = j;
}

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

/* Reads what a pipe has; closes it at EOF or error. */
static void drain(int *fd, struct buf *b)
{
	char chunk[65536];
	for (;;) {
		ssize_t n = read(*fd, chunk, sizeof chunk);
		if (n > 0) {
			buf_add(b, chunk, (size_t)n, MAX_OUTPUT);
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		close_fd(fd);
		return;
	}
}

/* Writes what the pipe takes of the job's queued stdin; closes it once all is written and no more can come. */
static void feed(struct job *j)
{
	while (j->input_off < j->input_len) {
		ssize_t w = write(j->in_fd, j->input + j->input_off, j->input_len - j->input_off);
		if (w > 0) {
			j->input_off += (size_t)w;
			continue;
		}
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && errno == EAGAIN)
			return;
		/* EPIPE: the program exited without reading it all, as Node ignores too */
		j->stdin_open = 0;
		break;
	}
	j->input_off = j->input_len = 0;
	if (j->stdin_open)
		return;
	close_fd(&j->in_fd);
	free(j->input);
	j->input = NULL;
}

static void kill_job(struct job *j)
{
	/* Its whole group: whatever it started would keep the pipes open. Once the leader is
	   reaped its PID may be reused: then only the group (which still holds that ID if it
	   has members). */
	if (kill(-j->pid, SIGKILL) < 0 && !j->exited)
		kill(j->pid, SIGKILL);
	j->killed = 1;
}

/* The job with this id that has not been answered yet, if any. */
static struct job *find_job(uint32_t id)
{
	for (struct job *j = jobs; j; j = j->next)
		if (j->id == id)
			return j;
	return NULL;
}

static void queue_stdin(struct job *j, const char *data, size_t n)
{
	if (j->in_fd < 0 || !j->stdin_open || n == 0)
		return; /* its stdin is closed (it exited, or was ended): nobody will read this */
	size_t queued = j->input_len - j->input_off;
	if (queued + n > MAX_STDIN_QUEUED) {
		/* It does not read its stdin: the daemon is not told to wait, so the queue would grow without bound. */
		j->stdin_overflow = 1;
		j->stdin_open = 0;
		close_fd(&j->in_fd);
		free(j->input);
		j->input = NULL;
		j->input_off = j->input_len = 0;
		kill_job(j);
		return;
	}
	if (j->input_off > 0) {
		memmove(j->input, j->input + j->input_off, queued);
		j->input_off = 0;
		j->input_len = queued;
	}
	j->input = xrealloc(j->input, queued + n);
	memcpy(j->input + queued, data, n);
	j->input_len = queued + n;
	feed(j); /* most often the pipe takes it at once: no poll round */
}

static void control(const char *frame, size_t len)
{
	struct cursor c = {frame, frame + len};
	(void)get_u32(&c); /* 0: a control frame */
	uint32_t op = get_u32(&c);
	struct job *j = find_job(get_u32(&c));
	if (op == OP_STDIN_DATA) {
		if (j)
			queue_stdin(j, c.p, (size_t)(c.end - c.p));
		return;
	}
	if (c.p != c.end)
		die("malformed request (trailing bytes in a control frame)");
	if (op == OP_STDIN_END) {
		if (j && j->stdin_open) {
			j->stdin_open = 0;
			if (j->in_fd >= 0 && j->input_off == j->input_len)
				feed(j); /* nothing queued: closes it now */
		}
	} else if (op == OP_KILL) {
		if (j)
			kill_job(j);
	} else {
		die("malformed request (unknown control operation)");
	}
}

static void reap(void)
{
	int status;
	pid_t pid;
	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		for (struct job *j = jobs; j; j = j->next) {
			if (j->pid == pid && !j->exited) {
				j->exited = 1;
				j->status = status;
				break;
			}
		}
	}
}

static void finish_jobs(void)
{
	for (struct job **pp = &jobs; *pp;) {
		struct job *j = *pp;
		if (!j->exited || j->out_fd >= 0 || j->err_fd >= 0) {
			pp = &j->next;
			continue;
		}
		close_fd(&j->in_fd);
		int code = WIFEXITED(j->status) ? WEXITSTATUS(j->status) : -1;
		int sig = WIFSIGNALED(j->status) ? WTERMSIG(j->status) : 0;
		reply(j->id, 0, code, sig, &j->out, &j->err, j->stdin_overflow);
		*pp = j->next;
		free(j->out.p);
		free(j->err.p);
		free(j->input);
		free(j);
	}
}

int main(void)
{
	pid_t parent = getppid();
	spawner_pid = getpid();
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
		return 0;
	/* fds 0-2 open, whatever the daemon's were: a pipe made later must not take one of them. */
	for (int fd = 0; fd <= 2; fd++)
		if (fcntl(fd, F_GETFD) < 0 && open("/dev/null", O_RDWR) != fd)
			die("cannot open /dev/null");
	signal(SIGPIPE, SIG_IGN);
	sigset_t chld;
	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	sigprocmask(SIG_BLOCK, &chld, NULL);
	int sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sfd < 0)
		die("signalfd failed");
	fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
	fcntl(0, F_SETFD, FD_CLOEXEC);
	fcntl(1, F_SETFD, FD_CLOEXEC);

	struct buf req = {0};
	struct pollfd *pfds = NULL;
	struct job **owner = NULL;
	size_t cap = 0;
	for (;;) {
		size_t n = 0, njobs = 0;
		for (struct job *j = jobs; j; j = j->next)
			njobs++;
		if (2 + 3 * njobs > cap) {
			cap = 2 + 3 * njobs * 2;
			pfds = xrealloc(pfds, cap * sizeof *pfds);
			owner = xrealloc(owner, cap * sizeof *owner);
		}
		pfds[n++] = (struct pollfd){.fd = 0, .events = POLLIN};
		pfds[n++] = (struct pollfd){.fd = sfd, .events = POLLIN};
		long long next_deadline = 0, now = now_ms();
		for (struct job *j = jobs; j; j = j->next) {
			if (j->deadline && !j->killed) {
				if (j->deadline <= now)
					kill_job(j);
				else if (!next_deadline || j->deadline < next_deadline) {
					next_deadline = j->deadline;
				}
			}
			if (j->out_fd >= 0)
				owner[n] = j, pfds[n++] = (struct pollfd){.fd = j->out_fd, .events = POLLIN};
			if (j->err_fd >= 0)
				owner[n] = j, pfds[n++] = (struct pollfd){.fd = j->err_fd, .events = POLLIN};
			if (j->in_fd >= 0 && j->input_off < j->input_len)
				owner[n] = j, pfds[n++] = (struct pollfd){.fd = j->in_fd, .events = POLLOUT};
		}
		int timeout = next_deadline ? (int)(next_deadline - now + 1) : -1;
		if (poll(pfds, n, timeout) < 0) {
			if (errno == EINTR)
				continue;
			die("poll failed");
		}
		if (pfds[1].revents) {
			struct signalfd_siginfo si;
			while (read(sfd, &si, sizeof si) == sizeof si)
				;
			reap();
		}
		for (size_t i = 2; i < n; i++) {
			if (!pfds[i].revents)
				continue;
			struct job *j = owner[i];
			if (pfds[i].fd == j->out_fd)
				drain(&j->out_fd, &j->out);
			else if (pfds[i].fd == j->err_fd)
				drain(&j->err_fd, &j->err);
			else if (pfds[i].fd == j->in_fd)
				feed(j);
		}
		/* A program that exited closes its stdin for good: nothing more will be read. */
		for (struct job *j = jobs; j; j = j->next)
			if (j->exited)
				close_fd(&j->in_fd);
		finish_jobs();
		if (pfds[0].revents) {
			char chunk[65536];
			ssize_t r;
			while ((r = read(0, chunk, sizeof chunk)) > 0)
				buf_add(&req, chunk, (size_t)r, SIZE_MAX);
			if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR))
				return 0; /* the daemon is gone */
			size_t off = 0;
			while (req.len - off >= 4) {
				uint32_t flen;
				memcpy(&flen, req.p + off, 4);
				if (flen > MAX_FRAME)
					die("request too large");
				if (req.len - off - 4 < flen)
					break;
				uint32_t first = 0;
				if (flen >= 4)
					memcpy(&first, req.p + off + 4, 4);
				if (first == 0)
					control(req.p + off + 4, flen);
				else
					start_job(req.p + off + 4, flen);
				off += 4 + (size_t)flen;
			}
			memmove(req.p, req.p + off, req.len - off);
			req.len -= off;
		}
	}
}
