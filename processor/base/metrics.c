/*
 * metrics.c: the metrics registry and its Prometheus text rendering.
 *
 * Layout. The registry holds a singly linked list of families (in order of
 * first registration), each holding a singly linked list of its series (in
 * order of creation). Every series type starts with a `series` head, so a
 * series pointer is also a pointer to its head: sl_metrics_remove finds a
 * pointer by comparing addresses, never by dereferencing what it was given.
 *
 * Invariants:
 *   - families, series, names, help and label texts are created, read and
 *     freed only under `lock`; the hot path touches only the atomics of one
 *     series, so updates never take the lock and render (under the lock)
 *     cannot see a series being freed;
 *   - a family in the list has at least one series, except the registry's own
 *     (pinned) families, which always have exactly one and are never removed;
 *   - n_series counts caller series (not the pinned ones) and never exceeds
 *     max_series;
 *   - a series' identity is its label text `a="x",b="y"`: the escaped,
 *     sanitized values in the family's label-name order. Escaping is
 *     injective, so equal texts mean equal label values;
 *   - help texts are stored escaped, so equal stored texts mean equal help;
 *   - doubles live in _Atomic uint64_t as their bit patterns;
 *   - histogram buckets are stored per bucket (not cumulative) and summed at
 *     render: observe is one add, and the +Inf bucket equals _count.
 *
 * A lookup: validate names and bounds without the lock (-> misuse), escape
 * the help text, then under the lock find the family (a different type, help,
 * label set or bounds -> misuse; a new name colliding with a histogram's
 * derived names -> misuse), build the label text, return the existing series
 * or create one (past max_series or out of memory -> dropped). A sink answer
 * increments exactly one of the registry's own two counters.
 */
#include "processor/base/metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2 && ATOMIC_LONG_LOCK_FREE == 2,
               "metric updates rely on lock-free 64-bit atomics");

#define DROPPED_NAME "sluice_metrics_series_dropped_total"
#define DROPPED_HELP                                                                               \
    "Series not registered because the registry was full (max_series) or out of memory; "          \
    "their updates are lost."
#define MISUSE_NAME "sluice_metrics_misuse_total"
#define MISUSE_HELP                                                                                \
    "Metric registrations rejected as invalid (metric or label name, histogram bounds) or "        \
    "conflicting with an earlier registration of the same name."

typedef enum metric_kind { KIND_COUNTER, KIND_GAUGE, KIND_HISTOGRAM } metric_kind;

typedef struct family family;

/* First member of every series type. */
typedef struct series {
    family *family;      /* NULL for a sink */
    struct series *next; /* next series of the family */
    char *labels;        /* label text 'a="x",b="y"' (escaped); "" without labels */
} series;

struct sl_counter {
    series head;
    _Atomic uint64_t value;
};

struct sl_gauge {
    series head;
    _Atomic uint64_t bits;
};

struct sl_histogram {
    series head;
    size_t n_bounds;
    const double *bounds;                                /* the family's; NULL for a sink */
    _Atomic uint64_t buckets[SL_METRICS_MAX_BOUNDS + 1]; /* per bucket; last is +Inf */
    _Atomic uint64_t sum_bits;
};

struct family {
    family *next;
    metric_kind kind;
    bool pinned; /* the registry's own: never removed, outside max_series */
    char *name;
    char *help; /* escaped for a HELP line */
    size_t n_labels;
    char **label_names;
    size_t n_bounds;
    double bounds[SL_METRICS_MAX_BOUNDS];
    series *first, *last;
};

struct sl_metrics {
    pthread_mutex_t lock;
    size_t max_series;
    size_t n_series;
    family *first, *last;
    sl_counter *dropped; /* pinned: sluice_metrics_series_dropped_total */
    sl_counter *misuse;  /* pinned: sluice_metrics_misuse_total */
    sl_counter sink_counter;
    sl_gauge sink_gauge;
    sl_histogram sink_histogram;
};

