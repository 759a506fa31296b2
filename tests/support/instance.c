/* instance.c: test applications as child processes (see instance.h). */
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
    mkdir(inst->state_dir, 0755);
    inst->http_port = test_free_port();
    for (const char *const *a = args; a && *a && inst->n_args < 40; a++)
        snprintf(inst->args[inst->n_args++], sizeof(inst->args[0]), "%s", *a);
}

void test_instance_start(test_instance *inst) {
    char path[PATH_MAX], state[300], port[64];
    app_path(inst->app, path, sizeof(path));
    snprintf(state, sizeof(state), "state.dir=%s", inst->state_dir);
    snprintf(port, sizeof(port), "http.port=%d", inst->http_port);
    char *argv[64];
    int argc = 0;
    argv[argc++] = path;
    for (int i = 0; i < inst->n_args; i++)
        argv[argc++] = inst->args[i];
    argv[argc++] = "--set";
    argv[argc++] = state;
    argv[argc++] = "--set";
    argv[argc++] = port;
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
            inst->pid = 0;
            return false;
        }
        usleep(100 * 1000);
    }
    return false;
}

void test_instance_kill9(test_instance *inst) {
    if (!inst->pid)
        return;
    kill(inst->pid, SIGKILL);
    waitpid(inst->pid, NULL, 0);
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
            inst->pid = 0;
            return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        }
        usleep(50 * 1000);
    }
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
