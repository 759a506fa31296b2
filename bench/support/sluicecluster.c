/*
 * sluicecluster.c: `sluice run` instances and the calls that drive them,
 * for the dialogs benchmarks (see sluicecluster.h).
 */
#include "bench/support/sluicecluster.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench/support/benchutil.h"
#include "connectors/http/auth/jwt.h"
#include "sluice/v1/dialogs.pb-c.h"
#include "sluice/v1/identity.pb-c.h"

#define READY_US     180000000
#define MAX_SETTINGS 24

int bench_cluster_setup(const char *target, char *dir, char *key_path, size_t key_path_size,
                        const char **bootstrap) {
    *bootstrap = bench_kafka_bootstrap(target);
    if (!*bootstrap)
        return 2;
    if (!bench_catch_stop_signals())
        return 1;
    signal(SIGPIPE, SIG_IGN);
    if (!mkdtemp(dir))
        return 1;
    char errstr[256];
    bench_fmt(key_path, key_path_size, "%s/signing.pem", dir);
    if (sl_jwt_key_generate(key_path, SL_JWT_RS256, NULL, errstr, sizeof(errstr))) {
        fprintf(stderr, "bench: %s\n", errstr);
        return 1;
    }
    return 0;
}

void bench_cluster_init(bench_cluster *c, const char *bootstrap, const char *build, const char *dir,
                        const char *key_path, const char *app_id) {
    memset(c, 0, sizeof(*c));
    c->bootstrap = bootstrap;
    c->build = build;
    c->dir = dir;
    c->key_path = key_path;
    snprintf(c->app_id, sizeof(c->app_id), "%s", app_id);
    snprintf(c->prefix, sizeof(c->prefix), "%s.", c->app_id);
    snprintf(c->commands_topic, sizeof(c->commands_topic), "%sdialogs.commands", c->prefix);
    snprintf(c->events_topic, sizeof(c->events_topic), "%sdialogs.events", c->prefix);
    snprintf(c->users_topic, sizeof(c->users_topic), "%susers.events", c->prefix);
}

bool bench_cluster_start(bench_cluster *c, int n, int partitions, const char *const *extra) {
    if (n < 1 || n > BENCH_CLUSTER_MAX) {
        fprintf(stderr, "bench: %d instances (1 to %d)\n", n, BENCH_CLUSTER_MAX);
        return false;
    }
    char binary[PATH_MAX];
    snprintf(binary, sizeof(binary), "%s/sluice", c->build);
    for (int i = 0; i < n; i++) {
        c->ports[i] = bench_free_port();
        do
            c->admin_ports[i] = bench_free_port();
        while (c->admin_ports[i] == c->ports[i]);
        char sets[MAX_SETTINGS][300], log_path[PATH_MAX];
        int n_sets = 0;
        snprintf(sets[n_sets++], 300, "application.id=%s", c->app_id);
        snprintf(sets[n_sets++], 300, "identity.topic.prefix=%s", c->prefix);
        snprintf(sets[n_sets++], 300, "dialogs.topic.prefix=%s", c->prefix);
        snprintf(sets[n_sets++], 300, "bootstrap.servers=%s", c->bootstrap);
        snprintf(sets[n_sets++], 300, "identity.key.file=%s", c->key_path);
        snprintf(sets[n_sets++], 300, "dialogs.topic.partitions=%d", partitions);
        snprintf(sets[n_sets++], 300, "http.port=%d", c->ports[i]);
        snprintf(sets[n_sets++], 300, "admin.http.port=%d", c->admin_ports[i]);
        snprintf(sets[n_sets++], 300, "state.dir=%s/%s-state-%d", c->dir, c->app_id, i);
        snprintf(sets[n_sets++], 300, "log.level=warn");
        snprintf(sets[n_sets++], 300, "gateway.reply.max.waiters=4096");
        /* Every instance needs the one cluster secret; the (secret, shared)
         * signing key file is as good a 32+ byte secret as any here. */
        snprintf(sets[n_sets++], 300, "cluster.secret.file=%s", c->key_path);
        for (int e = 0; extra && extra[e] && n_sets < MAX_SETTINGS; e++)
            snprintf(sets[n_sets++], 300, "%s", extra[e]);
        char *argv[2 + 2 * MAX_SETTINGS + 1];
        int a = 0;
        argv[a++] = binary;
        argv[a++] = "run";
        for (int k = 0; k < n_sets; k++) {
            argv[a++] = "--set";
            argv[a++] = sets[k];
        }
        argv[a] = NULL;
        snprintf(log_path, sizeof(log_path), "%s/%s-instance-%d.log", c->dir, c->app_id, i);
        c->pids[i] = bench_spawn(argv, log_path);
        c->n = i + 1;
        if (c->pids[i] < 0)
            return false;
    }
    char out[4096];
    for (int i = 0; i < n; i++) {
        int64_t deadline = bench_now_us() + READY_US;
        while (bench_http(c->ports[i], "GET", "/readyz", NULL, NULL, out, sizeof(out)) != 200) {
            if (bench_now_us() > deadline || bench_stop_requested) {
                fprintf(stderr, "bench: instance %d of %s not ready (see %s)\n", i, c->app_id,
                        c->dir);
                return false;
            }
            usleep(200000);
        }
    }
    return true;
}

