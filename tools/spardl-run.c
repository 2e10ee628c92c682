/* SPDX-License-Identifier: MIT */
/* spardl-run: starts P local ranks of a program with the SPARDL_* environment and tags their output. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <spardl/version.h>

#define VERSION SPARDL_VERSION_STRING
#define MAX_RANKS 1024
/* A line longer than this is cut into pieces, each emitted as a line of its own. */
#define LINE_BUF (64 * 1024)
/* Output of one rank is batched up to this much per write; only whole lines go in a write. */
#define OUT_BUF (256 * 1024)
/* How long to wait for pipes to close after SIGKILL before giving up on them. */
#define FINAL_DRAIN_MS 2000

/* Launcher-internal failures (fork, pipe, ...) that are no rank's doing. */
#define EXIT_INTERNAL 1
#define EXIT_USAGE 2
#define EXIT_TIMEOUT 124

struct stream {
	int fd;			/* read end of the child's pipe; -1 once closed */
	int sink;		/* 1 or 2: where its lines go */
	int rank;		/* index into ranks, to find the prefix from a pollfd */
	size_t len;		/* bytes of the unfinished line in buf */
	char *buf;
};

struct rank {
	pid_t pid;		/* also the pgid: each rank leads its own group */
	bool reaped;
	int status;		/* wait status once reaped */
	char prefix[16];
	size_t plen;
	struct stream out;
	struct stream err;
};

enum phase {
	RUNNING,	/* no failure yet */
	TERMINATING,	/* SIGTERM sent (or all ranks gone); SIGKILL at kill_deadline */
	KILLED,		/* SIGKILL sent; give up on the pipes at final_deadline */
};

static struct rank *ranks;
static int nranks;
static bool prefix_on = true;
static double grace_s = 5.0;
static double timeout_s;	/* 0: no timeout */

static enum phase phase = RUNNING;
static int exit_code;		/* first cause of termination, or 0 */
static int64_t job_deadline = -1;
static int64_t kill_deadline = -1;
static int64_t final_deadline = -1;

static bool sink_broken[3];	/* stdout or stderr reader went away: drop, but keep draining */
static char outbuf[OUT_BUF];
static size_t outlen;

/* Signal handlers only set flags and poke the self-pipe, so the poll loop wakes up. */
static int wake_pipe[2] = { -1, -1 };
static volatile sig_atomic_t got_chld;
static volatile sig_atomic_t got_stop_sig;	/* SIGINT, SIGTERM or SIGHUP, last one seen */
static volatile sig_atomic_t stop_sig_count;
static int stop_sigs_handled;

static const struct {
	int sig;
	const char *name;
} signames[] = {
	{ SIGHUP, "SIGHUP" }, { SIGINT, "SIGINT" }, { SIGQUIT, "SIGQUIT" },
	{ SIGILL, "SIGILL" }, { SIGTRAP, "SIGTRAP" }, { SIGABRT, "SIGABRT" },
	{ SIGBUS, "SIGBUS" }, { SIGFPE, "SIGFPE" }, { SIGKILL, "SIGKILL" },
	{ SIGUSR1, "SIGUSR1" }, { SIGSEGV, "SIGSEGV" }, { SIGUSR2, "SIGUSR2" },
	{ SIGPIPE, "SIGPIPE" }, { SIGALRM, "SIGALRM" }, { SIGTERM, "SIGTERM" },
	{ SIGCHLD, "SIGCHLD" }, { SIGCONT, "SIGCONT" }, { SIGSTOP, "SIGSTOP" },
	{ SIGTSTP, "SIGTSTP" }, { SIGTTIN, "SIGTTIN" }, { SIGTTOU, "SIGTTOU" },
	{ SIGURG, "SIGURG" }, { SIGXCPU, "SIGXCPU" }, { SIGXFSZ, "SIGXFSZ" },
	{ SIGVTALRM, "SIGVTALRM" }, { SIGPROF, "SIGPROF" }, { SIGWINCH, "SIGWINCH" },
	{ SIGIO, "SIGIO" }, { SIGSYS, "SIGSYS" },
#ifdef SIGSTKFLT
	{ SIGSTKFLT, "SIGSTKFLT" },
#endif
#ifdef SIGPWR
	{ SIGPWR, "SIGPWR" },
#endif
};

