/*
 * httpc.c: a bounded blocking HTTP/1.1 client (see httpc.h).
 *
 * Request: built in one buffer (request line, Host, Content-Length when
 * there is a body or the method carries one, the caller's headers), sent
 * with MSG_NOSIGNAL, on a kept-alive connection when one is idle (below). Response: read into one
 * buffer that never grows past max_response_bytes + 1; the head ends at the
 * first CRLFCRLF; the body is Content-Length bytes (a second, different
 * Content-Length or any Transfer-Encoding is refused as ambiguous framing)
 * or, without Content-Length, everything up to the end of the connection.
 * Every wait is a poll() against one monotonic deadline.
 */
#include "processor/http/client.h"
#include "processor/base/clock.h"

#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int remaining(int64_t deadline) {
    int64_t left = deadline - sl_clock_mono_ms();
    return left > 0 ? (int)left : 0;
}

/* Wait for `events` on fd until the deadline: SL_OK, SL_ERR_TIMEOUT or
 * SL_ERR_IO. */
static sl_err wait_fd(int fd, short events, int64_t deadline) {
    for (;;) {
        int left = remaining(deadline);
        if (left == 0)
            return SL_ERR_TIMEOUT;
        struct pollfd pfd = {.fd = fd, .events = events};
        int n = poll(&pfd, 1, left);
        if (n > 0)
            return SL_OK;
        if (n == 0)
            return SL_ERR_TIMEOUT;
        if (errno != EINTR)
            return SL_ERR_IO;
    }
}

static bool has_crlf(const char *s) {
    return s && strpbrk(s, "\r\n") != NULL;
}

static sl_err split_address(const char *address, char *host, size_t host_size, char *port,
                            size_t port_size) {
    const char *colon;
    const char *host_start = address;
    size_t host_len;
    if (address[0] == '[') {
        const char *close = strchr(address, ']');
        if (!close || close[1] != ':')
            return SL_ERR_INVALID;
        host_start = address + 1;
        host_len = (size_t)(close - host_start);
        colon = close + 1;
    } else {
        colon = strrchr(address, ':');
        if (!colon)
            return SL_ERR_INVALID;
        host_len = (size_t)(colon - address);
    }
    size_t port_len = strlen(colon + 1);
    if (host_len == 0 || host_len >= host_size || port_len == 0 || port_len >= port_size ||
        strspn(colon + 1, "0123456789") != port_len)
        return SL_ERR_INVALID;
    memcpy(host, host_start, host_len);
    host[host_len] = '\0';
    memcpy(port, colon + 1, port_len + 1);
    return SL_OK;
}

static sl_err connect_to(const char *address, int64_t deadline, int *fd_out, char *errstr,
                         size_t errstr_size) {
    char host[256], port[8];
    if (split_address(address, host, sizeof(host), port, sizeof(port)))
        return sl_fail(errstr, errstr_size, SL_ERR_INVALID, "bad address '%s'", address);
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    int gai = getaddrinfo(host, port, &hints, &res);
    if (gai)
        return sl_fail(errstr, errstr_size, SL_ERR_IO, "cannot resolve %s: %s", host,
                       gai_strerror(gai));
    sl_err err = SL_ERR_IO;
    int last_errno = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        int fd =
            socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            last_errno = errno;
            continue;
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0 && errno != EINPROGRESS) {
            last_errno = errno;
            close(fd);
            continue;
        }
        err = wait_fd(fd, POLLOUT, deadline);
        int so_error = 0;
        socklen_t len = sizeof(so_error);
        if (err == SL_OK && getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_error, &len) == 0 &&
            so_error == 0) {
            *fd_out = fd;
            freeaddrinfo(res);
            return SL_OK;
        }
        last_errno = so_error;
        close(fd);
        if (err == SL_ERR_TIMEOUT)
            break;
        err = SL_ERR_IO;
    }
    freeaddrinfo(res);
    if (err == SL_ERR_TIMEOUT)
        return sl_fail(errstr, errstr_size, SL_ERR_TIMEOUT, "connect to %s timed out", address);
    return sl_fail(errstr, errstr_size, SL_ERR_IO, "cannot connect to %s: %s", address,
                   last_errno ? strerror(last_errno) : "no address");
}

static sl_err send_all(int fd, const char *data, size_t len, int64_t deadline) {
    while (len > 0) {
        ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
        if (n > 0) {
            data += n;
            len -= (size_t)n;
            continue;
        }
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            return SL_ERR_IO;
        sl_err err = wait_fd(fd, POLLOUT, deadline);
        if (err)
            return err;
    }
    return SL_OK;
}

