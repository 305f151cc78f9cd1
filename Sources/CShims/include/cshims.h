#ifndef SWIFTQMAIL_CSHIMS_H
#define SWIFTQMAIL_CSHIMS_H
#include <sys/types.h>
#include <sys/stat.h>
#include <stdint.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <stdio.h>
#include <dirent.h>
#include <sys/wait.h>

/* open(2) with a mode, for Swift code that cannot call the variadic open
   (the Embedded Swift build of qmail-queue). */
static inline int qs_open(const char *path, int flags, mode_t mode) { return open(path, flags, mode); }

/* One fd mapping for qs_spawn: `source` becomes `target` in the child. */
typedef struct qs_fdmap { int source; int target; } qs_fdmap;

/* posix_spawn `path` with argv/envp; the child gets exactly the mapped fds
   (plus 0..2 where not mapped, if `keep_std` is non-zero), every other fd closed,
   working directory `cwd` (NULL = unchanged), default signal dispositions and an
   empty signal mask. Returns 0 and the pid in *pid, or an errno value. */
int qs_spawn(pid_t *pid, const char *path, char *const argv[], char *const envp[],
             const qs_fdmap *maps, int nmaps, int keep_std, const char *cwd);

int qs_wifexited(int status);
int qs_wexitstatus(int status);
int qs_wifsignaled(int status);
int qs_wtermsig(int status);

/* Install a SIGALRM handler that calls _exit(code), then alarm(seconds). */
void qs_death_alarm(unsigned seconds, int code);
/* The same, and the handler first writes text (up to 256 bytes) on descriptor 2. */
void qs_death_alarm_saying(unsigned seconds, int code, const char *text);
/* Install handlers for fatal signals (SEGV, BUS, ILL, FPE) that _exit(code). */
void qs_crash_exit(int code);
/* Ignore SIGPIPE. */
void qs_ignore_sigpipe(void);

/* st_mtim / st_atim as nanoseconds since the epoch. */
int64_t qs_stat_mtime_ns(const struct stat *st);
int64_t qs_stat_atime_ns(const struct stat *st);

/* errno access for Swift. */
int qs_errno(void);
void qs_set_errno(int e);

/* Path of the running executable (readlink /proc/self/exe), NUL-terminated; length or -1. */
ssize_t qs_self_exe(char *buf, size_t len);
/* pipe2(O_CLOEXEC). */
int qs_pipe_cloexec(int *r, int *w);
/* Per-thread file-system identity (Linux setfsuid/setfsgid) and per-thread
   supplementary groups through the raw syscall; glibc's wrappers would change
   every thread. For a uid other than 0 the thread's effective CAP_SYS_RESOURCE
   is dropped too (disk quotas and reserved blocks then apply to what it
   writes), and raised again for uid 0. Return 0 on success, -1 when the
   identity did not take. */
int qs_thread_identity(uid_t uid, gid_t gid);
/* One capability in the calling thread's effective set: off, or on again when
   the permitted set has it (capset on this thread only). 0 or -1. */
int qs_thread_capability(int cap, int on);

/* fork + (setgroups, setgid, setuid when uid != (uid_t)-1) + chdir + fd maps + exec.
   Only async-signal-safe calls happen in the child. Returns 0 and *pid, or errno. */
int qs_spawn_as(pid_t *pid, const char *path, char *const argv[], char *const envp[],
                const qs_fdmap *maps, int nmaps, const char *cwd, uid_t uid, gid_t gid);

/* Self-pipe signal delivery: handlers for the given signals write the
   signal number as one byte to `fd`. */
void qs_signals_to_pipe(int fd, const int *signals, int n);

/* flock with LOCK_EX|LOCK_NB; 0 ok, -1 errno. */
int qs_flock_exclusive_nb(int fd);
int qs_flock(int fd, int op);
/* The program's arguments, saved by a constructor (for Embedded Swift). */
int qs_argc(void);
/* Sets what qs_argc/qs_argv return (the musl link's entry point, scripts/musl/main.c). */
void qs_set_arguments(int argc, char **argv);
char **qs_argv(void);
/* A random number below `bound` (> 0), from getrandom(2); falls back to the
   time and pid when the kernel has none to give. */
uint32_t qs_random_below(uint32_t bound);
/* The process environment (`environ`). */
char **qs_environ(void);
/* syncfs(2): every dirty page and inode of fd's file system to disk (the queue
   writer's one flush for a batch of messages). 0 or -1 with errno. */
int qs_syncfs(int fd);
/* renameat2(2) with RENAME_NOREPLACE: rename unless `to` exists (then -1, EEXIST).
   Paths relative to the working folder. 0 or -1 with errno. */
int qs_rename_noreplace(const char *from, const char *to);
/* strptime(3) (not in Swift's Glibc module): the end of what was read, or NULL. */
char *qs_strptime(const char *s, const char *format, struct tm *tm);

#endif