static const char *signame(int sig, char *buf, size_t size)
{
	for (size_t i = 0; i < sizeof(signames) / sizeof(signames[0]); i++)
		if (signames[i].sig == sig)
			return signames[i].name;
	if (sig >= SIGRTMIN && sig <= SIGRTMAX)
		snprintf(buf, size, "SIGRTMIN+%d", sig - SIGRTMIN);
	else
		snprintf(buf, size, "signal %d", sig);
	return buf;
}

static int64_t now_ms(void)
{
	struct timespec ts;

	/* CLOCK_MONOTONIC cannot fail with a valid pointer; checked anyway. */
	if (clock_gettime(CLOCK_MONOTONIC, &ts) < 0) {
		perror("spardl-run: clock_gettime");
		exit(EXIT_INTERNAL);
	}
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t seconds_to_ms(double s)
{
	/* Rounded up by hand: ceil() would need -lm for this one call. */
	int64_t ms = (int64_t)(s * 1000.0);

	return (double)ms < s * 1000.0 ? ms + 1 : ms;
}

/*
 * Writes all of buf to fd. A reader that went away (EPIPE) marks the sink
 * broken: output is dropped from then on, but the children's pipes keep
 * being drained so they never block on a full pipe.
 */
static void write_all(int fd, const char *buf, size_t len)
{
	while (len && !sink_broken[fd]) {
		ssize_t n = write(fd, buf, len);

		if (n >= 0) {
			buf += n;
			len -= (size_t)n;
			continue;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK) {
			/* Someone handed us a non-blocking stdout; wait until it drains. */
			struct pollfd p = { .fd = fd, .events = POLLOUT };

			if (poll(&p, 1, -1) < 0 && errno != EINTR)
				sink_broken[fd] = true;
			continue;
		}
		sink_broken[fd] = true;
	}
}

/* The launcher's own messages: one write each, so they stay whole among rank output. */
static void __attribute__((format(printf, 1, 2))) msg(const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	int n;

	memcpy(buf, "spardl-run: ", 12);
	va_start(ap, fmt);
	n = vsnprintf(buf + 12, sizeof(buf) - 13, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	n += 12;
	if ((size_t)n > sizeof(buf) - 2)
		n = sizeof(buf) - 2;
	buf[n++] = '\n';
	write_all(STDERR_FILENO, buf, (size_t)n);
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: spardl-run -n P [options] [--] prog [args...]\n"
		"Starts P local ranks of prog with the SPARDL_* environment set and\n"
		"prefixes each line of their output with \"[rank] \".\n"
		"\n"
		"  -n, --np P          number of ranks, 1 to %d\n"
		"      --timeout S     kill the job if it runs longer than S seconds (exit 124)\n"
		"      --grace S       seconds between SIGTERM and SIGKILL (default 5)\n"
		"      --no-prefix     pass output through without the rank prefix\n"
		"      --env           list the environment variables set for the ranks\n"
		"  -h, --help          show this help\n"
		"      --version       show the version\n"
		"\n"
		"Exit status: 0 when every rank exits 0; else the first failing rank's\n"
		"status (128+N for signal N), 124 on timeout, 128+N when the launcher\n"
		"gets signal N, 2 for usage errors, 1 when the launcher itself fails.\n",
		MAX_RANKS);
}

static void __attribute__((noreturn, format(printf, 1, 2))) usage_error(const char *fmt, ...)
{
	va_list ap;

	fputs("spardl-run: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\n", stderr);
	usage(stderr);
	exit(EXIT_USAGE);
}

static void print_env(void)
{
	fputs("SPARDL_RANK        rank of the process, 0 to P-1\n"
	      "SPARDL_SIZE        number of ranks P\n"
	      "SPARDL_LOCAL_RANK  rank among the processes on this host (same as SPARDL_RANK)\n"
	      "SPARDL_LOCAL_SIZE  number of processes on this host (same as SPARDL_SIZE)\n"
	      "SPARDL_BOOTSTRAP   unix:spardl-run-<pid>-<random>, the abstract socket where rank 0 listens;\n"
	      "                   kept when already set\n"
	      "SPARDL_JOB_KEY     64 random hex digits, the secret that authenticates the rendezvous, unique per\n"
	      "                   launch; kept when SPARDL_JOB_KEY or SPARDL_JOB_KEY_FILE is already set\n",
	      stdout);
}

/* Seconds for --grace/--timeout: a finite non-negative decimal. */
static double parse_seconds(const char *opt, const char *s, bool allow_zero)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end || !isfinite(v) || v < 0 || v > 1e7 || (!allow_zero && v == 0))
		usage_error("%s needs a %s number of seconds, not '%s'", opt,
			    allow_zero ? "non-negative" : "positive", s);
	return v;
}

