/*
 * http_bench.c: the HTTP edge under wrk (release build, under
 * scripts/harness: `make bench-http`).
 *
 * Two `sluice run` instances (identity and dialogs) on the harness's broker.
 * A few users are registered; one whose users-by-id partition instance a
 * owns (a local key on a) and one that b owns (forwarded by a). Then wrk
 * (Debian's package; `scripts/bootstrap bench` installs it) drives a's
 * public port and its admin port, one target after the other, each for
 * --seconds with 2 threads and --connections (default "64,1000"):
 *
 *   /healthz                              the baseline: no store, no forward
 *   GET /user/get/{local id}              a store read on the instance asked
 *   GET /user/get/{remote id}             forwarded to b (one signed hop)
 *   admin GET /v1/stores/users-by-id/keys/{local|remote}
 *                                         the state endpoint, at 16
 *                                         connections (the admin listener
 *                                         takes 16 per address)
 *
 * The public listener's per-address cap (http.max.connections.per.address,
 * default 64) is lifted for the run: every wrk connection comes from
 * 127.0.0.1. Reports requests/s, p50 and p99 latency, errors (non-2xx and
 * socket errors) and the ratio of each route to /healthz at the same
 * connection count, in Markdown on stdout. wrk and the instances share this
 * machine's cores: compare ratios within a run, not numbers across machines.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench/support/benchutil.h"
#include "bench/support/sluicecluster.h"

#define MAX_CONNS   4
#define USERS       16
#define ADMIN_CONNS 16 /* the admin listener's per-address cap (app.c) */

typedef struct options {
    bench_common_options common;
    long long seconds;
    long long conns[MAX_CONNS];
    int n_conns;
} options;

static bool take_option(void *opaque, const char *name, const char *value) {
    options *opt = opaque;
    if (strcmp(name, "--seconds") == 0)
        return bench_parse_ll(value, 1, 600, &opt->seconds);
    if (strcmp(name, "--connections") == 0) {
        opt->n_conns = 0;
        char copy[128];
        snprintf(copy, sizeof(copy), "%s", value);
        for (char *save = NULL, *t = strtok_r(copy, ",", &save); t;
             t = strtok_r(NULL, ",", &save)) {
            if (opt->n_conns == MAX_CONNS ||
                !bench_parse_ll(t, 1, 10000, &opt->conns[opt->n_conns++]))
                return false;
        }
        return opt->n_conns > 0;
    }
    return false;
}

static int usage(void) {
    fprintf(stderr, "usage: http_bench [--build DIR] [--label TEXT] [--keep] [--seconds N] "
                    "[--connections 64,1000]\n");
    return 2;
}

typedef struct wrk_result {
    bool ok;
    double rps, p50_ms, p99_ms;
    long long requests, errors;
} wrk_result;

/* "1.23ms", "456.00us", "1.01s" in milliseconds; -1 if unreadable. */
static double duration_ms(const char *text) {
    char *end;
    double v = strtod(text, &end);
    if (end == text)
        return -1;
    if (strncmp(end, "us", 2) == 0)
        return v / 1000;
    if (strncmp(end, "ms", 2) == 0)
        return v;
    if (*end == 's')
        return v * 1000;
    if (strncmp(end, "m", 1) == 0)
        return v * 60000;
    return -1;
}

static char wrk_path[PATH_MAX]; /* found on PATH by main */