void bench_cluster_stop(bench_cluster *c) {
    for (int i = 0; i < c->n; i++)
        if (c->pids[i] > 0)
            kill(c->pids[i], SIGTERM);
    for (int i = 0; i < c->n; i++)
        if (c->pids[i] > 0)
            waitpid(c->pids[i], NULL, 0);
    c->n = 0;
}

int bench_http(int port, const char *method, const char *path, const char *headers,
               const char *body, char *out, size_t out_size) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET,
                               .sin_port = htons((uint16_t)port),
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof(addr))) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    char request[8192];
    int n =
        snprintf(request, sizeof(request),
                 "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n%s"
                 "Content-Length: %zu\r\n\r\n%s",
                 method, path, headers ? headers : "", body ? strlen(body) : 0, body ? body : "");
    if (n < 0 || (size_t)n >= sizeof(request) || write(fd, request, (size_t)n) != n) {
        close(fd);
        return -1;
    }
    size_t used = 0;
    ssize_t got;
    while (used + 1 < out_size && (got = read(fd, out + used, out_size - used - 1)) > 0)
        used += (size_t)got;
    out[used] = '\0';
    close(fd);
    int status = -1;
    if (sscanf(out, "HTTP/1.%*d %d", &status) != 1)
        return -1;
    return status;
}

long long bench_metric(int port, const char *series) {
    static char out[1 << 20];
    if (bench_http(port, "GET", "/metrics", NULL, NULL, out, sizeof(out)) != 200)
        return -1;
    size_t len = strlen(series);
    for (const char *line = strstr(out, series); line; line = strstr(line + 1, series))
        if (line[-1] == '\n' && line[len] == ' ')
            return atoll(line + len + 1);
    return -1;
}

rd_kafka_t *bench_producer_new(const char *bootstrap) {
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, errstr, sizeof(errstr));
    rd_kafka_conf_set(conf, "partitioner", "murmur2_random", errstr, sizeof(errstr));
    rd_kafka_conf_set(conf, "enable.idempotence", "true", errstr, sizeof(errstr));
    rd_kafka_conf_set(conf, "linger.ms", "5", errstr, sizeof(errstr));
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!rk) {
        fprintf(stderr, "bench: producer: %s\n", errstr);
        exit(1);
    }
    return rk;
}

void bench_produce(rd_kafka_t *rk, const char *topic, const char *key, const void *value,
                   size_t len) {
    while (rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, strlen(key)),
                             RD_KAFKA_V_VALUE((void *)value, len),
                             RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                             RD_KAFKA_V_END) == RD_KAFKA_RESP_ERR__QUEUE_FULL)
        rd_kafka_poll(rk, 10);
}

void bench_register_user(rd_kafka_t *rk, const bench_cluster *c, const char *user_id) {
    Sluice__V1__UserRegistered registered = SLUICE__V1__USER_REGISTERED__INIT;
    registered.user_id = (char *)user_id;
    Sluice__V1__UsersEvent event = SLUICE__V1__USERS_EVENT__INIT;
    event.event_case = SLUICE__V1__USERS_EVENT__EVENT_USER_REGISTERED;
    event.user_registered = &registered;
    uint8_t buf[256];
    bench_produce(rk, c->users_topic, user_id, buf, sluice__v1__users_event__pack(&event, buf));
}

void bench_produce_send(rd_kafka_t *rk, const bench_cluster *c, const char *command_id,
                        const char *from, const char *to, const char *text) {
    char dialog_id[SL_DIALOGS_ID_LEN + 1];
    sl_dialogs_id(from, to, dialog_id);
    Sluice__V1__CommandMeta meta = SLUICE__V1__COMMAND_META__INIT;
    meta.command_id = (char *)command_id;
    Sluice__V1__SendMessage send = SLUICE__V1__SEND_MESSAGE__INIT;
    send.meta = &meta;
    send.dialog_id = dialog_id;
    send.sender_id = (char *)from;
    send.recipient_id = (char *)to;
    send.text = (char *)text;
    Sluice__V1__DialogsCommand command = SLUICE__V1__DIALOGS_COMMAND__INIT;
    command.command_case = SLUICE__V1__DIALOGS_COMMAND__COMMAND_SEND_MESSAGE;
    command.send_message = &send;
    uint8_t buf[1024];
    bench_produce(rk, c->commands_topic, dialog_id, buf,
                  sluice__v1__dialogs_command__pack(&command, buf));
}

void bench_random_uuid(char out[37], unsigned *seed) {
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 36; i++)
        out[i] = (i == 8 || i == 13 || i == 18 || i == 23) ? '-' : hex[rand_r(seed) % 16];
    out[14] = '4';
    out[36] = '\0';
}