static int parse_np(const char *s)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < 1 || v > MAX_RANKS)
		usage_error("-n needs an integer from 1 to %d, not '%s'", MAX_RANKS, s);
	return (int)v;
}

static void on_signal(int sig)
{
	int saved = errno;
	char c = (char)sig;

	if (sig == SIGCHLD) {
		got_chld = 1;
	} else {
		got_stop_sig = sig;
		stop_sig_count++;
	}
	/* Full pipe: a wake-up is already pending, which is all the byte is for. */
	if (write(wake_pipe[1], &c, 1) < 0) {
		/* nothing to do in a handler */
	}
	errno = saved;
}

static const int handled_sigs[] = { SIGCHLD, SIGINT, SIGTERM, SIGHUP };

static void install_handlers(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
	if (sigfillset(&sa.sa_mask) < 0) {
		perror("spardl-run: sigfillset");
		exit(EXIT_INTERNAL);
	}
	for (size_t i = 0; i < sizeof(handled_sigs) / sizeof(handled_sigs[0]); i++) {
		if (sigaction(handled_sigs[i], &sa, NULL) < 0) {
			perror("spardl-run: sigaction");
			exit(EXIT_INTERNAL);
		}
	}
	/* A closed stdout must show up as EPIPE in write_all, not kill the launcher. */
	sa.sa_handler = SIG_IGN;
	sa.sa_flags = 0;
	if (sigaction(SIGPIPE, &sa, NULL) < 0) {
		perror("spardl-run: sigaction");
		exit(EXIT_INTERNAL);
	}
}

/* Pipes that fork/exec would otherwise place on fd 0-2 confuse the dup2 in the child. */
static void ensure_std_fds(void)
{
	for (int fd = 0; fd < 3; fd++) {
		if (fcntl(fd, F_GETFD) >= 0 || errno != EBADF)
			continue;
		int nfd = open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY);

		if (nfd < 0)
			exit(EXIT_INTERNAL);
		if (nfd != fd) {
			/* Lower fds are open, so open() returns fd itself; anything else is odd. */
			exit(EXIT_INTERNAL);
		}
	}
}

/* 1024 ranks need 2048 pipe ends, more than the usual soft limit of 1024. */
static struct rlimit saved_nofile;
static bool nofile_raised;

static void raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &saved_nofile) < 0) {
		perror("spardl-run: getrlimit");
		return;
	}
	rl = saved_nofile;
	if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= (rlim_t)(2 * nranks + 64))
		return;
	rl.rlim_cur = rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
		/* Not fatal: pipe creation reports EMFILE if the limit really is too low. */
		perror("spardl-run: setrlimit");
		return;
	}
	nofile_raised = true;
}

/* n random bytes from the kernel, as hex. */
static void random_hex(char *buf, size_t n)
{
	unsigned char rnd[32];
	size_t got = 0, i;

	if (n > sizeof(rnd))
		n = sizeof(rnd);
	while (got < n) {
		ssize_t r = getrandom(rnd + got, n - got, 0);

		if (r < 0) {
			if (errno == EINTR)
				continue;
			perror("spardl-run: getrandom");
			exit(EXIT_INTERNAL);
		}
		got += (size_t)r;
	}
	for (i = 0; i < n; i++)
		snprintf(buf + 2 * i, 3, "%02x", rnd[i]);
}

