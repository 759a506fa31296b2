/*
 * fuzz_http.h: what the fuzz targets that speak to the HTTP server over
 * loopback share: connect and send raw bytes, and drop the connection with
 * an RST (see fuzz_http_request.c for why not a FIN).
 */
#ifndef SLUICE_FUZZ_HTTP_H
#define SLUICE_FUZZ_HTTP_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tests/fuzz/fuzz.h"

/* Connect to 127.0.0.1:port and send data[0..size); sending stops early
 * when the server has already answered and closed (413, 400), an ordinary
 * outcome; SO_SNDTIMEO bounds a stalled send. Returns the socket. */
static inline int fuzz_http_send(int port, const void *data, size_t size) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    FUZZ_CHECK(fd >= 0);
    struct sockaddr_in addr = {.sin_family = AF_INET,
                               .sin_port = htons((uint16_t)port),
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    FUZZ_CHECK(connect(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0);
    struct timeval send_timeout = {.tv_sec = 1};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &send_timeout, sizeof(send_timeout));
    const char *bytes = data;
    for (size_t sent = 0; sent < size;) {
        ssize_t n = send(fd, bytes + sent, size - sent, MSG_NOSIGNAL);
        if (n <= 0)
            break;
        sent += (size_t)n;
    }
    return fd;
}

/* Close `fd` with an RST. */
static inline void fuzz_http_reset(int fd) {
    struct linger reset = {.l_onoff = 1, .l_linger = 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset));
    close(fd);
}

#endif
