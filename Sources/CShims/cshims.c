#include "cshims.h"
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/wait.h>
#include <unistd.h>

#if !defined(__GLIBC__)
#include <sys/syscall.h>
#include <dirent.h>
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif
/* Without glibc's closefrom: close_range(2), or a walk over /proc/self/fd on
   kernels older than 5.9 / 5.11. */
static void qs_fd_walk(int lowfd, int cloexec)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int self;
    if (!d) return;
    self = dirfd(d);
    while ((e = readdir(d))) {
        int fd = atoi(e->d_name);
        if (fd < lowfd || fd == self || e->d_name[0] == '.') continue;
        if (cloexec) fcntl(fd, F_SETFD, FD_CLOEXEC); else close(fd);
    }
    closedir(d);
}
/* Embedded Swift's hashing seeds itself with arc4random_buf, which musl 1.2.3
   does not have: getrandom(2), retried; aborts rather than hand out a weak seed. */
void arc4random_buf(void *buf, size_t n)
{
    unsigned char *p = buf;
    while (n > 0) {
        ssize_t r = getrandom(p, n, 0);
        if (r < 0) { if (errno == EINTR) continue; abort(); }
        p += r; n -= (size_t)r;
    }
}

static void qs_cloexec_from(int lowfd)
{
    if (syscall(SYS_close_range, (unsigned)lowfd, ~0U, CLOSE_RANGE_CLOEXEC) == 0) return;
    qs_fd_walk(lowfd, 1);
}
static void qs_close_from(int lowfd)
{
    if (syscall(SYS_close_range, (unsigned)lowfd, ~0U, 0) == 0) return;
    qs_fd_walk(lowfd, 0);
}
#endif

int qs_spawn(pid_t *pid, const char *path, char *const argv[], char *const envp[],
             const qs_fdmap *maps, int nmaps, int keep_std, const char *cwd)
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    sigset_t none, all;
    int rc, i, maxtarget = 2;
    int moved[16];

    if (nmaps > 16) return EINVAL;
    for (i = 0; i < nmaps; ++i) if (maps[i].target > maxtarget) maxtarget = maps[i].target;
    /* Move every source above every target so a dup2 can neither be a no-op
       (which would keep FD_CLOEXEC) nor clobber a later source. */
    for (i = 0; i < nmaps; ++i) {
        moved[i] = fcntl(maps[i].source, F_DUPFD_CLOEXEC, maxtarget + 1);
        if (moved[i] == -1) { rc = errno; while (i-- > 0) close(moved[i]); return rc; }
    }
    posix_spawn_file_actions_init(&fa);
    for (i = 0; i < nmaps; ++i) posix_spawn_file_actions_adddup2(&fa, moved[i], maps[i].target);
    if (!keep_std) {
        for (i = 0; i <= 2; ++i) {
            int j, mapped = 0;
            for (j = 0; j < nmaps; ++j) if (maps[j].target == i) mapped = 1;
            if (!mapped) posix_spawn_file_actions_addclose(&fa, i);
        }
    }
    /* Close everything above 2 that is not a target. */
    for (i = 3; i <= maxtarget; ++i) {
        int j, mapped = 0;
        for (j = 0; j < nmaps; ++j) if (maps[j].target == i) mapped = 1;
        if (!mapped) posix_spawn_file_actions_addclose(&fa, i);
    }
#if defined(__GLIBC__)
    posix_spawn_file_actions_addclosefrom_np(&fa, maxtarget + 1);
#else
    /* musl (the per-message programs' static build, scripts/musl-link) has no
       closefrom action: mark everything above the targets close-on-exec in the
       parent instead (those programs are single-threaded and only exec here). */
    qs_cloexec_from(maxtarget + 1);
#endif
    if (cwd) posix_spawn_file_actions_addchdir_np(&fa, cwd);

    posix_spawnattr_init(&attr);
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

    rc = posix_spawn(pid, path, &fa, &attr, argv, envp);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    for (i = 0; i < nmaps; ++i) close(moved[i]);
    return rc;
}

int qs_wifexited(int status) { return WIFEXITED(status); }
int qs_wexitstatus(int status) { return WEXITSTATUS(status); }
int qs_wifsignaled(int status) { return WIFSIGNALED(status); }
int qs_wtermsig(int status) { return WTERMSIG(status); }

/* An alarm that ends the process with `code`, first writing a text (at most 255
   bytes, kept here; none for qs_death_alarm) on descriptor 2: write(2) is
   async-signal-safe. */