/* The variables common to all ranks go into our own environment once; fork
 * copies them. The job key is a fresh 256-bit secret that authenticates the
 * rendezvous; the socket's name is random too but unrelated to it, since
 * /proc/net/unix shows every abstract socket name to every user. */
static void setup_env(void)
{
	char key[65], name[33], addr[128], num[16];
	const char *user_key = getenv("SPARDL_JOB_KEY");
	const char *user_file = getenv("SPARDL_JOB_KEY_FILE");
	const char *user_addr = getenv("SPARDL_BOOTSTRAP");

	random_hex(key, 32);
	random_hex(name, 16);
	snprintf(addr, sizeof(addr), "unix:spardl-run-%ld-%s", (long)getpid(), name);
	snprintf(num, sizeof(num), "%d", nranks);
	/* Empty counts as unset, as in the library; a key file of the user's wins. */
	if ((!user_key || !*user_key) && (!user_file || !*user_file) && setenv("SPARDL_JOB_KEY", key, 1) < 0)
		goto fail;
	explicit_bzero(key, sizeof(key));
	if ((!user_addr || !*user_addr) && setenv("SPARDL_BOOTSTRAP", addr, 1) < 0)
		goto fail;
	if (setenv("SPARDL_SIZE", num, 1) < 0 || setenv("SPARDL_LOCAL_SIZE", num, 1) < 0)
		goto fail;
	return;
fail:
	perror("spardl-run: setenv");
	exit(EXIT_INTERNAL);
}

/* Appends one prefixed piece to outbuf, writing outbuf out first if it would not fit. */
static void out_append(struct rank *r, int sink, const char *data, size_t len, bool add_nl)
{
	size_t need = (prefix_on ? r->plen : 0) + len + (add_nl ? 1 : 0);

	if (outlen + need > sizeof(outbuf)) {
		write_all(sink, outbuf, outlen);
		outlen = 0;
	}
	if (prefix_on) {
		memcpy(outbuf + outlen, r->prefix, r->plen);
		outlen += r->plen;
	}
	memcpy(outbuf + outlen, data, len);
	outlen += len;
	if (add_nl)
		outbuf[outlen++] = '\n';
}

/*
 * Emits every whole line in s->buf and keeps the unfinished tail. With
 * final (pipe closed) the tail goes out too; a full buffer without a
 * newline goes out as a piece. Such pieces get a newline only when
 * prefixing, so the next prefix starts a line; without prefixes the bytes
 * pass through unchanged.
 */
static void stream_emit(struct rank *r, struct stream *s, bool final)
{
	size_t start = 0;

	while (start < s->len) {
		char *nl = memchr(s->buf + start, '\n', s->len - start);

		if (!nl)
			break;
		size_t end = (size_t)(nl - s->buf) + 1;

		out_append(r, s->sink, s->buf + start, end - start, false);
		start = end;
	}
	if (start < s->len && (final || (start == 0 && s->len == LINE_BUF))) {
		out_append(r, s->sink, s->buf + start, s->len - start, prefix_on);
		start = s->len;
	}
	if (outlen) {
		write_all(s->sink, outbuf, outlen);
		outlen = 0;
	}
	if (start) {
		memmove(s->buf, s->buf + start, s->len - start);
		s->len -= start;
	}
}

static void stream_close(struct rank *r, struct stream *s)
{
	if (s->fd < 0)
		return;
	stream_emit(r, s, true);
	if (close(s->fd) < 0)
		msg("close: %s", strerror(errno));
	s->fd = -1;
	s->len = 0;
}

/*
 * One read from a ready pipe, so no rank starves the others; with drain,
 * reads on until the pipe is empty (bounded, in case a leftover child
 * keeps writing).
 */
