/*
 * metrics.h: a thread-safe, bounded metrics registry rendered in the
 * Prometheus text exposition format 0.0.4 (GET /metrics).
 *
 * One registry per instance (no global state). A metric family is a name with
 * a type (counter, gauge, histogram), a help text and a fixed set of label
 * names; a series is one family plus one value per label. Callers look a
 * series up once (at task creation, say) and keep the pointer: the hot path is
 * then one relaxed atomic operation, without locks or allocation.
 *
 * Bounds and misuse. The registry never grows past `max_series` series and
 * never returns NULL. A request it cannot honour gets a shared no-op "sink"
 * series of the right type (updates to it are accepted and never rendered),
 * and one of the registry's own counters, always rendered first, goes up:
 *
 *   sluice_metrics_series_dropped_total   capacity: max_series reached or out
 *                                         of memory (raise the bound)
 *   sluice_metrics_misuse_total           a programming error: an invalid
 *                                         metric or label name, bad histogram
 *                                         bounds, or a name registered again
 *                                         with another type, help, label-name
 *                                         set or bounds, or colliding with a
 *                                         histogram's _bucket/_sum/_count
 *
 * Each sink answer increments exactly one of them. The registry's own two
 * series do not count towards max_series and cannot be removed.
 *
 * Names follow the Prometheus grammar: metric names [a-zA-Z_:][a-zA-Z0-9_:]*,
 * label names [a-zA-Z_][a-zA-Z0-9_]* not starting with "__" (and not "le" on
 * a histogram), each at most SL_METRICS_MAX_NAME bytes. By convention a
 * counter's name ends in "_total"; this is not enforced. Label values are
 * copied, truncated to SL_METRICS_MAX_LABEL_VALUE bytes at a UTF-8 character
 * boundary, and invalid UTF-8 bytes are replaced by '?' (a scrape with
 * invalid UTF-8 would be rejected whole). Help texts are treated the same way
 * with SL_METRICS_MAX_HELP. Label order does not matter: {"a","1","b","2"}
 * and {"b","2","a","1"} are the same series.
 *
 * Output order is deterministic: families in order of first registration,
 * series within a family in order of creation.
 *
 * Numbers are formatted with the C library in the "C" numeric locale (sluice
 * never calls setlocale); floats use the shortest "%.15g".."%.17g" form that
 * reads back exactly, and +Inf, -Inf, NaN.
 */
#ifndef SLUICE_METRICS_H
#define SLUICE_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "processor/base/error.h"

#define SL_METRICS_MAX_NAME        128  /* bytes in a metric or label name */
#define SL_METRICS_MAX_LABELS      16   /* label pairs per series */
#define SL_METRICS_MAX_LABEL_VALUE 256  /* bytes kept of a label value */
#define SL_METRICS_MAX_HELP        1024 /* bytes kept of a help text */
#define SL_METRICS_MAX_BOUNDS      32   /* histogram upper bounds (+Inf is implicit) */

#define SL_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

typedef struct sl_metrics sl_metrics; /* the registry: one per instance */
typedef struct sl_counter sl_counter; /* one time series (name + label values) */
typedef struct sl_gauge sl_gauge;
typedef struct sl_histogram sl_histogram;

/* A registry holding at most `max_series` caller series (0 is allowed: every
 * lookup then answers the sink). NULL on allocation failure. The caller owns
 * it and frees it with sl_metrics_destroy. Any thread. */
sl_metrics *sl_metrics_new(size_t max_series);

/* Free the registry and every series; all series pointers it handed out
 * become invalid. No other thread may use the registry or its series any
 * more (stop the HTTP server serving it first). NULL is fine. */
void sl_metrics_destroy(sl_metrics *m);

/* Get or create the series `name{labels}`. `name`, `help` and `labels` are
 * borrowed for the call and copied (a NULL help is the empty text). `labels` is NULL or a
 * NULL-terminated array {"name1", "value1", "name2", "value2", ..., NULL}. The same name must
 * always come with the same type, help and label names (in any order), and
 * for histograms the same bounds. The returned pointer is owned by the
 * registry and stays valid until sl_metrics_remove of that pointer or
 * sl_metrics_destroy. Never NULL: see the file comment for the sink. `m` may
 * be NULL (a component run without metrics): the answer is then a
 * process-wide sink. Any thread (takes the registry lock).
 *
 * Histograms: `bounds` are n_bounds finite upper bounds, strictly
 * increasing, at most SL_METRICS_MAX_BOUNDS (+Inf is implicit and must not be
 * given); copied. n_bounds may be 0 (bounds may then be NULL). */
sl_counter *sl_metrics_counter(sl_metrics *m, const char *name, const char *help,
                               const char *const *labels);
sl_gauge *sl_metrics_gauge(sl_metrics *m, const char *name, const char *help,
                           const char *const *labels);
sl_histogram *sl_metrics_histogram(sl_metrics *m, const char *name, const char *help,
                                   const char *const *labels, const double *bounds,
                                   size_t n_bounds);

/* Updates: lock-free, any thread, never allocate. The series must be one the
 * registry handed out and not yet removed. A counter wraps at 2^64. */
void sl_counter_add(sl_counter *c, uint64_t n);
void sl_gauge_set(sl_gauge *g, double v);
void sl_gauge_add(sl_gauge *g, double delta); /* CAS loop on the bit pattern */
/* A value equal to a bound falls into that bound's bucket; NaN falls into
 * +Inf only (and makes the sum NaN, as in the Prometheus clients). */
void sl_histogram_observe(sl_histogram *h, double v);

/* Current values (tests, health checks). Lock-free, any thread. A
 * histogram's count is the total of its buckets. */
uint64_t sl_counter_value(const sl_counter *c);
double sl_gauge_value(const sl_gauge *g);
uint64_t sl_histogram_count(const sl_histogram *h);
double sl_histogram_sum(const sl_histogram *h);

/* Remove a series (when a task is revoked, its per-partition series go) and
 * free it; when it was its family's last series the family goes too, so the
 * name may later be registered afresh. The caller guarantees that no thread
 * uses the pointer any more. Removing the sink, one of the registry's own
 * series, NULL or a pointer the registry does not hold is a no-op; removing
 * the same pointer twice is a bug (the address may have been reused by a
 * newer series). Any thread (takes the registry lock). */
void sl_metrics_remove(sl_metrics *m, void *series);

/* Render every series in Prometheus text format 0.0.4 into a malloc'd,
 * NUL-terminated buffer: *out is the caller's to free, *len its length
 * without the NUL. Series of one family share one # HELP and one # TYPE line.
 * Safe while other threads update series: each value is read atomically, but
 * values of different series (and a histogram's sum against its buckets) may
 * be from slightly different moments; a histogram's +Inf bucket always equals
 * its _count. SL_ERR_INVALID for NULL arguments, SL_ERR_NOMEM (nothing to
 * free) if the buffer cannot grow. Any thread (holds the registry lock while
 * it formats, so registrations wait). */
sl_err sl_metrics_render(sl_metrics *m, char **out, size_t *len);

#endif
