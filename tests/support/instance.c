/* instance.c: the instance fixture: test applications and sluice as child
 * processes, and their work directory (see instance.h). */
#include "tests/support/instance.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/support/testutil.h"

int test_free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0 ||
        getsockname(fd, (struct sockaddr *)&addr, &len) != 0)
        fail_msg("no free port");
    close(fd);
    return ntohs(addr.sin_port);
}

/* <build>/tests/integration/test_x -> <build>/tests/apps/<app> */
static void app_path(const char *app, char *out, size_t size) {
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    assert_true(n > 0);
    self[n] = '\0';
    char *dir = dirname(dirname(self)); /* .../tests */
    snprintf(out, size, "%s/apps/%s", dir, app);
}

void test_instance_init(test_instance *inst, const char *app, const char *work_dir,
                        const char *name, const char *const *args) {
    memset(inst, 0, sizeof(*inst));
    snprintf(inst->app, sizeof(inst->app), "%s", app);
    snprintf(inst->state_dir, sizeof(inst->state_dir), "%s/%s", work_dir, name);
    snprintf(inst->log_path, sizeof(inst->log_path), "%s/%s.log", work_dir, name);
    snprintf(inst->secret_path, sizeof(inst->secret_path), "%s/cluster-secret", work_dir);
    mkdir(inst->state_dir, 0755);
    int fd = open(inst->secret_path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    if (fd >= 0) {
        unsigned char secret[32];
        FILE *random = fopen("/dev/urandom", "rb");
        assert_non_null(random);
        assert_int_equal(fread(secret, 1, sizeof(secret), random), sizeof(secret));
        fclose(random);
        assert_int_equal(write(fd, secret, sizeof(secret)), (ssize_t)sizeof(secret));
        close(fd);
    }
    inst->http_port = test_free_port();
    do
        inst->admin_port = test_free_port();
    while (inst->admin_port == inst->http_port);
    for (const char *const *a = args; a && *a && inst->n_args < 56; a++)
        snprintf(inst->args[inst->n_args++], sizeof(inst->args[0]), "%s", *a);
}

void test_instance_init_sluice(test_instance *inst, const char *work_dir, const char *name,
                               const char *const *command) {
    /* <build>/tests/apps/../../sluice: the sluice binary itself */
    test_instance_init(inst, "../../sluice", work_dir, name, command);
    test_instance_set(inst, "bootstrap.servers=%s", test_kafka_bootstrap());
}

void test_instance_set(test_instance *inst, const char *fmt, ...) {
    if (inst->n_args + 2 > 56)
        fail_msg("instance %s: too many arguments", inst->state_dir);
    snprintf(inst->args[inst->n_args++], sizeof(inst->args[0]), "--set");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(inst->args[inst->n_args++], sizeof(inst->args[0]), fmt, ap);
    va_end(ap);
}

void test_instance_set_fast_failover(test_instance *inst) {
    test_instance_set(inst, "kafka.consumer.session.timeout.ms=6000");
    test_instance_set(inst, "kafka.consumer.heartbeat.interval.ms=500");
    test_instance_set(inst, "health.kafka.interval.ms=500");
}

/* Every instance process still running, killed when the test program
 * exits: a cmocka failure jumps over test_instance_free, and an instance
 * left running would hold a port and a core through every later test (and
 * outlive the run). */
static pid_t running[256];
static pthread_mutex_t running_lock = PTHREAD_MUTEX_INITIALIZER;

static void kill_running(void) {
    pthread_mutex_lock(&running_lock);
    for (size_t i = 0; i < sizeof(running) / sizeof(running[0]); i++)
        if (running[i] > 0) {
            kill(running[i], SIGKILL);
            waitpid(running[i], NULL, 0);
        }
    pthread_mutex_unlock(&running_lock);
}

static void track(pid_t pid) {
    static bool registered;
    pthread_mutex_lock(&running_lock);
    if (!registered)
        registered = atexit(kill_running) == 0;
    for (size_t i = 0; i < sizeof(running) / sizeof(running[0]); i++)
        if (running[i] <= 0) {
            running[i] = pid;
            break;
        }
    pthread_mutex_unlock(&running_lock);
}

static void untrack(pid_t pid) {
    pthread_mutex_lock(&running_lock);
    for (size_t i = 0; i < sizeof(running) / sizeof(running[0]); i++)
        if (running[i] == pid)
            running[i] = 0;
    pthread_mutex_unlock(&running_lock);
}

void test_instance_start(test_instance *inst) {
    char path[PATH_MAX], state[300], port[64], admin_port[64], secret[340];
    app_path(inst->app, path, sizeof(path));
    snprintf(state, sizeof(state), "state.dir=%s", inst->state_dir);
    snprintf(port, sizeof(port), "http.port=%d", inst->http_port);
    snprintf(admin_port, sizeof(admin_port), "admin.http.port=%d", inst->admin_port);
    snprintf(secret, sizeof(secret), "cluster.secret.file=%s", inst->secret_path);
    char *argv[74];
    int argc = 0;
    argv[argc++] = path;
    for (int i = 0; i < inst->n_args; i++)
        argv[argc++] = inst->args[i];
    argv[argc++] = "--set";
    argv[argc++] = state;
    argv[argc++] = "--set";
    argv[argc++] = port;
    argv[argc++] = "--set";
    argv[argc++] = admin_port;
    argv[argc++] = "--set";
    argv[argc++] = secret;
    argv[argc] = NULL;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open(inst->log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, STDERR_FILENO);
            dup2(fd, STDOUT_FILENO);
            close(fd);
        }
        /* Leak detection in a process that is killed -9 on purpose is
         * noise; the unit tests cover leaks. */
        setenv("ASAN_OPTIONS", "detect_leaks=0", 1);
        execv(path, argv);
        _exit(127);
    }
    inst->pid = pid;
    track(pid);
}