static void stream_read(struct rank *r, struct stream *s, bool drain)
{
	for (int tries = 0; s->fd >= 0 && tries < 64; tries++) {
		ssize_t n = read(s->fd, s->buf + s->len, LINE_BUF - s->len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return;
			msg("read from rank %td: %s", r - ranks, strerror(errno));
			stream_close(r, s);
			return;
		}
		if (n == 0) {
			stream_close(r, s);
			return;
		}
		s->len += (size_t)n;
		stream_emit(r, s, false);
		if (!drain)
			return;
	}
}

static bool rank_has_pipes(const struct rank *r)
{
	return r->out.fd >= 0 || r->err.fd >= 0;
}

/* Signals a rank's whole process group, so its own children (a shell's sleep) go too. */
static void signal_rank(struct rank *r, int sig)
{
	if (r->pid <= 0)
		return;
	if (r->reaped && !rank_has_pipes(r))
		return;	/* nothing of it left that we know of; the pgid may be reused */
	/* spawn() made the group before any signal can be sent; ESRCH: it is empty. */
	if (kill(-r->pid, sig) < 0 && errno != ESRCH)
		msg("kill rank %td: %s", r - ranks, strerror(errno));
}

static void signal_all(int sig)
{
	for (int i = 0; i < nranks; i++)
		signal_rank(&ranks[i], sig);
}

/* Starts the TERM-then-KILL sequence; code is the exit status unless one is set. */
static void begin_termination(int code)
{
	if (phase != RUNNING)
		return;
	if (!exit_code)
		exit_code = code;
	phase = TERMINATING;
	if (grace_s <= 0) {
		signal_all(SIGKILL);
		phase = KILLED;
		final_deadline = now_ms() + FINAL_DRAIN_MS;
		return;
	}
	signal_all(SIGTERM);
	kill_deadline = now_ms() + seconds_to_ms(grace_s);
}

static void escalate_kill(void)
{
	signal_all(SIGKILL);
	phase = KILLED;
	final_deadline = now_ms() + FINAL_DRAIN_MS;
}

static int reaped_count(void)
{
	int n = 0;

	for (int i = 0; i < nranks; i++)
		n += ranks[i].reaped;
	return n;
}

static void report_failure(int i, int status)
{
	char buf[32];

	if (WIFSIGNALED(status))
		msg("rank %d was killed by signal %d (%s)", i, WTERMSIG(status),
		    signame(WTERMSIG(status), buf, sizeof(buf)));
	else
		msg("rank %d exited with status %d", i, WEXITSTATUS(status));
}

static void reap_children(void)
{
	for (;;) {
		int status;
		pid_t pid = waitpid(-1, &status, WNOHANG);

		if (pid < 0) {
			if (errno == EINTR)
				continue;
			if (errno != ECHILD)
				msg("waitpid: %s", strerror(errno));
			return;
		}
		if (pid == 0)
			return;
		for (int i = 0; i < nranks; i++) {
			struct rank *r = &ranks[i];

			if (r->pid != pid || r->reaped)
				continue;
			r->reaped = true;
			r->status = status;
			bool failed = !WIFEXITED(status) || WEXITSTATUS(status) != 0;

			if (failed && phase == RUNNING) {
				/* Its last words first, then our verdict. */
				stream_read(r, &r->out, true);
				stream_read(r, &r->err, true);
				report_failure(i, status);
				begin_termination(WIFSIGNALED(status) ? 128 + WTERMSIG(status)
								      : WEXITSTATUS(status));
			}
			break;
		}
	}
}

static void handle_stop_signals(void)
{
	int count = stop_sig_count;
	int sig = got_stop_sig;
	char buf[32];

	if (count == stop_sigs_handled)
		return;
	stop_sigs_handled = count;
	if (phase == RUNNING) {
		msg("got %s, terminating the ranks", signame(sig, buf, sizeof(buf)));
		/* Children forced down by the launcher do not count as failures. */
		begin_termination(128 + sig);
	} else if (phase == TERMINATING) {
		/* A second interrupt means "now": skip the rest of the grace period. */
		msg("got %s, killing the ranks now", signame(sig, buf, sizeof(buf)));
		escalate_kill();
	}
}

