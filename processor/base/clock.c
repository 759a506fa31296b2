/* clock.c: see clock.h. */
#include "processor/base/clock.h"

static int64_t to_ms(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t sl_clock_mono_ms(void) {
    return to_ms(CLOCK_MONOTONIC);
}

int64_t sl_clock_mono_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t sl_clock_wall_ms(void) {
    return to_ms(CLOCK_REALTIME);
}

struct timespec sl_clock_add_ms(struct timespec ts, int64_t ms) {
    ts.tv_sec += (time_t)(ms / 1000);
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec += 1;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

struct timespec sl_clock_mono_deadline(int64_t ms) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return sl_clock_add_ms(now, ms);
}
