/* benchutil.c: see benchutil.h. */
#include "bench/support/benchutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "processor/base/clock.h"

volatile sig_atomic_t bench_stop_requested;

/* A signal handler only flips a flag. */
static void on_stop_signal(int sig) {
    (void)sig;
    bench_stop_requested = 1;
}

bool bench_catch_stop_signals(void) {
    struct sigaction sa = {.sa_handler = on_stop_signal};
    sigemptyset(&sa.sa_mask);
    return sigaction(SIGINT, &sa, NULL) == 0 && sigaction(SIGTERM, &sa, NULL) == 0;
}

const char *bench_kafka_bootstrap(const char *make_target) {
    const char *bootstrap = getenv("SLUICE_TEST_KAFKA_BOOTSTRAP");
    if (bootstrap && bootstrap[0])
        return bootstrap;
    fprintf(stderr,
            "bench: SLUICE_TEST_KAFKA_BOOTSTRAP is not set (run it under "
            "scripts/harness, or '%s')\n",
            make_target);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Clocks, sleeping, numbers                                                 */

int64_t bench_now_us(void) {
    return sl_clock_mono_us();
}

static double clock_s(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

double bench_now_s(void) {
    return clock_s(CLOCK_MONOTONIC);
}

double bench_cpu_self_s(void) {
    return clock_s(CLOCK_PROCESS_CPUTIME_ID);
}

static void sleep_for(struct timespec ts) {
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR && !bench_stop_requested)
        ;
}

void bench_sleep_ms(int ms) {
    sleep_for((struct timespec){.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000});
}

void bench_sleep_s(double s) {
    if (s <= 0)
        return;
    sleep_for((struct timespec){.tv_sec = (time_t)s,
                                .tv_nsec = (long)((s - (double)(time_t)s) * 1e9)});
}

bool bench_parse_ll(const char *text, long long min, long long max, long long *out) {
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno || end == text || *end || v < min || v > max)
        return false;
    *out = v;
    return true;
}

bool bench_fmt(char *buf, size_t size, const char *format, ...) {
    va_list ap;
    va_start(ap, format);
    int n = vsnprintf(buf, size, format, ap);
    va_end(ap);
    return n >= 0 && (size_t)n < size;
}

/* ------------------------------------------------------------------------ */
/* /proc: peak RSS, CPU of a process, CPU of the machine, the broker         */

long long bench_hwm_kib(pid_t pid) {
    char path[64], line[256];
    if (!bench_fmt(path, sizeof(path), "/proc/%d/status", (int)pid))
        return -1;
    FILE *file = fopen(path, "r");
    if (!file)
        return -1;
    long long kib = -1;
    while (fgets(line, sizeof(line), file))
        if (strncmp(line, "VmHWM:", 6) == 0) {
            /* "VmHWM:   123456 kB": the number is not the whole rest. */
            errno = 0;
            kib = strtoll(line + 6, NULL, 10);
            if (errno)
                kib = -1;
            break;
        }
    fclose(file);
    return kib;
}

long long bench_proc_ticks(pid_t pid) {
    char path[64], buf[1024];
    if (pid <= 0 || !bench_fmt(path, sizeof(path), "/proc/%d/stat", (int)pid))
        return -1;
    FILE *file = fopen(path, "r");
    if (!file)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, file);
    fclose(file);
    buf[n] = '\0';
    char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    if (!p)
        return -1;
    /* Fields after the name start at 3 (state); utime is 14, stime 15. */
    long long ticks = 0;
    int field = 2;
    for (char *save = NULL, *tok = strtok_r(p + 1, " ", &save); tok;
         tok = strtok_r(NULL, " ", &save)) {
        field++;
        long long v;
        if (field == 14 || field == 15) {
            if (!bench_parse_ll(tok, 0, LLONG_MAX, &v))
                return -1;
            ticks += v;
        }
        if (field == 15)
            return ticks;
    }
    return -1;
}

bench_cpu_sample bench_machine_cpu(void) {
    bench_cpu_sample s = {0, 0, 0};
    char line[512];
    FILE *file = fopen("/proc/stat", "r");
    if (!file)
        return s;
    bool ok = fgets(line, sizeof(line), file) && strncmp(line, "cpu ", 4) == 0;
    fclose(file);
    if (!ok)
        return s;
    /* user nice system idle iowait irq softirq steal (guest is in user) */
    char *p = line + 4;
    for (int field = 0; field < 8; field++) {
        char *end;
        errno = 0;
        long long v = strtoll(p, &end, 10);
        if (errno || end == p)
            break;
        p = end;
        s.total += v;
        if (field == 3 || field == 4)
            s.idle += v;
        if (field == 7)
            s.steal += v;
    }
    return s;
}

void bench_machine_model(char *buf, size_t size) {
    bench_fmt(buf, size, "unknown");
    FILE *file = fopen("/proc/cpuinfo", "r");
    if (!file)
        return;
    char line[512];
    while (fgets(line, sizeof(line), file))
        if (strncmp(line, "model name", 10) == 0) {
            const char *colon = strchr(line, ':');
            if (colon) {
                bench_fmt(buf, size, "%s", colon + 2);
                buf[strcspn(buf, "\n")] = '\0';
            }
            break;
        }
    fclose(file);
}