static void drain_wake_pipe(void)
{
	char buf[64];

	for (;;) {
		ssize_t n = read(wake_pipe[0], buf, sizeof(buf));

		if (n > 0)
			continue;
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
			msg("read self-pipe: %s", strerror(errno));
		return;
	}
}

/* Runs in the child between fork and exec; only _exit on the way out. */
static void __attribute__((noreturn)) child(int i, char **argv, pid_t launcher, int out_w, int err_w,
					    int devnull, bool keep_stdin)
{
	char num[16];
	struct sigaction sa;
	sigset_t all;

	/* Own group: a terminal's ^C reaches only the launcher, which forwards it deliberately. */
	if (setpgid(0, 0) < 0)
		goto fail_errno;
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0)
		goto fail_errno;
	/* The launcher may have died before prctl took effect. */
	if (getppid() != launcher)
		_exit(EXIT_INTERNAL);

	/* Handlers and ignores must not leak into the program; the mask was all-blocked for fork. */
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_DFL;
	for (size_t k = 0; k < sizeof(handled_sigs) / sizeof(handled_sigs[0]); k++)
		if (sigaction(handled_sigs[k], &sa, NULL) < 0)
			goto fail_errno;
	if (sigaction(SIGPIPE, &sa, NULL) < 0)
		goto fail_errno;
	if (sigemptyset(&all) < 0 || sigprocmask(SIG_SETMASK, &all, NULL) < 0)
		goto fail_errno;
	if (nofile_raised && setrlimit(RLIMIT_NOFILE, &saved_nofile) < 0)
		goto fail_errno;

	/* Every other pipe end is O_CLOEXEC; dup2 clears the flag on the copies. */
	if (dup2(out_w, STDOUT_FILENO) < 0 || dup2(err_w, STDERR_FILENO) < 0)
		goto fail_errno;
	if (!keep_stdin && dup2(devnull, STDIN_FILENO) < 0)
		goto fail_errno;

	snprintf(num, sizeof(num), "%d", i);
	if (setenv("SPARDL_RANK", num, 1) < 0 || setenv("SPARDL_LOCAL_RANK", num, 1) < 0)
		goto fail_errno;

	execvp(argv[0], argv);
	dprintf(STDERR_FILENO, "spardl-run: cannot run %s: %s\n", argv[0], strerror(errno));
	_exit(127);

fail_errno:
	dprintf(STDERR_FILENO, "spardl-run: cannot set up rank %d: %s\n", i, strerror(errno));
	_exit(127);
}

static int make_pipe(int fds[2])
{
	if (pipe2(fds, O_CLOEXEC) < 0)
		return -1;
	/* Only our end is non-blocking; the child writes to a normal blocking pipe. */
	int fl = fcntl(fds[0], F_GETFL);

	if (fl < 0 || fcntl(fds[0], F_SETFL, fl | O_NONBLOCK) < 0) {
		int e = errno;

		close(fds[0]);
		close(fds[1]);
		errno = e;
		return -1;
	}
	return 0;
}

/* Forks rank i. Returns 0, or -1 after reporting why. */
static int spawn(int i, char **argv, int devnull, bool keep_stdin0)
{
	struct rank *r = &ranks[i];
	int out[2], err[2];
	sigset_t all, old;
	pid_t launcher = getpid();
	pid_t pid;

	if (make_pipe(out) < 0) {
		msg("pipe for rank %d: %s", i, strerror(errno));
		return -1;
	}
	if (make_pipe(err) < 0) {
		msg("pipe for rank %d: %s", i, strerror(errno));
		close(out[0]);
		close(out[1]);
		return -1;
	}
	/* No handler may run in the child before it resets them: it would poke our self-pipe. */
	if (sigfillset(&all) < 0 || sigprocmask(SIG_SETMASK, &all, &old) < 0) {
		msg("sigprocmask: %s", strerror(errno));
		goto fail;
	}
	pid = fork();
	if (pid == 0)
		child(i, argv, launcher, out[1], err[1], devnull, i == 0 && keep_stdin0);
	int fork_errno = errno;

	if (sigprocmask(SIG_SETMASK, &old, NULL) < 0)
		msg("sigprocmask: %s", strerror(errno));
	if (pid < 0) {
		msg("fork: %s", strerror(fork_errno));
		goto fail;
	}
	r->pid = pid;
	/* Also here, so the group exists before we might signal it; losing the race is fine. */
	if (setpgid(pid, pid) < 0 && errno != EACCES && errno != ESRCH)
		msg("setpgid rank %d: %s", i, strerror(errno));
	if (close(out[1]) < 0 || close(err[1]) < 0)
		msg("close: %s", strerror(errno));
	r->out.fd = out[0];
	r->err.fd = err[0];
	return 0;
fail:
	close(out[0]);
	close(out[1]);
	close(err[0]);
	close(err[1]);
	return -1;
}