bool test_instance_wait_ready(test_instance *inst, int timeout_ms) {
    char body[2048];
    for (int64_t deadline = test_now_ms() + timeout_ms; test_now_ms() < deadline;) {
        if (test_http(inst->http_port, "GET", "/readyz", NULL, NULL, 0, NULL, 0, body,
                      sizeof(body)) == 200)
            return true;
        int status;
        if (inst->pid && waitpid(inst->pid, &status, WNOHANG) == inst->pid) {
            fprintf(stderr, "# instance %s exited while starting (status %d)\n", inst->state_dir,
                    status);
            untrack(inst->pid);
            inst->pid = 0;
            return false;
        }
        usleep(100 * 1000);
    }
    return false;
}

void test_instance_start_ready(test_instance *inst, int timeout_ms, const char *what) {
    test_instance_start(inst);
    if (!test_instance_wait_ready(inst, timeout_ms)) {
        test_instance_dump_log(inst, 40);
        fail_msg("%s did not become ready", what);
    }
}

void test_instance_start_both(test_instance *a, test_instance *b, int timeout_ms) {
    test_instance_start(a);
    test_instance_start(b);
    if (!test_instance_wait_ready(a, timeout_ms) || !test_instance_wait_ready(b, timeout_ms)) {
        test_instance_dump_log(a, 30);
        test_instance_dump_log(b, 30);
        fail_msg("instances did not become ready");
    }
}

bool test_instances_start_ready(test_instance *insts, int n, int timeout_ms) {
    for (int i = 0; i < n; i++) {
        test_instance_start(&insts[i]);
        if (!test_instance_wait_ready(&insts[i], timeout_ms)) {
            test_instance_dump_log(&insts[i], 30);
            return false;
        }
    }
    for (int i = 0; i < n; i++)
        if (!test_instance_wait_ready(&insts[i], timeout_ms)) {
            test_instance_dump_log(&insts[i], 30);
            return false;
        }
    return true;
}

int test_instances_stop(test_instance *insts, int n, int timeout_ms) {
    int failed = 0;
    for (int i = 0; i < n; i++) {
        if (insts[i].pid && test_instance_stop(&insts[i], timeout_ms) != 0) {
            test_instance_dump_log(&insts[i], 40);
            failed = 1;
        }
        test_instance_free(&insts[i]);
    }
    return failed ? -1 : 0;
}

void test_instance_kill9(test_instance *inst) {
    if (!inst->pid)
        return;
    kill(inst->pid, SIGKILL);
    waitpid(inst->pid, NULL, 0);
    untrack(inst->pid);
    inst->pid = 0;
    inst->restarts++;
}