static volatile int death_code = 52;
static char death_text[256];
static volatile size_t death_text_len = 0;
static void on_alarm(int sig)
{
    (void)sig;
    if (death_text_len) { ssize_t w = write(2, death_text, death_text_len); (void)w; }
    _exit(death_code);
}
void qs_death_alarm_saying(unsigned seconds, int code, const char *text)
{
    struct sigaction sa;
    size_t n = text ? strlen(text) : 0;
    if (n > sizeof death_text) n = sizeof death_text;
    if (n) memcpy(death_text, text, n);
    death_text_len = n;
    death_code = code;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGALRM, &sa, 0);
    alarm(seconds);
}
void qs_death_alarm(unsigned seconds, int code) { qs_death_alarm_saying(seconds, code, 0); }

static volatile int crash_code = 81;
static void on_crash(int sig) { (void)sig; _exit(crash_code); }
void qs_crash_exit(int code)
{
    struct sigaction sa;
    crash_code = code;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_crash;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, 0);
    sigaction(SIGBUS, &sa, 0);
    sigaction(SIGILL, &sa, 0);
    sigaction(SIGFPE, &sa, 0);
}

void qs_ignore_sigpipe(void) { signal(SIGPIPE, SIG_IGN); }

int64_t qs_stat_mtime_ns(const struct stat *st) { return (int64_t)st->st_mtim.tv_sec * 1000000000LL + st->st_mtim.tv_nsec; }
int64_t qs_stat_atime_ns(const struct stat *st) { return (int64_t)st->st_atim.tv_sec * 1000000000LL + st->st_atim.tv_nsec; }

int qs_errno(void) { return errno; }
void qs_set_errno(int e) { errno = e; }

ssize_t qs_self_exe(char *buf, size_t len)
{
    ssize_t n = readlink("/proc/self/exe", buf, len - 1);
    if (n < 0) return -1;
    buf[n] = 0;
    return n;
}

int qs_pipe_cloexec(int *r, int *w)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) == -1) return -1;
    *r = fds[0]; *w = fds[1];
    return 0;
}

#include <sys/syscall.h>
#include <linux/capability.h>
#include <sys/fsuid.h>
#include <sys/file.h>
#include <grp.h>

int qs_thread_capability(int cap, int on)
{
    struct __user_cap_header_struct h;
    struct __user_cap_data_struct d[2];
    unsigned bit = 1u << (cap % 32);
    int i = cap / 32;
    if (cap < 0 || cap >= 64) return -1;
    h.version = _LINUX_CAPABILITY_VERSION_3;
    h.pid = 0;
    if (syscall(SYS_capget, &h, d) == -1) return -1;
    if (on) {
        if (!(d[i].permitted & bit)) return 0;      /* nothing to raise */
        if (d[i].effective & bit) return 0;
        d[i].effective |= bit;
    } else {
        if (!(d[i].effective & bit)) return 0;
        d[i].effective &= ~bit;
    }
    return syscall(SYS_capset, &h, d) == -1 ? -1 : 0;
}

int qs_thread_identity(uid_t uid, gid_t gid)
{
    gid_t groups[1];
    groups[0] = gid;
    /* A file-system uid change drops the file capabilities, not CAP_SYS_RESOURCE:
       with it a delivery would pass the user's disk quota and the reserved blocks. */
    qs_thread_capability(CAP_SYS_RESOURCE, uid == 0);
    if (syscall(SYS_setgroups, 1, groups) == -1 && errno != EPERM) return -1;
    syscall(SYS_setfsgid, gid);
    syscall(SYS_setfsuid, uid);
    /* setfsuid returns the previous value; calling again reports the current one. */
    if ((uid_t)syscall(SYS_setfsuid, -1) != uid) return -1;
    if ((gid_t)syscall(SYS_setfsgid, -1) != gid) return -1;
    return 0;
}

/* In a child that failed before exec: say which step and why on descriptor 2
   (async-signal-safe: write only), then exit with `code`. */
static void spawn_child_fail(const char *step, const char *path, int code)
{
    int e = errno;
    const char *why = strerror(e);
    (void)!write(2, "spawn ", 6);
    (void)!write(2, path, strlen(path));
    (void)!write(2, ": ", 2);
    (void)!write(2, step, strlen(step));
    (void)!write(2, ": ", 2);
    (void)!write(2, why, strlen(why));
    (void)!write(2, "\n", 1);
    _exit(code);
}

