/*
 * benchutil.h: what the benchmark programs in bench/ share, compiled once
 * and linked into each of them (the Makefile's bench link rule).
 *
 * The stop flag and its signal handler, clocks, strict number parsing,
 * the /proc readers (a process's peak RSS and CPU ticks, the machine's CPU
 * ticks, the harness's broker), child processes (spawn with a log, the
 * tail of a log), a free loopback port and the work directory's removal.
 *
 * These are programs' helpers, not library code: the few that can fail in
 * a way worth telling print one line to stderr, prefixed "bench:" as every
 * benchmark driver's messages are. Single-threaded unless a function says
 * otherwise.
 */
#ifndef SLUICE_BENCH_BENCHUTIL_H
#define SLUICE_BENCH_BENCHUTIL_H

#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Set by SIGINT or SIGTERM once bench_catch_stop_signals ran: the program
 * winds down, stopping its children, at the next check. */
extern volatile sig_atomic_t bench_stop_requested;

/* Install the handler that only sets bench_stop_requested, for SIGINT and
 * SIGTERM. false (errno set) if sigaction failed; the caller says so. */
bool bench_catch_stop_signals(void);

/* The harness's Kafka (SLUICE_TEST_KAFKA_BOOTSTRAP, borrowed from the
 * environment), or NULL after printing that it is missing and that
 * scripts/harness or `make_target` sets it. */
const char *bench_kafka_bootstrap(const char *make_target);

/* CLOCK_MONOTONIC in microseconds (sl_clock_mono_us). Any thread. */
int64_t bench_now_us(void);

/* CLOCK_MONOTONIC in seconds, to the nanosecond. Any thread. */
double bench_now_s(void);

/* This process's CPU time (all threads), in seconds. Any thread. */
double bench_cpu_self_s(void);

/* Sleep `ms` milliseconds, or `s` seconds, or until a stop is requested.
 * Any thread. */
void bench_sleep_ms(int ms);
void bench_sleep_s(double s);

/* Strict decimal parse of the whole of `text` into [min, max]; false on
 * anything else (*out untouched). */
bool bench_parse_ll(const char *text, long long min, long long max, long long *out);

/* snprintf that says whether the whole text fit. */
bool bench_fmt(char *buf, size_t size, const char *format, ...)
    __attribute__((format(printf, 3, 4)));

/* VmHWM (peak RSS) of a live process in KiB, or -1. */
long long bench_hwm_kib(pid_t pid);

/* utime + stime of a live process in clock ticks (sysconf(_SC_CLK_TCK)),
 * or -1 (also for pid <= 0). */
long long bench_proc_ticks(pid_t pid);

/* The machine's CPU time since boot, from the first line of /proc/stat. */
typedef struct bench_cpu_sample {
    long long total, idle, steal; /* clock ticks, all CPUs; all 0 if unread */
} bench_cpu_sample;

bench_cpu_sample bench_machine_cpu(void);

/* The CPU model from /proc/cpuinfo, or "unknown", into buf. */
void bench_machine_model(char *buf, size_t size);

/* The harness's broker: a java process running kafka.Kafka inside
 * SLUICE_TEST_HARNESS_DIR (any kafka.Kafka when that is unset). 0 if none
 * is found, for example with a broker on another machine. */
pid_t bench_find_broker(void);

/* The options every driver takes. */
typedef struct bench_common_options {
    char build[PATH_MAX]; /* --build DIR; default: this program's <build> */
    const char *label;    /* --label TEXT, borrowed from argv; NULL if none */
    bool keep;            /* --keep: keep topics, logs and state */
} bench_common_options;

/* Takes one `--name value` option of a driver's own into `opts`; false if
 * `name` is unknown or `value` is bad. */
typedef bool bench_option_fn(void *opts, const char *name, const char *value);

/* Walk a driver's command line: the common options into `common`, every
 * other `--name value` pair through `take`. false on a missing value, an
 * unknown option or one `take` refuses (the caller prints its usage). */
bool bench_parse_args(int argc, char **argv, bench_common_options *common, bench_option_fn *take,
                      void *opts);

/* The status of an HTTP/1.x response (`response`, `len` bytes, NUL-
 * terminated), or -1 if it has no status line; when the status is read and
 * `body` is not NULL, at most body_size-1 bytes of the body are copied
 * there. Any thread. */
int bench_http_response(const char *response, size_t len, char *body, size_t body_size);

/* The current UTC date and time ("2024-01-31 12:00:00 UTC"), or "unknown". */
void bench_utc_now(char *buf, size_t size);

/* `<build>` from this program's path `<build>/bench/<name>`, into buf.
 * false if /proc/self/exe cannot be read or the path does not fit. */
bool bench_build_dir(char *buf, size_t size);

/* A free TCP port on 127.0.0.1 (bound once, then closed), or -1. */
int bench_free_port(void);

/* Fork and exec argv[0] (argv borrowed) with stdout and stderr appended to
 * log_path; the child gets SIGKILL if this process dies
 * (PR_SET_PDEATHSIG). Its pid, or -1 after printing why. Safe in a program
 * with threads (the child calls only async-signal-safe functions). */
pid_t bench_spawn(char *const argv[], const char *log_path);

/* The last `lines` (at most 64) lines of a child's log, to stderr. */
void bench_dump_log(const char *path, int lines);

/* Remove the directory `dir` and everything in it, printing what cannot be
 * removed. */
void bench_remove_tree(const char *dir);

#endif