/* Find header `name` in the head (after the status line); value span in
 * (*value, *value_len), trimmed. Counts occurrences in *count. */
static bool find_header(const char *head, const char *name, const char **value, size_t *value_len,
                        int *count) {
    size_t name_len = strlen(name);
    const char *line = strstr(head, "\r\n");
    bool found = false;
    if (count)
        *count = 0;
    while (line && line[2] != '\0' && !(line[2] == '\r' && line[3] == '\n')) {
        line += 2;
        const char *end = strstr(line, "\r\n");
        if (!end)
            break;
        if ((size_t)(end - line) > name_len && strncasecmp(line, name, name_len) == 0 &&
            line[name_len] == ':') {
            const char *v = line + name_len + 1;
            while (v < end && (*v == ' ' || *v == '\t'))
                v++;
            const char *ve = end;
            while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            if (!found) {
                *value = v;
                *value_len = (size_t)(ve - v);
            }
            found = true;
            if (count)
                (*count)++;
        }
        line = end;
    }
    return found;
}

bool sl_httpc_response_header(const sl_httpc_response *response, const char *name, char *out,
                              size_t out_size) {
    const char *v;
    size_t len;
    if (!response->head || !find_header(response->head, name, &v, &len, NULL) || len >= out_size)
        return false;
    memcpy(out, v, len);
    out[len] = '\0';
    return true;
}

void sl_httpc_response_free(sl_httpc_response *response) {
    if (!response)
        return;
    free(response->head);
    free(response->body);
    response->head = response->body = NULL;
    response->body_len = 0;
}

/* Parse the status line and the framing of a complete head. */
static sl_err parse_head(const char *head, int *status, long long *content_length, char *errstr,
                         size_t errstr_size) {
    if (strncmp(head, "HTTP/1.", 7) != 0 || !isdigit((unsigned char)head[7]) || head[8] != ' ' ||
        !isdigit((unsigned char)head[9]) || !isdigit((unsigned char)head[10]) ||
        !isdigit((unsigned char)head[11]) || (head[12] != ' ' && head[12] != '\r'))
        return sl_fail(errstr, errstr_size, SL_ERR_IO, "malformed status line");
    *status = (head[9] - '0') * 100 + (head[10] - '0') * 10 + (head[11] - '0');
    if (*status < 100)
        return sl_fail(errstr, errstr_size, SL_ERR_IO, "malformed status code");
    const char *v;
    size_t len;
    int count;
    if (find_header(head, "Transfer-Encoding", &v, &len, &count))
        return sl_fail(errstr, errstr_size, SL_ERR_IO, "Transfer-Encoding is not supported");
    *content_length = -1;
    if (find_header(head, "Content-Length", &v, &len, &count)) {
        if (count != 1 || len == 0 || len > 15 || strspn(v, "0123456789") < len)
            return sl_fail(errstr, errstr_size, SL_ERR_IO, "bad Content-Length");
        long long cl = 0;
        for (size_t i = 0; i < len; i++)
            cl = cl * 10 + (v[i] - '0');
        *content_length = cl;
    }
    return SL_OK;
}

static sl_err build_request(const char *address, const char *method, const char *path,
                            const sl_httpc_header *headers, size_t n_headers, size_t body_len,
                            bool has_body, char **out, size_t *out_len) {
    size_t cap = 256 + strlen(method) + strlen(path) + strlen(address);
    for (size_t i = 0; i < n_headers; i++)
        cap += strlen(headers[i].name) + strlen(headers[i].value) + 4;
    char *buf = malloc(cap);
    if (!buf)
        return SL_ERR_NOMEM;
    int n = snprintf(buf, cap, "%s %s HTTP/1.1\r\nHost: %s\r\n", method, path, address);
    size_t len = (size_t)n;
    if (has_body)
        len += (size_t)snprintf(buf + len, cap - len, "Content-Length: %zu\r\n", body_len);
    for (size_t i = 0; i < n_headers; i++)
        len +=
            (size_t)snprintf(buf + len, cap - len, "%s: %s\r\n", headers[i].name, headers[i].value);
    len += (size_t)snprintf(buf + len, cap - len, "\r\n");
    *out = buf;
    *out_len = len;
    return SL_OK;
}

/* ---- kept-alive connections ------------------------------------------------
 *
 * A connection whose answer was completely framed (HTTP/1.1, Content-Length,
 * no "Connection: close", no byte beyond the body) goes back to a small
 * process-wide pool and serves the next request to the same address, so a
 * forward costs no TCP handshake and the owner no new thread. A pooled
 * connection is dropped when it has been idle POOL_IDLE_MS (well below the
 * server's idle timeout) or polls readable (the peer closed it). A request
 * on a reused connection that gets no byte back is retried once on a new
 * connection when it is a GET (the peer closed the idle connection as we
 * sent); any other method then fails (the caller answers 503 with
 * Retry-After), since the peer may have acted on it.
 */