int qs_spawn_as(pid_t *pidp, const char *path, char *const argv[], char *const envp[],
                const qs_fdmap *maps, int nmaps, const char *cwd, uid_t uid, gid_t gid)
{
    int i, maxtarget = 2, moved[16];
    pid_t pid;
    if (nmaps > 16) return EINVAL;
    for (i = 0; i < nmaps; ++i) if (maps[i].target > maxtarget) maxtarget = maps[i].target;
    for (i = 0; i < nmaps; ++i) {
        moved[i] = fcntl(maps[i].source, F_DUPFD_CLOEXEC, maxtarget + 1);
        if (moved[i] == -1) { int e = errno; while (i-- > 0) close(moved[i]); return e; }
    }
    pid = fork();
    if (pid == -1) { int e = errno; for (i = 0; i < nmaps; ++i) close(moved[i]); return e; }
    if (pid == 0) {
        sigset_t none;
        int s;
        for (s = 1; s < 32; ++s) signal(s, SIG_DFL);
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, 0);
        for (i = 0; i < nmaps; ++i) if (dup2(moved[i], maps[i].target) == -1) spawn_child_fail("dup2", path, 126);
        for (i = 3; i <= maxtarget; ++i) {
            int j, mapped = 0;
            for (j = 0; j < nmaps; ++j) if (maps[j].target == i) mapped = 1;
            if (!mapped) close(i);
        }
#if defined(__GLIBC__)
        closefrom(maxtarget + 1);
#else
        qs_close_from(maxtarget + 1);
#endif
        if (uid != (uid_t)-1) {
            gid_t groups[1];
            groups[0] = gid;
            if (setgroups(1, groups) == -1 && getuid() == 0) spawn_child_fail("setgroups", path, 127);
            if (setgid(gid) == -1) spawn_child_fail("setgid", path, 127);
            if (setuid(uid) == -1) spawn_child_fail("setuid", path, 127);
            if (getuid() != uid || geteuid() != uid) { errno = EPERM; spawn_child_fail("setuid", path, 127); }
        }
        if (cwd && chdir(cwd) == -1) spawn_child_fail(cwd, path, 122);
        execve(path, argv, envp);
        spawn_child_fail("execve", path, errno == ENOENT || errno == EACCES ? 126 : 127);
    }
    for (i = 0; i < nmaps; ++i) close(moved[i]);
    *pidp = pid;
    return 0;
}

static int signal_pipe_fd = -1;
static void on_signal(int sig)
{
    unsigned char b = (unsigned char)sig;
    int saved = errno;
    if (signal_pipe_fd >= 0) (void)!write(signal_pipe_fd, &b, 1);
    errno = saved;
}

void qs_signals_to_pipe(int fd, const int *signals, int n)
{
    struct sigaction sa;
    int i;
    signal_pipe_fd = fd;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    for (i = 0; i < n; ++i) sigaction(signals[i], &sa, 0);
}

int qs_flock_exclusive_nb(int fd) { return flock(fd, LOCK_EX | LOCK_NB); }
int qs_flock(int fd, int op) { return flock(fd, op); }

/* glibc passes (argc, argv, envp) to constructors: kept for programs without
   Swift's CommandLine (the Embedded Swift build of qmail-queue). */
static int saved_argc;
static char **saved_argv;
#if defined(__GLIBC__)
/* glibc hands constructors (argc, argv, envp); musl does not, so the musl link
   (scripts/musl-link) starts the program through scripts/musl/main.c, which
   calls qs_set_arguments first. */
static void __attribute__((constructor)) qs_save_arguments(int argc, char **argv, char **envp) {
    (void)envp;
    saved_argc = argc;
    saved_argv = argv;
}
#endif
void qs_set_arguments(int argc, char **argv) {
    saved_argc = argc;
    saved_argv = argv;
}
int qs_argc(void) { return saved_argc; }
char **qs_argv(void) { return saved_argv; }
char **qs_environ(void) { return environ; }

uint32_t qs_random_below(uint32_t bound)
{
    uint32_t r;
    if (getrandom(&r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r)
        r = (uint32_t)time(0) * 2654435761u ^ (uint32_t)getpid();
    return bound ? r % bound : 0;
}

int qs_syncfs(int fd)
{
    return syncfs(fd);
}

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE 1
#endif
int qs_rename_noreplace(const char *from, const char *to)
{
    return (int)syscall(SYS_renameat2, AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE);
}

char *qs_strptime(const char *s, const char *format, struct tm *tm)
{
    return strptime(s, format, tm);
}