/* Run wrk on http://127.0.0.1:port<path> and parse its report. */
static wrk_result run_wrk(int port, const char *path, long long conns, long long seconds,
                          const char *dir) {
    wrk_result r = {0};
    char url[512], c[32], d[32], log[PATH_MAX];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
    snprintf(c, sizeof(c), "%lld", conns);
    snprintf(d, sizeof(d), "%llds", seconds);
    snprintf(log, sizeof(log), "%s/wrk.out", dir);
    unlink(log);
    char *argv[] = {wrk_path, "-t2", "-c", c, "-d", d, "--latency", "--timeout", "10s", url, NULL};
    pid_t pid = bench_spawn(argv, log);
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
        WEXITSTATUS(status) != 0) {
        fprintf(stderr, "bench: wrk %s failed\n", url);
        bench_dump_log(log, 20);
        return r;
    }
    FILE *f = fopen(log, "r");
    char line[512];
    while (f && fgets(line, sizeof(line), f)) {
        char *p = line;
        while (*p == ' ' || *p == '\t')
            p++;
        long long a = 0, b = 0, e1 = 0, e2 = 0, e3 = 0, e4 = 0;
        if (strncmp(p, "50%", 3) == 0)
            r.p50_ms = duration_ms(p + 3 + strspn(p + 3, " \t"));
        else if (strncmp(p, "99%", 3) == 0)
            r.p99_ms = duration_ms(p + 3 + strspn(p + 3, " \t"));
        else if (sscanf(p, "Requests/sec: %lf", &r.rps) == 1)
            r.ok = true;
        else if (sscanf(p, "%lld requests in", &a) == 1)
            r.requests = a;
        else if (sscanf(p, "Non-2xx or 3xx responses: %lld", &b) == 1)
            r.errors += b;
        else if (sscanf(p, "Socket errors: connect %lld, read %lld, write %lld, timeout %lld", &e1,
                        &e2, &e3, &e4) == 4)
            r.errors += e1 + e2 + e3 + e4;
    }
    if (f)
        fclose(f);
    return r;
}

/* Register a user on `port`; its id into `id`. */
static bool register_user(int port, int n, char id[64]) {
    char body[512], out[8192], text[4096];
    snprintf(body, sizeof(body),
             "{\"first_name\":\"Bench\",\"second_name\":\"Http\",\"city\":\"X\",\"password\":"
             "\"correct horse battery\",\"email\":\"httpbench-%d-%d@example.org\"}",
             (int)getpid(), n);
    for (int attempt = 0; attempt < 20; attempt++) {
        int status = bench_http(port, "POST", "/user/register",
                                "Content-Type: application/json\r\n", body, out, sizeof(out));
        if (status == 200 && bench_http_response(out, strlen(out), text, sizeof(text)) == 200) {
            const char *at = strstr(text, "\"user_id\":\"");
            if (at && sscanf(at + 11, "%36[0-9a-f-]", id) == 1)
                return true;
        }
        bench_sleep_ms(500);
    }
    return false;
}

/* The public port of the owner of `id`'s users-by-id partition, asked of
 * the admin port `admin`; -1 while unknown. */
static int owner_port(int admin, const char *id) {
    char path[128], out[8192];
    snprintf(path, sizeof(path), "/v1/metadata/users-by-id/%s", id);
    if (bench_http(admin, "GET", path, NULL, NULL, out, sizeof(out)) != 200)
        return -1;
    const char *at = strstr(out, "\"address\":\"");
    const char *colon = at ? strchr(at + 11, ':') : NULL;
    return colon ? atoi(colon + 1) : -1;
}

