/*
 * fuzz.h: what every fuzz target under tests/fuzz/ shares.
 *
 * Each fuzz_<name>.c defines LLVMFuzzerTestOneInput and is linked either with
 * libFuzzer (`make fuzz`, clang) or with replay.c (`make test`, gcc), which
 * runs the committed corpus tests/fuzz/corpus/<name>/ through it. A target
 * keeps no state between inputs that could change its result, frees
 * everything it allocates, and calls abort() when an invariant it checks
 * fails, so both drivers report the input.
 */
#ifndef SLUICE_FUZZ_H
#define SLUICE_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/types.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* abort() with a message when `cond` is false: an invariant of the code
 * under test does not hold for this input. */
#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: fuzz invariant failed: %s\n", __FILE__, __LINE__, #cond);      \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* An anonymous in-memory file holding data[0..size), for parsers that take a
 * path: *path receives "/proc/self/fd/N" (path_size bytes at most). Returns
 * the descriptor (the caller closes it) or -1. */
static inline int fuzz_memfile(const void *data, size_t size, char *path, size_t path_size) {
    int fd = memfd_create("fuzz-input", MFD_CLOEXEC);
    if (fd < 0)
        return -1;
    const char *bytes = data;
    size_t left = size;
    while (left > 0) {
        ssize_t written = write(fd, bytes, left);
        if (written <= 0) {
            close(fd);
            return -1;
        }
        bytes += written;
        left -= (size_t)written;
    }
    snprintf(path, path_size, "/proc/self/fd/%d", fd);
    return fd;
}

#endif