#define POOL_MAX         64
#define POOL_PER_ADDRESS 16
#define POOL_IDLE_MS     2000
#define POOL_ADDRESS_MAX 128

typedef struct idle_conn {
    int fd;
    int64_t since_ms;
    char address[POOL_ADDRESS_MAX];
} idle_conn;

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static idle_conn pool[POOL_MAX];
static size_t pool_n;

/* An idle connection to `address` that still looks open, or -1. */
static int pool_take(const char *address) {
    int64_t now = sl_clock_mono_ms();
    int fd = -1;
    pthread_mutex_lock(&pool_lock);
    for (size_t i = pool_n; i-- > 0 && fd < 0;) {
        bool stale = now - pool[i].since_ms > POOL_IDLE_MS;
        bool mine = !stale && strcmp(pool[i].address, address) == 0;
        if (!stale && !mine)
            continue;
        int candidate = pool[i].fd;
        pool[i] = pool[--pool_n];
        struct pollfd p = {.fd = candidate, .events = POLLIN};
        if (mine && poll(&p, 1, 0) == 0)
            fd = candidate; /* nothing to read: not closed by the peer */
        else
            close(candidate);
    }
    pthread_mutex_unlock(&pool_lock);
    return fd;
}

static void pool_put(const char *address, int fd) {
    if (strlen(address) >= POOL_ADDRESS_MAX) {
        close(fd);
        return;
    }
    pthread_mutex_lock(&pool_lock);
    size_t same = 0;
    for (size_t i = 0; i < pool_n; i++)
        same += strcmp(pool[i].address, address) == 0;
    if (pool_n < POOL_MAX && same < POOL_PER_ADDRESS) {
        pool[pool_n].fd = fd;
        pool[pool_n].since_ms = sl_clock_mono_ms();
        snprintf(pool[pool_n].address, sizeof(pool[pool_n].address), "%s", address);
        pool_n++;
        fd = -1;
    }
    pthread_mutex_unlock(&pool_lock);
    if (fd >= 0)
        close(fd);
}

void sl_httpc_close_idle(void) {
    pthread_mutex_lock(&pool_lock);
    for (size_t i = 0; i < pool_n; i++)
        close(pool[i].fd);
    pool_n = 0;
    pthread_mutex_unlock(&pool_lock);
}

size_t sl_httpc_idle_connections(void) {
    pthread_mutex_lock(&pool_lock);
    size_t n = pool_n;
    pthread_mutex_unlock(&pool_lock);
    return n;
}

/* One request on `fd` and its whole answer. *received: bytes of answer
 * read (0: the peer sent nothing); *reusable: the connection may serve
 * another request. */
