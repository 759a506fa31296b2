/*
 * fuzz_http_framing.c: the strict-framing layer of the HTTP server
 * (server.c check_head) with an oracle.
 *
 * The input is a block of header lines. The target sends
 *   "POST /echo HTTP/1.1\r\nHost: x\r\n" <input> "\r\n\r\n" "hello"
 * on a loopback socket and reads the first status line. Independently of
 * the server it counts, in the input, the lines whose name is
 * Content-Length or Transfer-Encoding; when both appear, or Content-Length
 * appears twice, the answer must be 400 (anything else is a framing
 * ambiguity let through: the finding). Crashes and sanitizer reports in the
 * server are findings too. One server for the process, as in
 * fuzz_http_request.c.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "processor/http/server.h"
#include "tests/fuzz/fuzz_http.h"

#define MAX_INPUT 4096

static sl_http_server *server;

static void echo(void *opaque, const sl_http_request *req, sl_http_response *resp) {
    (void)opaque;
    size_t len;
    const char *body = sl_http_request_body(req, &len);
    sl_http_respond(resp, 200, "text/plain", body ? body : "", body ? len : 0);
}

static void stop_server(void) {
    sl_http_server_destroy(server);
    server = NULL;
}

static void start_server(void) {
    sl_http_options options = {.host = "127.0.0.1",
                               .port = 0,
                               .threads = 2,
                               .max_connections = 16,
                               .connection_timeout_s = 2,
                               .max_body_bytes = 1024};
    char errstr[256];
    const sl_logger quiet = {.fn = NULL};
    server = sl_http_server_new(&options, &quiet, errstr, sizeof(errstr));
    FUZZ_CHECK(server != NULL);
    FUZZ_CHECK(sl_http_route(server, "POST", "/echo", echo, NULL) == SL_OK);
    FUZZ_CHECK(sl_http_server_start(server, errstr, sizeof(errstr)) == SL_OK);
    atexit(stop_server);
}

/* Lines of `data` (split at LF, a CR before it dropped) whose name, up to
 * the colon, is `name` exactly (case-insensitive). */
static int count_field(const uint8_t *data, size_t size, const char *name) {
    size_t name_len = strlen(name);
    int count = 0;
    for (size_t start = 0; start < size;) {
        const uint8_t *lf = memchr(data + start, '\n', size - start);
        size_t end = lf ? (size_t)(lf - data) : size;
        if (end - start > name_len && data[start + name_len] == ':' &&
            strncasecmp((const char *)data + start, name, name_len) == 0)
            count++;
        start = end + 1;
    }
    return count;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > MAX_INPUT)
        return 0;
    if (!server)
        start_server();
    static const char head[] = "POST /echo HTTP/1.1\r\nHost: x\r\n";
    static const char tail[] = "\r\n\r\nhello";
    static char request[sizeof(head) + MAX_INPUT + sizeof(tail)];
    size_t len = 0;
    memcpy(request, head, sizeof(head) - 1), len += sizeof(head) - 1;
    memcpy(request + len, data, size), len += size;
    memcpy(request + len, tail, sizeof(tail) - 1), len += sizeof(tail) - 1;

    int fd = fuzz_http_send(sl_http_server_port(server), request, len);
    char reply[256] = "";
    size_t got = 0;
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    while (got < 16 && poll(&pfd, 1, 500) > 0) {
        ssize_t n = recv(fd, reply + got, sizeof(reply) - 1 - got, 0);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    reply[got] = '\0';
    fuzz_http_reset(fd);

    int content_lengths = count_field(data, size, "content-length");
    int transfer_encodings = count_field(data, size, "transfer-encoding");
    bool ambiguous = content_lengths > 1 || (content_lengths > 0 && transfer_encodings > 0);
    /* No answer at all (MHD refused the line itself and closed) is fine. */
    if (ambiguous && got > 0)
        FUZZ_CHECK(strncmp(reply, "HTTP/1.1 400", 12) == 0);
    return 0;
}
