/*
 * clock.h: the two clocks sluice reads, in milliseconds.
 *
 * sl_clock_mono_ms measures durations and deadlines (never jumps);
 * sl_clock_wall_ms stamps records and expiries (what other machines agree
 * on). One definition each, so a test or a benchmark that wants to count
 * clock reads has one place to look. Any thread.
 */
#ifndef SLUICE_CLOCK_H
#define SLUICE_CLOCK_H

#include <stdint.h>
#include <time.h>

/* CLOCK_MONOTONIC in milliseconds. */
int64_t sl_clock_mono_ms(void);

/* CLOCK_MONOTONIC in microseconds, for timings finer than a millisecond
 * (histograms of per-record work). */
int64_t sl_clock_mono_us(void);

/* CLOCK_REALTIME in milliseconds since the Unix epoch. */
int64_t sl_clock_wall_ms(void);

/* `ts` plus `ms` milliseconds, normalized: an absolute deadline for
 * pthread_cond_timedwait on a clock of the caller's choosing. */
struct timespec sl_clock_add_ms(struct timespec ts, int64_t ms);

/* CLOCK_MONOTONIC now plus `ms` milliseconds: an absolute deadline for
 * pthread_cond_timedwait on a condition variable set to CLOCK_MONOTONIC. */
struct timespec sl_clock_mono_deadline(int64_t ms);

#endif