/* Answers for a NULL registry. Write-only: nothing ever reads them. */
static sl_counter null_sink_counter;
static sl_gauge null_sink_gauge;
static sl_histogram null_sink_histogram;

/* ---- growable text buffer -------------------------------------------- */

/* Grows by doubling with checked arithmetic; once an allocation fails it
 * stays failed and every append is a no-op, so callers check once at the
 * end. data is NUL-terminated whenever it is non-NULL. */
typedef struct strbuf {
    char *data;
    size_t len, cap;
    bool failed;
} strbuf;

static bool sb_reserve(strbuf *b, size_t extra) {
    if (b->failed)
        return false;
    if (b->cap > b->len && extra < b->cap - b->len)
        return true; /* room for extra bytes and the NUL */
    if (extra > SIZE_MAX - 1 - b->len) {
        b->failed = true;
        return false;
    }
    size_t need = b->len + extra + 1;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    char *grown = realloc(b->data, cap);
    if (!grown) {
        b->failed = true;
        return false;
    }
    if (!b->data)
        grown[0] = '\0';
    b->data = grown;
    b->cap = cap;
    return true;
}

static void sb_append(strbuf *b, const char *bytes, size_t n) {
    if (!sb_reserve(b, n))
        return;
    memcpy(b->data + b->len, bytes, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static void sb_puts(strbuf *b, const char *s) {
    sb_append(b, s, strlen(s));
}

static void sb_u64(strbuf *b, uint64_t v) {
    char digits[24];
    int n = snprintf(digits, sizeof(digits), "%llu", (unsigned long long)v);
    sb_append(b, digits, (size_t)n);
}

/* Shortest of %.15g..%.17g that reads back as v; Prometheus spellings for
 * the non-finite values. */
static void format_double(char *buf, size_t size, double v) {
    if (isnan(v)) {
        snprintf(buf, size, "%s", "NaN");
        return;
    }
    if (isinf(v)) {
        snprintf(buf, size, "%s", v > 0 ? "+Inf" : "-Inf");
        return;
    }
    for (int precision = 15; precision <= 17; precision++) {
        snprintf(buf, size, "%.*g", precision, v);
        if (strtod(buf, NULL) == v)
            return;
    }
}

static void sb_double(strbuf *b, double v) {
    char text[32];
    format_double(text, sizeof(text), v);
    sb_puts(b, text);
}

/* Length (1..4) of the valid UTF-8 sequence starting at s, or 0 if s does not
 * start one (overlong forms and surrogates are invalid, as for Prometheus).
 * s is NUL-terminated and NUL fails every continuation check, so this never
 * reads past the terminator. */
static size_t utf8_sequence(const unsigned char *s) {
    unsigned char lead = s[0], low = 0x80, high = 0xBF;
    size_t n;
    if (lead < 0x80)
        return 1;
    if (lead >= 0xC2 && lead <= 0xDF) {
        n = 2;
    } else if (lead >= 0xE0 && lead <= 0xEF) {
        n = 3;
        if (lead == 0xE0)
            low = 0xA0;
        else if (lead == 0xED)
            high = 0x9F;
    } else if (lead >= 0xF0 && lead <= 0xF4) {
        n = 4;
        if (lead == 0xF0)
            low = 0x90;
        else if (lead == 0xF4)
            high = 0x8F;
    } else {
        return 0;
    }
    if (s[1] < low || s[1] > high)
        return 0;
    for (size_t i = 2; i < n; i++)
        if (s[i] < 0x80 || s[i] > 0xBF)
            return 0;
    return n;
}

/* Append `text` escaped for the exposition format: backslash and newline
 * always, the double quote too when `in_quotes` (label values). Invalid UTF-8
 * bytes become '?'; at most max_bytes of (unescaped) text are kept, cut at a
 * character boundary. */
static void sb_escaped(strbuf *b, const char *text, size_t max_bytes, bool in_quotes) {
    const unsigned char *p = (const unsigned char *)text;
    size_t kept = 0;
    while (*p) {
        size_t n = utf8_sequence(p);
        if (n > 1) {
            if (n > max_bytes - kept)
                break;
            sb_append(b, (const char *)p, n);
            kept += n;
            p += n;
            continue;
        }
        if (kept == max_bytes)
            break;
        char c = n == 0 ? '?' : (char)*p;
        if (c == '\\')
            sb_puts(b, "\\\\");
        else if (c == '\n')
            sb_puts(b, "\\n");
        else if (c == '"' && in_quotes)
            sb_puts(b, "\\\"");
        else
            sb_append(b, &c, 1);
        kept++;
        p++;
    }
}

/* ---- names ------------------------------------------------------------- */

static bool is_letter_or_underscore(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static bool is_digit(char c) {
    return c >= '0' && c <= '9';
}

/* [a-zA-Z_:][a-zA-Z0-9_:]*, at most SL_METRICS_MAX_NAME bytes. */
static bool valid_metric_name(const char *name) {
    if (!name || !name[0] || is_digit(name[0]))
        return false;
    size_t i = 0;
    for (; name[i]; i++)
        if (i == SL_METRICS_MAX_NAME ||
            !(is_letter_or_underscore(name[i]) || is_digit(name[i]) || name[i] == ':'))
            return false;
    return true;
}

/* [a-zA-Z_][a-zA-Z0-9_]*, not starting with "__" (reserved by Prometheus),
 * at most SL_METRICS_MAX_NAME bytes. */
static bool valid_label_name(const char *name) {
    if (!name || !name[0] || is_digit(name[0]) || strncmp(name, "__", 2) == 0)
        return false;
    for (size_t i = 0; name[i]; i++)
        if (i == SL_METRICS_MAX_NAME || !(is_letter_or_underscore(name[i]) || is_digit(name[i])))
            return false;
    return true;
}

/* True if `other` is one of the sample names a histogram called `base`
 * renders (base_bucket, base_sum, base_count). */
static bool is_histogram_sample_name(const char *base, const char *other) {
    size_t n = strlen(base);
    if (strncmp(other, base, n) != 0)
        return false;
    const char *suffix = other + n;
    return strcmp(suffix, "_bucket") == 0 || strcmp(suffix, "_sum") == 0 ||
           strcmp(suffix, "_count") == 0;
}

/* ---- lookup ------------------------------------------------------------ */

/* A registration request, validated; every pointer is the caller's. */
typedef struct request {
    metric_kind kind;
    const char *name;
    size_t n_labels;
    const char *label_names[SL_METRICS_MAX_LABELS];
    const char *label_values[SL_METRICS_MAX_LABELS];
    const double *bounds;
    size_t n_bounds;
} request;

static bool parse_request(request *req, metric_kind kind, const char *name,
                          const char *const *labels, const double *bounds, size_t n_bounds) {
    memset(req, 0, sizeof(*req));
    req->kind = kind;
    req->name = name;
    if (!valid_metric_name(name))
        return false;
    for (size_t i = 0; labels && labels[i]; i += 2) {
        const char *label = labels[i], *value = labels[i + 1];
        if (!value || req->n_labels == SL_METRICS_MAX_LABELS || !valid_label_name(label))
            return false;
        if (kind == KIND_HISTOGRAM && strcmp(label, "le") == 0)
            return false;
        for (size_t j = 0; j < req->n_labels; j++)
            if (strcmp(req->label_names[j], label) == 0)
                return false;
        req->label_names[req->n_labels] = label;
        req->label_values[req->n_labels] = value;
        req->n_labels++;
    }
    if (kind != KIND_HISTOGRAM)
        return true;
    if (n_bounds > SL_METRICS_MAX_BOUNDS || (n_bounds > 0 && !bounds))
        return false;
    for (size_t i = 0; i < n_bounds; i++)
        if (!isfinite(bounds[i]) || (i > 0 && !(bounds[i] > bounds[i - 1])))
            return false;
    req->bounds = bounds;
    req->n_bounds = n_bounds;
    return true;
}

static family *find_family(sl_metrics *m, const char *name) {
    for (family *f = m->first; f; f = f->next)
        if (strcmp(f->name, name) == 0)
            return f;
    return NULL;
}

/* The caller's value for label `name`; NULL if the request has no such
 * label. */
static const char *request_label_value(const request *req, const char *name) {
    for (size_t i = 0; i < req->n_labels; i++)
        if (strcmp(req->label_names[i], name) == 0)
            return req->label_values[i];
    return NULL;
}

static bool family_matches(const family *f, const request *req, const char *help) {
    if (f->kind != req->kind || strcmp(f->help, help) != 0 || f->n_labels != req->n_labels)
        return false;
    /* Same count and the request has no duplicate names: same set. */
    for (size_t i = 0; i < f->n_labels; i++)
        if (!request_label_value(req, f->label_names[i]))
            return false;
    if (f->kind != KIND_HISTOGRAM)
        return true;
    if (f->n_bounds != req->n_bounds)
        return false;
    for (size_t i = 0; i < f->n_bounds; i++)
        if (f->bounds[i] != req->bounds[i])
            return false;
    return true;
}

static bool collides_with_a_histogram(const sl_metrics *m, const request *req) {
    for (const family *f = m->first; f; f = f->next) {
        if (f->kind == KIND_HISTOGRAM && is_histogram_sample_name(f->name, req->name))
            return true;
        if (req->kind == KIND_HISTOGRAM && is_histogram_sample_name(req->name, f->name))
            return true;
    }
    return false;
}

static void family_free(family *f) {
    if (!f)
        return;
    for (size_t i = 0; i < f->n_labels; i++)
        free(f->label_names[i]);
    free(f->label_names);
    free(f->name);
    free(f->help);
    free(f);
}

/* A family for `req` with no series yet; takes *help on success (sets it to
 * NULL). NULL if out of memory. */
static family *family_new(const request *req, char **help, bool pinned) {
    family *f = calloc(1, sizeof(*f));
    if (!f)
        return NULL;
    f->kind = req->kind;
    f->pinned = pinned;
    f->name = strdup(req->name);
    f->label_names = calloc(req->n_labels ? req->n_labels : 1, sizeof(*f->label_names));
    if (!f->name || !f->label_names) {
        family_free(f);
        return NULL;
    }
    for (size_t i = 0; i < req->n_labels; i++) {
        f->label_names[i] = strdup(req->label_names[i]);
        if (!f->label_names[i]) {
            family_free(f);
            return NULL;
        }
        f->n_labels++;
    }
    f->n_bounds = req->n_bounds;
    if (req->n_bounds)
        memcpy(f->bounds, req->bounds, req->n_bounds * sizeof(*req->bounds));
    f->help = *help;
    *help = NULL;
    return f;
}

/* A series of family f; takes `labels` on success. NULL if out of memory. */
static series *series_new(family *f, char *labels) {
    series *s;
    switch (f->kind) {
    case KIND_COUNTER:
        s = calloc(1, sizeof(sl_counter));
        break;
    case KIND_GAUGE:
        s = calloc(1, sizeof(sl_gauge));
        break;
    default: {
        sl_histogram *h = calloc(1, sizeof(*h));
        if (h) {
            h->n_bounds = f->n_bounds;
            h->bounds = f->bounds;
        }
        s = h ? &h->head : NULL;
        break;
    }
    }
    if (!s)
        return NULL;
    s->family = f;
    s->labels = labels;
    return s;
}

static void series_free(series *s) {
    free(s->labels);
    free(s);
}

/* The label text of req's values in `order` (the family's label names). */
static void build_label_text(strbuf *b, const request *req, const char *const *order, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            sb_puts(b, ",");
        sb_puts(b, order[i]);
        sb_puts(b, "=\"");
        sb_escaped(b, request_label_value(req, order[i]), SL_METRICS_MAX_LABEL_VALUE, true);
        sb_puts(b, "\"");
    }
    sb_reserve(b, 0); /* "" for no labels */
}

typedef enum outcome { FOUND, MISUSE, DROPPED } outcome;

/* Find or create req's series; *help (escaped) may be taken. Lock held. */
static outcome register_locked(sl_metrics *m, const request *req, char **help, bool pinned,
                               series **out) {
    family *f = find_family(m, req->name);
    if (f ? !family_matches(f, req, *help) : collides_with_a_histogram(m, req))
        return MISUSE;
    strbuf labels = {0};
    if (f)
        build_label_text(&labels, req, (const char *const *)f->label_names, f->n_labels);
    else
        build_label_text(&labels, req, req->label_names, req->n_labels);
    if (labels.failed) {
        free(labels.data);
        return DROPPED;
    }
    for (series *s = f ? f->first : NULL; s; s = s->next) {
        if (strcmp(s->labels, labels.data) == 0) {
            free(labels.data);
            *out = s;
            return FOUND;
        }
    }
    if (!pinned && m->n_series >= m->max_series) {
        free(labels.data);
        return DROPPED;
    }
    family *created = NULL;
    if (!f) {
        f = created = family_new(req, help, pinned);
        if (!f) {
            free(labels.data);
            return DROPPED;
        }
    }
    series *s = series_new(f, labels.data);
    if (!s) {
        free(labels.data);
        family_free(created);
        return DROPPED;
    }
    if (f->last)
        f->last->next = s;
    else
        f->first = s;
    f->last = s;
    if (created) {
        if (m->last)
            m->last->next = created;
        else
            m->first = created;
        m->last = created;
    }
    if (!pinned)
        m->n_series++;
    *out = s;
    return FOUND;
}

/* The series, or NULL after counting why there is none. */
static series *lookup(sl_metrics *m, metric_kind kind, const char *name, const char *help,
                      const char *const *labels, const double *bounds, size_t n_bounds) {
    request req;
    if (!parse_request(&req, kind, name, labels, bounds, n_bounds)) {
        sl_counter_add(m->misuse, 1);
        return NULL;
    }
    strbuf help_text = {0};
    sb_escaped(&help_text, help ? help : "", SL_METRICS_MAX_HELP, false);
    if (!sb_reserve(&help_text, 0)) {
        free(help_text.data);
        sl_counter_add(m->dropped, 1);
        return NULL;
    }
    series *found = NULL;
    pthread_mutex_lock(&m->lock);
    outcome result = register_locked(m, &req, &help_text.data, false, &found);
    pthread_mutex_unlock(&m->lock);
    free(help_text.data); /* NULL if a new family took it */
    if (result == MISUSE)
        sl_counter_add(m->misuse, 1);
    else if (result == DROPPED)
        sl_counter_add(m->dropped, 1);
    return result == FOUND ? found : NULL;
}

/* One of the registry's own counters (no labels), or NULL. */
static sl_counter *own_counter(sl_metrics *m, const char *name, const char *help) {
    request req = {.kind = KIND_COUNTER, .name = name};
    char *help_copy = strdup(help); /* a constant without characters to escape */
    if (!help_copy)
        return NULL;
    series *s = NULL;
    outcome result = register_locked(m, &req, &help_copy, true, &s);
    free(help_copy);
    return result == FOUND ? (sl_counter *)s : NULL;
}

sl_metrics *sl_metrics_new(size_t max_series) {
    sl_metrics *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    if (pthread_mutex_init(&m->lock, NULL) != 0) {
        free(m);
        return NULL;
    }
    m->max_series = max_series;
    m->dropped = own_counter(m, DROPPED_NAME, DROPPED_HELP);
    m->misuse = own_counter(m, MISUSE_NAME, MISUSE_HELP);
    if (!m->dropped || !m->misuse) {
        sl_metrics_destroy(m);
        return NULL;
    }
    return m;
}

void sl_metrics_destroy(sl_metrics *m) {
    if (!m)
        return;
    family *f = m->first;
    while (f) {
        family *next_family = f->next;
        series *s = f->first;
        while (s) {
            series *next_series = s->next;
            series_free(s);
            s = next_series;
        }
        family_free(f);
        f = next_family;
    }
    pthread_mutex_destroy(&m->lock);
    free(m);
}

sl_counter *sl_metrics_counter(sl_metrics *m, const char *name, const char *help,
                               const char *const *labels) {
    if (!m)
        return &null_sink_counter;
    series *s = lookup(m, KIND_COUNTER, name, help, labels, NULL, 0);
    return s ? (sl_counter *)s : &m->sink_counter;
}

sl_gauge *sl_metrics_gauge(sl_metrics *m, const char *name, const char *help,
                           const char *const *labels) {
    if (!m)
        return &null_sink_gauge;
    series *s = lookup(m, KIND_GAUGE, name, help, labels, NULL, 0);
    return s ? (sl_gauge *)s : &m->sink_gauge;
}

sl_histogram *sl_metrics_histogram(sl_metrics *m, const char *name, const char *help,
                                   const char *const *labels, const double *bounds,
                                   size_t n_bounds) {
    if (!m)
        return &null_sink_histogram;
    series *s = lookup(m, KIND_HISTOGRAM, name, help, labels, bounds, n_bounds);
    return s ? (sl_histogram *)s : &m->sink_histogram;
}

void sl_metrics_remove(sl_metrics *m, void *target) {
    if (!m || !target)
        return;
    pthread_mutex_lock(&m->lock);
    for (family *f = m->first, *prev_family = NULL; f; prev_family = f, f = f->next) {
        series *prev = NULL, *s = f->first;
        while (s && (void *)s != target)
            prev = s, s = s->next;
        if (!s)
            continue;
        if (f->pinned)
            break;
        if (prev)
            prev->next = s->next;
        else
            f->first = s->next;
        if (f->last == s)
            f->last = prev;
        series_free(s);
        m->n_series--;
        if (!f->first) {
            if (prev_family)
                prev_family->next = f->next;
            else
                m->first = f->next;
            if (m->last == f)
                m->last = prev_family;
            family_free(f);
        }
        break;
    }
    pthread_mutex_unlock(&m->lock);
}

/* ---- updates (lock-free) ----------------------------------------------- */

static uint64_t bits_of(double v) {
    uint64_t bits;
    memcpy(&bits, &v, sizeof(bits));
    return bits;
}

static double double_of(uint64_t bits) {
    double v;
    memcpy(&v, &bits, sizeof(v));
    return v;
}

static void atomic_add_double(_Atomic uint64_t *cell, double delta) {
    uint64_t old = atomic_load_explicit(cell, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(cell, &old, bits_of(double_of(old) + delta),
                                                  memory_order_relaxed, memory_order_relaxed))
        ; /* `old` was refreshed by the failed exchange */
}

void sl_counter_add(sl_counter *c, uint64_t n) {
    atomic_fetch_add_explicit(&c->value, n, memory_order_relaxed);
}

void sl_gauge_set(sl_gauge *g, double v) {
    atomic_store_explicit(&g->bits, bits_of(v), memory_order_relaxed);
}

void sl_gauge_add(sl_gauge *g, double delta) {
    atomic_add_double(&g->bits, delta);
}

void sl_histogram_observe(sl_histogram *h, double v) {
    size_t bucket = 0;
    while (bucket < h->n_bounds && !(v <= h->bounds[bucket])) /* NaN: +Inf */
        bucket++;
    atomic_fetch_add_explicit(&h->buckets[bucket], 1, memory_order_relaxed);
    atomic_add_double(&h->sum_bits, v);
}

uint64_t sl_counter_value(const sl_counter *c) {
    return atomic_load_explicit(&c->value, memory_order_relaxed);
}

double sl_gauge_value(const sl_gauge *g) {
    return double_of(atomic_load_explicit(&g->bits, memory_order_relaxed));
}

uint64_t sl_histogram_count(const sl_histogram *h) {
    uint64_t count = 0;
    for (size_t i = 0; i <= h->n_bounds; i++)
        count += atomic_load_explicit(&h->buckets[i], memory_order_relaxed);
    return count;
}

double sl_histogram_sum(const sl_histogram *h) {
    return double_of(atomic_load_explicit(&h->sum_bits, memory_order_relaxed));
}

/* ---- rendering --------------------------------------------------------- */

/* "name<suffix>{labels,le="<le>"} " with the braces only when needed. */
static void sample_start(strbuf *b, const family *f, const char *suffix, const series *s,
                         const char *le) {
    sb_puts(b, f->name);
    sb_puts(b, suffix);
    if (s->labels[0] || le) {
        sb_puts(b, "{");
        sb_puts(b, s->labels);
        if (le) {
            sb_puts(b, s->labels[0] ? ",le=\"" : "le=\"");
            sb_puts(b, le);
            sb_puts(b, "\"");
        }
        sb_puts(b, "}");
    }
    sb_puts(b, " ");
}

static void render_histogram(strbuf *b, const family *f, const sl_histogram *h) {
    uint64_t cumulative = 0;
    char le[32];
    for (size_t i = 0; i <= h->n_bounds; i++) {
        cumulative += atomic_load_explicit(&h->buckets[i], memory_order_relaxed);
        if (i < h->n_bounds)
            format_double(le, sizeof(le), h->bounds[i]);
        else
            snprintf(le, sizeof(le), "%s", "+Inf");
        sample_start(b, f, "_bucket", &h->head, le);
        sb_u64(b, cumulative);
        sb_puts(b, "\n");
    }
    sample_start(b, f, "_sum", &h->head, NULL);
    sb_double(b, sl_histogram_sum(h));
    sb_puts(b, "\n");
    sample_start(b, f, "_count", &h->head, NULL);
    sb_u64(b, cumulative);
    sb_puts(b, "\n");
}

static void render_family(strbuf *b, const family *f) {
    static const char *const type_names[] = {"counter", "gauge", "histogram"};
    sb_puts(b, "# HELP ");
    sb_puts(b, f->name);
    sb_puts(b, " ");
    sb_puts(b, f->help);
    sb_puts(b, "\n# TYPE ");
    sb_puts(b, f->name);
    sb_puts(b, " ");
    sb_puts(b, type_names[f->kind]);
    sb_puts(b, "\n");
    for (const series *s = f->first; s; s = s->next) {
        switch (f->kind) {
        case KIND_COUNTER:
            sample_start(b, f, "", s, NULL);
            sb_u64(b, sl_counter_value((const sl_counter *)s));
            sb_puts(b, "\n");
            break;
        case KIND_GAUGE:
            sample_start(b, f, "", s, NULL);
            sb_double(b, sl_gauge_value((const sl_gauge *)s));
            sb_puts(b, "\n");
            break;
        case KIND_HISTOGRAM:
            render_histogram(b, f, (const sl_histogram *)s);
            break;
        }
    }
}

sl_err sl_metrics_render(sl_metrics *m, char **out, size_t *len) {
    if (!m || !out || !len)
        return SL_ERR_INVALID;
    strbuf b = {0};
    sb_reserve(&b, 4096);
    pthread_mutex_lock(&m->lock);
    for (const family *f = m->first; f && !b.failed; f = f->next)
        if (f->first)
            render_family(&b, f);
    pthread_mutex_unlock(&m->lock);
    if (b.failed) {
        free(b.data);
        return SL_ERR_NOMEM;
    }
    *out = b.data;
    *len = b.len;
    return SL_OK;
}