static void init_ranks(void)
{
	ranks = calloc((size_t)nranks, sizeof(*ranks));
	if (!ranks) {
		msg("out of memory");
		exit(EXIT_INTERNAL);
	}
	for (int i = 0; i < nranks; i++) {
		struct rank *r = &ranks[i];

		r->out.fd = r->err.fd = -1;
		r->out.sink = STDOUT_FILENO;
		r->err.sink = STDERR_FILENO;
		r->out.rank = r->err.rank = i;
		/* malloc, not calloc: pages are only touched as output arrives. */
		r->out.buf = malloc(LINE_BUF);
		r->err.buf = malloc(LINE_BUF);
		if (!r->out.buf || !r->err.buf) {
			msg("out of memory");
			exit(EXIT_INTERNAL);
		}
		r->plen = (size_t)snprintf(r->prefix, sizeof(r->prefix), "[%d] ", i);
	}
}

/* Deadline handling: timeout, end of grace, end of the final drain. */
static void check_deadlines(int64_t now)
{
	if (phase == RUNNING && job_deadline >= 0 && now >= job_deadline) {
		msg("timeout after %g s", timeout_s);
		begin_termination(EXIT_TIMEOUT);
	}
	if (phase == TERMINATING && kill_deadline >= 0 && now >= kill_deadline)
		escalate_kill();
	if (phase == KILLED && final_deadline >= 0 && now >= final_deadline) {
		/* Something escaped its group and holds a pipe: stop waiting for it. */
		for (int i = 0; i < nranks; i++) {
			stream_close(&ranks[i], &ranks[i].out);
			stream_close(&ranks[i], &ranks[i].err);
		}
	}
}

static int poll_timeout(int64_t now)
{
	int64_t next = -1;

	if (phase == RUNNING && job_deadline >= 0)
		next = job_deadline;
	else if (phase == TERMINATING)
		next = kill_deadline;
	else if (phase == KILLED)
		next = final_deadline;
	if (next < 0)
		return -1;
	if (next <= now)
		return 0;
	return next - now > INT_MAX ? INT_MAX : (int)(next - now);
}