int test_instance_stop(test_instance *inst, int timeout_ms) {
    if (!inst->pid)
        return -1;
    kill(inst->pid, SIGTERM);
    int status = 0;
    for (int64_t deadline = test_now_ms() + timeout_ms; test_now_ms() < deadline;) {
        if (waitpid(inst->pid, &status, WNOHANG) == inst->pid) {
            untrack(inst->pid);
            inst->pid = 0;
            return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        }
        usleep(50 * 1000);
    }
    /* It did not stop: its threads' stacks into its log (when gdb is
     * installed), so the failure says where it hung. */
    char command[600];
    snprintf(command, sizeof(command),
             "command -v gdb >/dev/null && timeout 60 gdb -p %d -batch -ex 'thread apply all bt' "
             ">>'%s' 2>&1",
             (int)inst->pid, inst->log_path);
    if (system(command) != 0)
        fprintf(stderr, "# no thread stacks of %d (gdb missing or failed)\n", (int)inst->pid);
    test_instance_kill9(inst);
    return -1;
}

long long test_instance_engine_stat(test_instance *inst, const char *name) {
    char body[4096];
    int status =
        test_http(inst->http_port, "GET", "/readyz", NULL, NULL, 0, NULL, 0, body, sizeof(body));
    if (status != 200 && status != 503)
        return -1;
    json_t *root = json_loads(body, 0, NULL);
    json_t *value = json_object_get(json_object_get(root, "engine"), name);
    long long v = json_is_integer(value) ? (long long)json_integer_value(value) : -1;
    json_decref(root);
    return v;
}

void test_instance_dump_log(const test_instance *inst, int lines) {
    char cmd[400];
    snprintf(cmd, sizeof(cmd), "tail -n %d '%s' | sed 's/^/# /' >&2", lines, inst->log_path);
    if (system(cmd) != 0)
        fprintf(stderr, "# (no log at %s)\n", inst->log_path);
}

void test_instance_free(test_instance *inst) {
    if (inst->pid)
        test_instance_kill9(inst);
}

int test_work_dir_make(char *dir, size_t size, const char *name) {
    int n = snprintf(dir, size, "/tmp/%s-XXXXXX", name);
    if (n < 0 || (size_t)n >= size)
        return -1; /* the template would lose its XXXXXX */
    return mkdtemp(dir) ? 0 : -1;
}

void test_work_dir_remove(const char *dir) {
    if (!dir[0] || getenv("SLUICE_TEST_KEEP"))
        return;
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "# could not remove %s\n", dir);
}

int test_cluster_init(test_cluster *cluster, const char *name, int n) {
    memset(cluster, 0, sizeof(*cluster));
    char dir_name[96];
    snprintf(dir_name, sizeof(dir_name), "sluice-%s", name);
    if (n > TEST_CLUSTER_MAX ||
        test_work_dir_make(cluster->work_dir, sizeof(cluster->work_dir), dir_name) != 0)
        return -1;
    test_unique_name(cluster->app_id, sizeof(cluster->app_id), name);
    snprintf(cluster->prefix, sizeof(cluster->prefix), "%s.", cluster->app_id);
    cluster->n = n;
    static const char *const names[TEST_CLUSTER_MAX] = {"a", "b", "c"};
    for (int i = 0; i < n; i++) {
        test_instance *inst = &cluster->instances[i];
        test_instance_init_sluice(inst, cluster->work_dir, names[i], NULL);
        test_instance_set(inst, "application.id=%s", cluster->app_id);
        test_instance_set(inst, "identity.topic.prefix=%s", cluster->prefix);
        test_instance_set_fast_failover(inst);
    }
    return 0;
}

int test_cluster_sign(test_cluster *cluster) {
    char path[128], other_path[128];
    cluster->keys = test_jwt_keys_new(cluster->work_dir, "signing", path, sizeof(path));
    cluster->other_keys =
        test_jwt_keys_new(cluster->work_dir, "other", other_path, sizeof(other_path));
    if (!cluster->keys || !cluster->other_keys)
        return -1;
    for (int i = 0; i < cluster->n; i++)
        test_instance_set(&cluster->instances[i], "identity.key.file=%s", path);
    return 0;
}

int test_cluster_start(test_cluster *cluster) {
    if (!test_instances_start_ready(cluster->instances, cluster->n, 120000)) {
        for (int i = 0; i < cluster->n; i++)
            test_instance_free(&cluster->instances[i]); /* nothing is left running */
        return -1;
    }
    cluster->started = true;
    return 0;
}

int test_cluster_stop(test_cluster *cluster) {
    sl_jwt_keys_destroy(cluster->keys);
    sl_jwt_keys_destroy(cluster->other_keys);
    cluster->keys = cluster->other_keys = NULL;
    if (!cluster->started)
        return 0;
    if (test_instances_stop(cluster->instances, cluster->n, 60000) != 0)
        return -1; /* a leak or a crash on shutdown fails the file */
    test_work_dir_remove(cluster->work_dir);
    return 0;
}