int main(int argc, char **argv) {
    options opt = {.seconds = 10, .conns = {64, 1000}, .n_conns = 2};
    if (!bench_parse_args(argc, argv, &opt.common, take_option, &opt))
        return usage();
    /* wrk's path (bench_spawn execs a path, not a name) */
    const char *path_env = getenv("PATH");
    char dirs[4096];
    snprintf(dirs, sizeof(dirs), "%s", path_env ? path_env : "/usr/bin:/bin");
    for (char *save = NULL, *d = strtok_r(dirs, ":", &save); d && !wrk_path[0];
         d = strtok_r(NULL, ":", &save)) {
        char candidate[PATH_MAX];
        snprintf(candidate, sizeof(candidate), "%s/wrk", d);
        if (access(candidate, X_OK) == 0)
            snprintf(wrk_path, sizeof(wrk_path), "%s", candidate);
    }
    if (!wrk_path[0]) {
        fprintf(stderr, "bench: wrk is not installed (scripts/bootstrap bench)\n");
        return 2;
    }
    const char *bootstrap;
    char dir[] = "/tmp/sluice-http-bench-XXXXXX", key_path[128];
    int status =
        bench_cluster_setup("make bench-http", dir, key_path, sizeof(key_path), &bootstrap);
    if (status)
        return status;
    bench_cluster c;
    char app_id[64];
    snprintf(app_id, sizeof(app_id), "httpbench-%d", (int)getpid());
    bench_cluster_init(&c, bootstrap, opt.common.build, dir, key_path, app_id);
    const char *const extra[] = {"http.max.connections.per.address=0", "http.max.connections=4096",
                                 NULL};
    if (!bench_cluster_start(&c, 2, 4, extra)) {
        bench_cluster_stop(&c);
        return 1;
    }
    char local[64] = "", remote[64] = "";
    for (int u = 0; u < USERS && (!local[0] || !remote[0]) && !bench_stop_requested; u++) {
        char id[64];
        if (!register_user(c.ports[0], u, id)) {
            fprintf(stderr, "bench: cannot register a user\n");
            bench_cluster_stop(&c);
            return 1;
        }
        int port = -1;
        for (int t = 0; t < 100 && port < 0; t++, bench_sleep_ms(100))
            port = owner_port(c.admin_ports[0], id);
        if (port == c.ports[0] && !local[0])
            snprintf(local, sizeof(local), "%s", id);
        else if (port == c.ports[1] && !remote[0])
            snprintf(remote, sizeof(remote), "%s", id);
    }
    if (!local[0] || !remote[0]) {
        fprintf(stderr, "bench: no user on each instance after %d registrations\n", USERS);
        bench_cluster_stop(&c);
        return 1;
    }
    struct {
        const char *name;
        bool admin;
        char path[160];
    } targets[5] = {{"/healthz (baseline)", false, "/healthz"},
                    {"GET /user/get/{id}, local key", false, ""},
                    {"GET /user/get/{id}, forwarded to b", false, ""},
                    {"admin GET /v1/stores/users-by-id/keys/{id}, local", true, ""},
                    {"admin GET /v1/stores/users-by-id/keys/{id}, read at b", true, ""}};
    snprintf(targets[1].path, sizeof(targets[1].path), "/user/get/%s", local);
    snprintf(targets[2].path, sizeof(targets[2].path), "/user/get/%s", remote);
    snprintf(targets[3].path, sizeof(targets[3].path), "/v1/stores/users-by-id/keys/%s", local);
    snprintf(targets[4].path, sizeof(targets[4].path), "/v1/stores/users-by-id/keys/%s", remote);

    char when[64], model[128];
    bench_utc_now(when, sizeof(when));
    bench_machine_model(model, sizeof(model));
    printf("## http_bench: the HTTP edge under wrk (%s)\n\n",
           opt.common.label ? opt.common.label : "unlabelled");
    printf("%s, %s, %ld CPUs; two release-build instances (a thread per connection), wrk -t2 "
           "for %lld s per row against instance a, on the same machine\n\n",
           when, model, sysconf(_SC_NPROCESSORS_ONLN), opt.seconds);
    printf("| route | connections | requests/s | p50 | p99 | errors | vs /healthz |\n");
    printf("| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    fflush(stdout);
    bool all_ok = true;
    for (int k = 0; k < opt.n_conns && !bench_stop_requested; k++) {
        double baseline = 0;
        for (int t = 0; t < 5 && !bench_stop_requested; t++) {
            /* the admin listener takes 16 connections per address */
            long long conns = targets[t].admin ? ADMIN_CONNS : opt.conns[k];
            if (targets[t].admin && k > 0)
                continue;
            wrk_result r = run_wrk(targets[t].admin ? c.admin_ports[0] : c.ports[0],
                                   targets[t].path, conns, opt.seconds, dir);
            all_ok = all_ok && r.ok;
            if (t == 0)
                baseline = r.rps;
            printf("| %s | %lld | %.0f | %.2f ms | %.2f ms | %lld of %lld | %.0f %% |\n",
                   targets[t].name, conns, r.rps, r.p50_ms, r.p99_ms, r.errors, r.requests,
                   baseline > 0 ? 100.0 * r.rps / baseline : 0.0);
            fflush(stdout);
        }
    }
    bench_cluster_stop(&c);
    if (opt.common.keep)
        fprintf(stderr, "bench: logs and state in %s\n", dir);
    else
        bench_remove_tree(dir);
    return all_ok ? 0 : 1;
}