pid_t bench_find_broker(void) {
    const char *harness = getenv("SLUICE_TEST_HARNESS_DIR");
    DIR *proc = opendir("/proc");
    if (!proc)
        return 0;
    pid_t found = 0;
    struct dirent *entry;
    while (!found && (entry = readdir(proc))) {
        long long pid;
        if (!bench_parse_ll(entry->d_name, 1, INT_MAX, &pid))
            continue;
        char path[64], cmdline[8192];
        if (!bench_fmt(path, sizeof(path), "/proc/%lld/cmdline", pid))
            continue;
        FILE *file = fopen(path, "r");
        if (!file)
            continue;
        size_t n = fread(cmdline, 1, sizeof(cmdline) - 1, file);
        fclose(file);
        cmdline[n] = '\0';
        bool is_kafka = false, in_harness = harness == NULL;
        for (size_t at = 0; at < n; at += strlen(cmdline + at) + 1) {
            is_kafka |= strcmp(cmdline + at, "kafka.Kafka") == 0;
            in_harness |= harness && strstr(cmdline + at, harness) != NULL;
        }
        if (is_kafka && in_harness)
            found = (pid_t)pid;
    }
    closedir(proc);
    return found;
}

bool bench_build_dir(char *buf, size_t size) {
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0)
        return false;
    self[n] = '\0';
    return bench_fmt(buf, size, "%s", dirname(dirname(self)));
}

bool bench_parse_args(int argc, char **argv, bench_common_options *common, bench_option_fn *take,
                      void *opts) {
    if (!bench_build_dir(common->build, sizeof(common->build)))
        return false;
    for (int i = 1; i < argc; i++) {
        const char *name = argv[i], *value = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(name, "--keep") == 0) {
            common->keep = true;
            continue;
        }
        if (!value)
            return false;
        i++;
        bool ok = true;
        if (strcmp(name, "--build") == 0)
            ok = bench_fmt(common->build, sizeof(common->build), "%s", value);
        else if (strcmp(name, "--label") == 0)
            common->label = value;
        else
            ok = take(opts, name, value);
        if (!ok)
            return false;
    }
    return true;
}

int bench_http_response(const char *response, size_t len, char *body, size_t body_size) {
    long long code;
    char digits[4];
    if (len < 12 || strncmp(response, "HTTP/1.", 7) != 0)
        return -1;
    memcpy(digits, response + 9, 3);
    digits[3] = '\0';
    if (!bench_parse_ll(digits, 100, 599, &code))
        return -1;
    const char *start = strstr(response, "\r\n\r\n");
    if (body && body_size)
        bench_fmt(body, body_size, "%s", start ? start + 4 : "");
    return (int)code;
}

void bench_utc_now(char *buf, size_t size) {
    time_t t = time(NULL);
    struct tm tm;
    if (!gmtime_r(&t, &tm) || !strftime(buf, size, "%Y-%m-%d %H:%M:%S UTC", &tm))
        bench_fmt(buf, size, "unknown");
}

/* ------------------------------------------------------------------------ */
/* Ports, child processes, files                                             */

int bench_free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0 &&
        getsockname(fd, (struct sockaddr *)&addr, &len) == 0)
        port = ntohs(addr.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

pid_t bench_spawn(char *const argv[], const char *log_path) {
    int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) {
        fprintf(stderr, "bench: cannot open %s: %s\n", log_path, strerror(errno));
        return -1;
    }
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "bench: fork: %s\n", strerror(errno));
        close(fd);
        return -1;
    }
    if (pid == 0) {
        /* Only async-signal-safe calls until exec: the parent has threads. */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
            _exit(127);
        if (dup2(fd, STDOUT_FILENO) < 0 || dup2(fd, STDERR_FILENO) < 0)
            _exit(127);
        execv(argv[0], argv);
        _exit(127);
    }
    close(fd);
    return pid;
}

void bench_dump_log(const char *path, int lines) {
    enum { RING = 64 };
    char(*ring)[512] = calloc(RING, sizeof(*ring));
    FILE *file = ring ? fopen(path, "r") : NULL;
    if (!file) {
        free(ring);
        return;
    }
    int n = 0;
    while (fgets(ring[n % RING], sizeof(ring[0]), file))
        n++;
    fclose(file);
    if (lines > RING)
        lines = RING;
    fprintf(stderr, "bench: last lines of %s:\n", path);
    for (int i = n > lines ? n - lines : 0; i < n; i++)
        fprintf(stderr, "  | %s", ring[i % RING]);
    free(ring);
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)flag;
    (void)ftw;
    if (remove(path) != 0)
        fprintf(stderr, "bench: cannot remove %s: %s\n", path, strerror(errno));
    return 0;
}

void bench_remove_tree(const char *dir) {
    nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}