static int run(void)
{
	struct pollfd *pfds = calloc((size_t)(2 * nranks + 1), sizeof(*pfds));
	struct stream **owner = calloc((size_t)(2 * nranks + 1), sizeof(*owner));

	if (!pfds || !owner) {
		msg("out of memory");
		begin_termination(EXIT_INTERNAL);
		escalate_kill();
		return EXIT_INTERNAL;
	}
	for (;;) {
		int64_t now = now_ms();
		int nfds = 1;

		if (got_chld) {
			got_chld = 0;
			reap_children();
		}
		handle_stop_signals();
		check_deadlines(now);

		/* Ranks all gone but a pipe held open by a leftover child: give it the grace period. */
		if (phase == RUNNING && reaped_count() == nranks) {
			phase = TERMINATING;
			kill_deadline = now + seconds_to_ms(grace_s);
		}

		pfds[0].fd = wake_pipe[0];
		pfds[0].events = POLLIN;
		for (int i = 0; i < nranks; i++) {
			struct stream *ss[2] = { &ranks[i].out, &ranks[i].err };

			for (int k = 0; k < 2; k++) {
				if (ss[k]->fd < 0)
					continue;
				pfds[nfds].fd = ss[k]->fd;
				pfds[nfds].events = POLLIN;
				owner[nfds] = ss[k];
				nfds++;
			}
		}
		if (nfds == 1 && reaped_count() == nranks)
			break;
		if (nfds == 1 && phase == KILLED && now >= final_deadline) {
			/* Unkillable (e.g. stuck in the kernel): PDEATHSIG gets them when we go. */
			msg("some ranks did not exit after SIGKILL");
			break;
		}

		int n = poll(pfds, (nfds_t)nfds, poll_timeout(now));

		if (n < 0) {
			if (errno == EINTR)
				continue;
			msg("poll: %s", strerror(errno));
			begin_termination(EXIT_INTERNAL);
			escalate_kill();
			return exit_code;
		}
		if (pfds[0].revents)
			drain_wake_pipe();
		for (int k = 1; k < nfds; k++) {
			if (!pfds[k].revents)
				continue;
			stream_read(&ranks[owner[k]->rank], owner[k], false);
		}
	}
	free(pfds);
	free(owner);
	return exit_code;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "np", required_argument, NULL, 'n' },
		{ "timeout", required_argument, NULL, 't' },
		{ "grace", required_argument, NULL, 'g' },
		{ "no-prefix", no_argument, NULL, 'P' },
		{ "env", no_argument, NULL, 'e' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	bool keep_stdin0;
	int devnull;
	int c;

	ensure_std_fds();
	opterr = 0;	/* our own messages, followed by the usage */
	/* '+': stop at the program name, its options are its own. */
	while ((c = getopt_long(argc, argv, "+:n:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'n':
			nranks = parse_np(optarg);
			break;
		case 't':
			timeout_s = parse_seconds("--timeout", optarg, false);
			break;
		case 'g':
			grace_s = parse_seconds("--grace", optarg, true);
			break;
		case 'P':
			prefix_on = false;
			break;
		case 'e':
			print_env();
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			puts("spardl-run " VERSION);
			return 0;
		case ':':
			usage_error("option '%s' needs an argument", argv[optind - 1]);
		default:
			/* Long options are named whole; a short one may sit in a cluster like -xn4. */
			if (!strncmp(argv[optind - 1], "--", 2) || !optopt)
				usage_error("unknown option '%s'", argv[optind - 1]);
			usage_error("unknown option '-%c'", optopt);
		}
	}
	if (!nranks)
		usage_error("missing -n P, the number of ranks");
	if (optind >= argc)
		usage_error("missing the program to run");

	/* Self-pipe first: the handlers write to it. */
	if (pipe2(wake_pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
		perror("spardl-run: pipe");
		return EXIT_INTERNAL;
	}
	install_handlers();
	raise_nofile();
	setup_env();
	init_ranks();

	/* Shared by all ranks as stdin; children in their own group cannot read a terminal. */
	devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (devnull < 0) {
		perror("spardl-run: /dev/null");
		return EXIT_INTERNAL;
	}
	/* Rank 0 gets a piped or redirected stdin; a terminal would stop it with SIGTTIN. */
	keep_stdin0 = !isatty(STDIN_FILENO);

	if (timeout_s > 0)
		job_deadline = now_ms() + seconds_to_ms(timeout_s);
	for (int i = 0; i < nranks; i++) {
		int rc = spawn(i, argv + optind, devnull, keep_stdin0);

		if (rc < 0)
			begin_termination(EXIT_INTERNAL);
		/* A ^C during a large launch: stop forking and wind down. */
		if (rc < 0 || stop_sig_count) {
			/* Never started counts as gone, so the loop in run() can end. */
			for (int k = rc < 0 ? i : i + 1; k < nranks; k++)
				ranks[k].reaped = true;
			break;
		}
	}
	if (close(devnull) < 0)
		msg("close /dev/null: %s", strerror(errno));

	int code = run();

	/* Whatever is left of the ranks dies with the launcher. */
	signal_all(SIGKILL);
	return code;
}