static sl_err exchange(int fd, const char *address, const char *request, size_t request_len,
                       const void *body, size_t body_len, int64_t deadline,
                       size_t max_response_bytes, sl_httpc_response *response, size_t *received,
                       bool *reusable, char *errstr, size_t errstr_size) {
    *received = 0;
    *reusable = false;
    sl_err err;
    if ((err = send_all(fd, request, request_len, deadline)) ||
        (body_len && (err = send_all(fd, body, body_len, deadline))))
        return sl_fail(errstr, errstr_size, err, "sending to %s: %s", address,
                       err == SL_ERR_TIMEOUT ? "timed out" : strerror(errno));
    /* One buffer for head + body, never larger than the cap + 1 (the extra
     * byte detects "too large" and holds the NUL). */
    size_t cap = max_response_bytes + 1, len = 0, head_len = 0;
    long long content_length = -1;
    char *buf = malloc(cap);
    if (!buf)
        return sl_fail(errstr, errstr_size, SL_ERR_NOMEM, "out of memory");
    for (;;) {
        if (head_len && content_length >= 0 && len - head_len >= (size_t)content_length)
            break;
        if (len >= max_response_bytes) {
            err = sl_fail(errstr, errstr_size, SL_ERR_FULL, "response from %s exceeds %zu bytes",
                          address, max_response_bytes);
            goto done;
        }
        ssize_t n = recv(fd, buf + len, max_response_bytes - len, 0);
        if (n > 0) {
            len += (size_t)n;
            *received = len;
            if (!head_len) {
                buf[len] = '\0';
                char *end = memmem(buf, len, "\r\n\r\n", 4);
                if (end) {
                    head_len = (size_t)(end - buf) + 4;
                    char saved = buf[head_len];
                    buf[head_len] = '\0';
                    err = parse_head(buf, &response->status, &content_length, errstr, errstr_size);
                    buf[head_len] = saved;
                    if (err)
                        goto done;
                    if (content_length >= 0 &&
                        (unsigned long long)content_length > max_response_bytes - head_len) {
                        err = sl_fail(errstr, errstr_size, SL_ERR_FULL,
                                      "response from %s exceeds %zu bytes", address,
                                      max_response_bytes);
                        goto done;
                    }
                }
            }
            continue;
        }
        if (n == 0) { /* end of the connection */
            if (!head_len || (content_length >= 0 && len - head_len < (size_t)content_length)) {
                err = sl_fail(errstr, errstr_size, SL_ERR_IO, "%s closed the connection early",
                              address);
                goto done;
            }
            break;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            err = sl_fail(errstr, errstr_size, SL_ERR_IO, "reading from %s: %s", address,
                          strerror(errno));
            goto done;
        }
        if ((err = wait_fd(fd, POLLIN, deadline))) {
            sl_fail(errstr, errstr_size, err, "waiting for %s: %s", address,
                    err == SL_ERR_TIMEOUT ? "timed out" : "poll failed");
            goto done;
        }
    }
    size_t body_size = content_length >= 0 ? (size_t)content_length : len - head_len;
    response->head = malloc(head_len + 1);
    response->body = malloc(body_size + 1);
    if (!response->head || !response->body) {
        err = sl_fail(errstr, errstr_size, SL_ERR_NOMEM, "out of memory");
        goto done;
    }
    memcpy(response->head, buf, head_len);
    response->head[head_len] = '\0';
    memcpy(response->body, buf + head_len, body_size);
    response->body[body_size] = '\0';
    response->body_len = body_size;
    const char *v;
    size_t v_len;
    int count;
    bool close_asked = find_header(response->head, "Connection", &v, &v_len, &count) &&
                       v_len == 5 && strncasecmp(v, "close", 5) == 0;
    *reusable = strncmp(response->head, "HTTP/1.1 ", 9) == 0 && content_length >= 0 &&
                len - head_len == (size_t)content_length && !close_asked;
    err = SL_OK;
done:
    free(buf);
    return err;
}

sl_err sl_httpc_request(const char *address, const char *method, const char *path,
                        const sl_httpc_header *headers, size_t n_headers, const void *body,
                        size_t body_len, int timeout_ms, size_t max_response_bytes,
                        sl_httpc_response *response, char *errstr, size_t errstr_size) {
    memset(response, 0, sizeof(*response));
    if (!address || !method || !path || path[0] != '/' || has_crlf(method) || has_crlf(path) ||
        strchr(path, ' ') || n_headers > SL_HTTPC_MAX_HEADERS || timeout_ms <= 0 ||
        max_response_bytes < 16)
        return sl_fail(errstr, errstr_size, SL_ERR_INVALID, "invalid request");
    for (size_t i = 0; i < n_headers; i++)
        if (!headers[i].name || !headers[i].value || has_crlf(headers[i].name) ||
            has_crlf(headers[i].value) || strchr(headers[i].name, ':'))
            return sl_fail(errstr, errstr_size, SL_ERR_INVALID, "invalid header");
    int64_t deadline = sl_clock_mono_ms() + timeout_ms;
    bool has_body = body != NULL || strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 ||
                    strcmp(method, "PATCH") == 0;
    bool may_retry = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    char *request = NULL;
    size_t request_len = 0;
    sl_err err = build_request(address, method, path, headers, n_headers, body_len, has_body,
                               &request, &request_len);
    if (err)
        return sl_fail(errstr, errstr_size, err, "out of memory");
    for (int attempt = 0;; attempt++) {
        int fd = attempt == 0 ? pool_take(address) : -1;
        bool reused = fd >= 0;
        if (!reused && (err = connect_to(address, deadline, &fd, errstr, errstr_size)))
            break;
        size_t received = 0;
        bool reusable = false;
        err = exchange(fd, address, request, request_len, body, body_len, deadline,
                       max_response_bytes, response, &received, &reusable, errstr, errstr_size);
        if (err == SL_OK && reusable) {
            pool_put(address, fd);
            break;
        }
        close(fd);
        if (err == SL_OK)
            break;
        sl_httpc_response_free(response);
        memset(response, 0, sizeof(*response));
        /* The peer closed an idle connection as we reused it: again, fresh. */
        if (!(reused && received == 0 && may_retry && err != SL_ERR_TIMEOUT))
            break;
    }
    free(request);
    return err;
}
