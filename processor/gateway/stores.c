/*
 * stores.c: the interactive state endpoint (issue 17), for operators, on
 * the admin listener:
 *
 *   GET /v1/stores                     every store: kind, topic, partitions,
 *                                      value type, owner and planned
 *                                      standbys of each partition
 *   GET /v1/stores/{store}/keys/{key}  one value, from its owner (or, with
 *                                      allow_stale=true, a standby here;
 *                                      X-Sluice-Stale-Lag says how far
 *                                      behind it is)
 *   GET /v1/stores/{store}?prefix=|from=&to=, limit, cursor
 *                                      a scan in key order: for a task
 *                                      store a scatter-gather over every
 *                                      partition's owner, merged
 *
 * Keys are text, or "base64:<standard base64>" for binary keys (and are
 * shown the same way). Values render as JSON through their protobuf type
 * (sl_topology_describe_store, pbjson.c), else {"base64": ...}.
 *
 * Another instance's partition is read through two instance-only routes on
 * the public listener (a signed hop header, like /v1/await): GET
 * /v1/read/{store}/{hexkey} and GET /v1/scan/{store}/{partition}, which
 * answer raw bytes (base64) that this instance renders. The admin listener
 * is never called by another instance (it is loopback by default).
 */
#include "processor/gateway/gateway.h"

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "processor/base/text.h"
#include "processor/gateway/pbjson.h"

#define RETRY_AFTER_S        1
#define SCAN_LIMIT_DEFAULT   100
#define SCAN_LIMIT_MAX       1000
#define KEY_MAX              4096
#define STORE_PARTITIONS_MAX 1024
#define STANDBYS_MAX         16 /* num.standby.replicas' bound */

/* ---- keys, values and answers ---------------------------------------------- */

/* A key given by a client: text, or "base64:..." for bytes. malloc'd into
 * *out; false if it is malformed. */
static bool key_parse(const char *text, unsigned char **out, size_t *len) {
    if (strncmp(text, "base64:", 7) == 0)
        return sl_pbjson_base64_decode(text + 7, out, len) && *len <= KEY_MAX;
    *len = strlen(text);
    *out = (unsigned char *)strndup(text, KEY_MAX + 1);
    return *out && *len <= KEY_MAX;
}

/* A key as shown: text when it is printable UTF-8, else "base64:...". */
static json_t *key_json(const void *key, size_t len) {
    bool printable = true;
    for (size_t i = 0; i < len && printable; i++) {
        unsigned char c = ((const unsigned char *)key)[i];
        printable = c >= 0x20 && c != 0x7f;
    }
    if (printable && len > 0) {
        json_t *s = json_stringn(key, len); /* NULL for invalid UTF-8 */
        if (s)
            return s;
    }
    json_t *b = sl_pbjson_base64(key, len);
    json_t *s = b ? json_sprintf("base64:%s", json_string_value(b)) : NULL;
    json_decref(b);
    return s;
}

static json_t *value_json(const sl_store_info *info, const void *value, size_t len) {
    json_t *v = info->value_type ? sl_pbjson_render(info->value_type, value, len) : NULL;
    if (v)
        return v;
    /* no type, or bytes that are not one: the bytes */
    return json_pack("{s:o}", "base64", sl_pbjson_base64(value, len));
}

static void answer(sl_gateway *g, const sl_http_request *req, sl_http_response *resp, json_t *doc) {
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (!text || sl_http_respond_json(resp, 200, text))
        sl_gateway_error(g, req, resp, 500, "out of memory", 0);
    free(text);
}

static bool flag(const sl_http_request *req, const char *name, bool *value) {
    const char *v = sl_http_request_query(req, name);
    *value = false;
    if (!v)
        return true;
    if (strcmp(v, "true") == 0 || strcmp(v, "1") == 0)
        *value = true;
    else if (strcmp(v, "false") != 0 && strcmp(v, "0") != 0)
        return false;
    return true;
}

/* Hex (any case) into a malloc'd buffer; false if malformed. */
static bool unhex(const char *hex, unsigned char **out, size_t *len) {
    *out = malloc(strlen(hex) / 2 + 1);
    long n = *out ? sl_hex_decode(hex, *out, KEY_MAX) : -1;
    if (n < 0) {
        free(*out);
        *out = NULL;
        *len = 0;
        return false;
    }
    *len = (size_t)n;
    return true;
}

/* ---- GET /v1/stores ------------------------------------------------------------ */

static void stores_route(void *opaque, const sl_http_request *req, sl_http_response *resp) {
    sl_gateway *g = opaque;
    sl_engine *engine = sl_gateway_engine(g);
    json_t *list = json_array();
    sl_store_info info;
    for (size_t i = 0; list && sl_engine_query_store(engine, i, &info); i++) {
        json_t *s = json_pack(
            "{s:s, s:s, s:s, s:i, s:o}", "name", info.name, "kind", info.global ? "global" : "task",
            "topic", info.topic ? info.topic : "", "partitions", (int)info.partitions, "value_type",
            info.value_type ? json_string(info.value_type->name) : json_null());
        if (!info.global) {
            json_t *owners = json_array();
            for (int32_t p = 0; owners && p < info.partitions && p < STORE_PARTITIONS_MAX; p++) {
                char id[SL_MEMBERS_MAX_ID], address[SL_MEMBERS_MAX_ADDRESS];
                char standby_ids[STANDBYS_MAX][SL_MEMBERS_MAX_ID];
                size_t n = sl_gateway_standbys(g, info.topic, p, standby_ids, STANDBYS_MAX);
                json_t *standbys = json_array();
                for (size_t k = 0; standbys && k < n; k++)
                    json_array_append_new(standbys, json_string(standby_ids[k]));
                json_array_append_new(
                    owners, sl_gateway_owner(g, info.topic, p, id, address)
                                ? json_pack("{s:i, s:s, s:s, s:o}", "partition", (int)p, "instance",
                                            id, "address", address, "standbys", standbys)
                                : json_pack("{s:i, s:n, s:o}", "partition", (int)p, "instance",
                                            "standbys", standbys));
            }
            json_object_set_new(s, "owners", owners);
        }
        json_array_append_new(list, s);
    }
    answer(g, req, resp, json_pack("{s:o}", "stores", list));
}

/* ---- one key ---------------------------------------------------------------------- */

typedef struct read_result {
    unsigned char *value; /* malloc'd; NULL: absent */
    size_t len;
    int64_t lag;       /* from_standby: records behind the changelog end */
    bool from_standby; /* a standby here answered (allow_stale) */
    char served_by[SL_MEMBERS_MAX_ID];
} read_result;

/* Read a task store's key at its owner: SL_OK (value may be NULL: absent),
 * SL_ERR_NOT_READY (restoring, moving, owner unknown: 503), or another
 * error (500). */
static sl_err read_task_key(sl_gateway *g, const sl_store_info *info, const unsigned char *key,
                            size_t key_len, bool stale, int32_t partition, read_result *out) {
    sl_engine *engine = sl_gateway_engine(g);
    char *value = NULL;
    size_t len = 0;
    int32_t p;
    sl_err err = sl_engine_query_get(engine, info->name, key, key_len, &value, &len, &p);
    if (stale && (err == SL_ERR_NOT_OWNER || err == SL_ERR_NOT_READY)) {
        sl_err standby = sl_engine_query_get_stale(engine, info->name, key, key_len, &value, &len,
                                                   &p, &out->lag);
        if (standby == SL_OK || standby == SL_ERR_NOT_FOUND) {
            err = standby;
            out->from_standby = true;
        }
    }
    snprintf(out->served_by, sizeof(out->served_by), "%s", sl_engine_instance_id(engine));
    if (err == SL_OK || err == SL_ERR_NOT_FOUND) {
        out->value = (unsigned char *)value;
        out->len = len;
        return SL_OK;
    }
    if (err != SL_ERR_NOT_OWNER)
        return err == SL_ERR_STORE ? err : SL_ERR_NOT_READY;
    char id[SL_MEMBERS_MAX_ID], address[SL_MEMBERS_MAX_ADDRESS];
    if (!sl_gateway_owner(g, info->topic, partition, id, address) || sl_gateway_is_self(g, id))
        return SL_ERR_NOT_READY;
    char hex[2 * KEY_MAX + 1], target[2 * KEY_MAX + 400];
    sl_hex_encode(key, key_len, hex);
    snprintf(target, sizeof(target), "/v1/read/%s/%s", info->name, hex);
    sl_httpc_response r;
    if (sl_gateway_instance_get(g, address, target, &r) != SL_OK)
        return SL_ERR_NOT_READY;
    snprintf(out->served_by, sizeof(out->served_by), "%s", id);
    err = SL_ERR_NOT_READY;
    if (r.status == 404) {
        err = SL_OK;
    } else if (r.status == 200) {
        json_t *doc = json_loadb(r.body, r.body_len, 0, NULL);
        const char *b64 = json_string_value(json_object_get(doc, "value"));
        if (b64 && sl_pbjson_base64_decode(b64, &out->value, &out->len))
            err = SL_OK;
        json_decref(doc);
    }
    sl_httpc_response_free(&r);
    return err;
}

static void key_route(void *opaque, const sl_http_request *req, sl_http_response *resp) {
    sl_gateway *g = opaque;
    sl_engine *engine = sl_gateway_engine(g);
    sl_store_info info;
    bool stale;
    if (!sl_engine_query_store_named(engine, sl_http_request_param(req, "store"), &info)) {
        sl_gateway_error(g, req, resp, 404, "no such store", 0);
        return;
    }
    if (!flag(req, "allow_stale", &stale)) {
        sl_gateway_error(g, req, resp, 400, "allow_stale must be true or false", 0);
        return;
    }
    unsigned char *key = NULL;
    size_t key_len = 0;
    if (!key_parse(sl_http_request_param(req, "key"), &key, &key_len)) {
        free(key);
        sl_gateway_error(g, req, resp, 400,
                         "the key must be text or base64:<base64>, at most "
                         "4096 bytes",
                         0);
        return;
    }
    read_result got = {.value = NULL};
    int32_t partition = -1;
    sl_err err;
    if (info.global) {
        char *value = NULL;
        err = sl_engine_global_get(engine, info.name, key, key_len, &value, &got.len);
        got.value = (unsigned char *)value;
        snprintf(got.served_by, sizeof(got.served_by), "%s", sl_engine_instance_id(engine));
        if (err == SL_ERR_NOT_FOUND)
            err = SL_OK;
        else if (err == SL_ERR_UNAVAILABLE)
            err = SL_ERR_NOT_READY;
    } else {
        err = sl_engine_query_partition(engine, info.name, key, key_len, &partition, NULL);
        if (!err)
            err = read_task_key(g, &info, key, key_len, stale, partition, &got);
    }
    if (err == SL_ERR_NOT_READY) {
        sl_gateway_error(g, req, resp, 503,
                         "the store is restoring, moving or its owner is not known yet",
                         RETRY_AFTER_S);
    } else if (err) {
        sl_gateway_error(g, req, resp, 500, "the store could not be read", 0);
    } else if (!got.value) {
        sl_gateway_error(g, req, resp, 404, "no such key", 0);
    } else {
        char number[32];
        sl_http_response_header(resp, SL_GATEWAY_SERVED_BY_HEADER, got.served_by);
        if (partition >= 0) {
            snprintf(number, sizeof(number), "%d", (int)partition);
            sl_http_response_header(resp, "X-Sluice-Partition", number);
        }
        if (got.from_standby) {
            snprintf(number, sizeof(number), "%lld", (long long)got.lag);
            sl_http_response_header(resp, SL_GATEWAY_STALE_LAG_HEADER, number);
        }
        answer(g, req, resp,
               json_pack("{s:s, s:o, s:o, s:o}", "store", info.name, "key", key_json(key, key_len),
                         "partition", partition >= 0 ? json_integer(partition) : json_null(),
                         "value", value_json(&info, got.value, got.len)));
    }
    free(got.value);
    free(key);
}

/* ---- scans ------------------------------------------------------------------------ */

typedef struct entry {
    unsigned char *key, *value;
    size_t key_len, value_len;
    int32_t partition;
} entry;

typedef struct scan {
    const unsigned char *after; /* the cursor: only keys after it */
    size_t after_len;
    size_t want; /* stop after this many */
    entry *entries;
    size_t n, cap;
    int32_t partition;
    bool failed;
} scan;

static int key_cmp(const void *a, size_t a_len, const void *b, size_t b_len) {
    int c = memcmp(a, b, a_len < b_len ? a_len : b_len);
    return c ? c : (a_len > b_len) - (a_len < b_len);
}

static bool scan_add(scan *s, const void *key, size_t key_len, const void *value,
                     size_t value_len) {
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 64;
        entry *grown = realloc(s->entries, cap * sizeof(*grown));
        if (!grown)
            return false;
        s->entries = grown;
        s->cap = cap;
    }
    entry *e = &s->entries[s->n];
    e->key = malloc(key_len + 1);
    e->value = malloc(value_len + 1);
    if (!e->key || !e->value) {
        free(e->key);
        free(e->value);
        return false;
    }
    memcpy(e->key, key, key_len);
    if (value_len)
        memcpy(e->value, value, value_len);
    e->key_len = key_len;
    e->value_len = value_len;
    e->partition = s->partition;
    s->n++;
    return true;
}

static bool scan_visit(void *opaque, const void *key, size_t key_len, const void *value,
                       size_t value_len) {
    scan *s = opaque;
    if (s->after && key_cmp(key, key_len, s->after, s->after_len) <= 0)
        return true;
    if (!scan_add(s, key, key_len, value, value_len)) {
        s->failed = true;
        return false;
    }
    return s->n < s->want;
}

static void scan_free(scan *s) {
    for (size_t i = 0; i < s->n; i++) {
        free(s->entries[i].key);
        free(s->entries[i].value);
    }
    free(s->entries);
}

typedef struct bounds {
    unsigned char *prefix, *from, *to, *after;
    size_t prefix_len, from_len, to_len, after_len;
} bounds;

static void bounds_free(bounds *b) {
    free(b->prefix);
    free(b->from);
    free(b->to);
    free(b->after);
}

/* The range for the engine: prefix, or [from, to); the cursor is applied
 * by the visitor (scan.after). */
static sl_query_range range_of(const bounds *b) {
    return (sl_query_range){.prefix = b->prefix,
                            .prefix_len = b->prefix_len,
                            .from = b->prefix ? NULL : b->from,
                            .from_len = b->from_len,
                            .to = b->prefix ? NULL : b->to,
                            .to_len = b->to_len,
                            .limit = SIZE_MAX};
}

/* Append "&name=<hex>" for a set bound. */
static void add_hex_param(char *target, size_t size, const char *name, const unsigned char *v,
                          size_t len) {
    if (!v)
        return;
    size_t used = strlen(target);
    if (used + strlen(name) + 2 * len + 3 >= size)
        return;
    snprintf(target + used, size - used, "&%s=", name);
    sl_hex_encode(v, len, target + strlen(target));
}

/* One partition of a task store into `s`: here (with `stale`, a standby
 * here will do), or from its owner. */
static sl_err scan_partition(sl_gateway *g, const sl_store_info *info, int32_t p, bool stale,
                             const bounds *b, scan *s) {
    sl_query_range range = range_of(b);
    s->partition = p;
    sl_err err = sl_engine_query_scan(sl_gateway_engine(g), info->name, p, stale, &range,
                                      scan_visit, s, NULL, NULL);
    if (err != SL_ERR_NOT_OWNER)
        return s->failed ? SL_ERR_NOMEM : err;
    char id[SL_MEMBERS_MAX_ID], address[SL_MEMBERS_MAX_ADDRESS];
    if (!sl_gateway_owner(g, info->topic, p, id, address) || sl_gateway_is_self(g, id))
        return SL_ERR_NOT_READY;
    char target[6 * KEY_MAX + 512];
    snprintf(target, sizeof(target), "/v1/scan/%s/%d?limit=%zu", info->name, (int)p, s->want);
    add_hex_param(target, sizeof(target), "prefix", b->prefix, b->prefix_len);
    add_hex_param(target, sizeof(target), "from", b->prefix ? NULL : b->from, b->from_len);
    add_hex_param(target, sizeof(target), "to", b->prefix ? NULL : b->to, b->to_len);
    add_hex_param(target, sizeof(target), "after", b->after, b->after_len);
    sl_httpc_response r;
    if (sl_gateway_instance_get(g, address, target, &r) != SL_OK)
        return SL_ERR_NOT_READY;
    err = r.status == 200 ? SL_OK : SL_ERR_NOT_READY;
    json_t *doc = err ? NULL : json_loadb(r.body, r.body_len, 0, NULL);
    json_t *list = json_object_get(doc, "entries");
    if (!err && !json_is_array(list))
        err = SL_ERR_NOT_READY;
    size_t i;
    json_t *item;
    json_array_foreach(list, i, item) {
        unsigned char *k = NULL, *v = NULL;
        size_t k_len, v_len;
        const char *kt = json_string_value(json_object_get(item, "key"));
        const char *vt = json_string_value(json_object_get(item, "value"));
        bool ok = kt && vt && sl_pbjson_base64_decode(kt, &k, &k_len) &&
                  sl_pbjson_base64_decode(vt, &v, &v_len) && scan_add(s, k, k_len, v, v_len);
        free(k);
        free(v);
        if (!ok) {
            err = SL_ERR_NOT_READY;
            break;
        }
    }
    json_decref(doc);
    sl_httpc_response_free(&r);
    return err;
}

static int entry_cmp(const void *a, const void *b) {
    const entry *x = a, *y = b;
    return key_cmp(x->key, x->key_len, y->key, y->key_len);
}

static bool parse_bound(const sl_http_request *req, const char *name, unsigned char **v,
                        size_t *len) {
    const char *text = sl_http_request_query(req, name);
    if (!text)
        return true;
    if (!key_parse(text, v, len)) {
        free(*v);
        *v = NULL;
        return false;
    }
    return true;
}

static void scan_route(void *opaque, const sl_http_request *req, sl_http_response *resp) {
    sl_gateway *g = opaque;
    sl_engine *engine = sl_gateway_engine(g);
    sl_store_info info;
    if (!sl_engine_query_store_named(engine, sl_http_request_param(req, "store"), &info)) {
        sl_gateway_error(g, req, resp, 404, "no such store", 0);
        return;
    }
    bounds b = {0};
    bool stale;
    const char *limit_text = sl_http_request_query(req, "limit");
    char *end = NULL;
    long limit = limit_text ? strtol(limit_text, &end, 10) : SCAN_LIMIT_DEFAULT;
    if (!flag(req, "allow_stale", &stale) || (limit_text && (*end || limit < 1)) ||
        limit > SCAN_LIMIT_MAX || !parse_bound(req, "prefix", &b.prefix, &b.prefix_len) ||
        !parse_bound(req, "from", &b.from, &b.from_len) ||
        !parse_bound(req, "to", &b.to, &b.to_len) ||
        !parse_bound(req, "cursor", &b.after, &b.after_len) || (b.prefix && (b.from || b.to))) {
        bounds_free(&b);
        sl_gateway_error(g, req, resp, 400,
                         "prefix, or from and to (text or base64:...); limit 1..1000; cursor "
                         "from next_cursor; allow_stale true or false",
                         0);
        return;
    }
    scan s = {.after = b.after, .after_len = b.after_len, .want = (size_t)limit + 1};
    sl_err err = SL_OK;
    if (info.global) {
        sl_query_range range = range_of(&b);
        s.partition = -1;
        err = sl_engine_global_scan(engine, info.name, &range, scan_visit, &s, NULL);
        if (err == SL_ERR_UNAVAILABLE)
            err = SL_ERR_NOT_READY;
    } else {
        /* every partition's first limit + 1 keys after the cursor, merged */
        for (int32_t p = 0; !err && p < info.partitions && p < STORE_PARTITIONS_MAX; p++) {
            scan part = {.after = b.after, .after_len = b.after_len, .want = (size_t)limit + 1};
            err = scan_partition(g, &info, p, stale, &b, &part);
            for (size_t i = 0; !err && i < part.n; i++) {
                s.partition = p;
                if (!scan_add(&s, part.entries[i].key, part.entries[i].key_len,
                              part.entries[i].value, part.entries[i].value_len))
                    err = SL_ERR_NOMEM;
            }
            scan_free(&part);
        }
        if (!err && info.partitions <= 0)
            err = SL_ERR_NOT_READY;
        qsort(s.entries, s.n, sizeof(*s.entries), entry_cmp);
    }
    if (err == SL_ERR_NOT_READY || err == SL_ERR_NOT_OWNER) {
        sl_gateway_error(g, req, resp, 503,
                         "a partition is restoring, moving or its owner is not known yet",
                         RETRY_AFTER_S);
    } else if (err || s.failed) {
        sl_gateway_error(g, req, resp, 500, "the store could not be read", 0);
    } else {
        size_t n = s.n < (size_t)limit ? s.n : (size_t)limit;
        json_t *list = json_array();
        for (size_t i = 0; list && i < n; i++) {
            const entry *e = &s.entries[i];
            json_array_append_new(
                list, json_pack("{s:o, s:o, s:o}", "key", key_json(e->key, e->key_len), "partition",
                                e->partition >= 0 ? json_integer(e->partition) : json_null(),
                                "value", value_json(&info, e->value, e->value_len)));
        }
        json_t *cursor = json_null();
        if (s.n > n) { /* more after the last one shown */
            json_t *b64 = sl_pbjson_base64(s.entries[n - 1].key, s.entries[n - 1].key_len);
            json_decref(cursor);
            cursor = b64 ? json_sprintf("base64:%s", json_string_value(b64)) : json_null();
            json_decref(b64);
        }
        answer(g, req, resp,
               json_pack("{s:s, s:o, s:o}", "store", info.name, "entries", list, "next_cursor",
                         cursor));
    }
    scan_free(&s);
    bounds_free(&b);
}

/* ---- instance-only reads ------------------------------------------------------------ */

static bool from_instance(sl_gateway *g, const sl_http_request *req, sl_http_response *resp) {
    if (sl_gateway_forwarded(g, req))
        return true;
    sl_gateway_error(g, req, resp, 403, "this route is for the instances of the cluster", 0);
    return false;
}

static void read_route(void *opaque, const sl_http_request *req, sl_http_response *resp) {
    sl_gateway *g = opaque;
    if (!from_instance(g, req, resp))
        return;
    unsigned char *key = NULL;
    size_t key_len;
    if (!unhex(sl_http_request_param(req, "key"), &key, &key_len)) {
        sl_gateway_error(g, req, resp, 400, "the key must be hex", 0);
        return;
    }
    char *value = NULL;
    size_t len = 0;
    int32_t partition;
    sl_err err = sl_engine_query_get(sl_gateway_engine(g), sl_http_request_param(req, "store"), key,
                                     key_len, &value, &len, &partition);
    free(key);
    if (err == SL_ERR_NOT_FOUND)
        sl_gateway_error(g, req, resp, 404, "no such key", 0);
    else if (err)
        sl_gateway_error(g, req, resp, 503, "not readable here now", RETRY_AFTER_S);
    else
        answer(g, req, resp, json_pack("{s:o}", "value", sl_pbjson_base64(value, len)));
    free(value);
}

static void partition_scan_route(void *opaque, const sl_http_request *req, sl_http_response *resp) {
    sl_gateway *g = opaque;
    if (!from_instance(g, req, resp))
        return;
    bounds b = {0};
    const char *names[] = {"prefix", "from", "to", "after"};
    unsigned char **values[] = {&b.prefix, &b.from, &b.to, &b.after};
    size_t *lens[] = {&b.prefix_len, &b.from_len, &b.to_len, &b.after_len};
    bool ok = true;
    for (int i = 0; i < 4 && ok; i++) {
        const char *hex = sl_http_request_query(req, names[i]);
        ok = !hex || unhex(hex, values[i], lens[i]);
    }
    const char *limit_text = sl_http_request_query(req, "limit");
    long limit = limit_text ? strtol(limit_text, NULL, 10) : 0;
    long partition = strtol(sl_http_request_param(req, "partition"), NULL, 10);
    if (!ok || limit < 1 || limit > SCAN_LIMIT_MAX + 1) {
        bounds_free(&b);
        sl_gateway_error(g, req, resp, 400, "malformed scan", 0);
        return;
    }
    scan s = {.after = b.after, .after_len = b.after_len, .want = (size_t)limit};
    sl_query_range range = range_of(&b);
    sl_err err =
        sl_engine_query_scan(sl_gateway_engine(g), sl_http_request_param(req, "store"),
                             (int32_t)partition, false, &range, scan_visit, &s, NULL, NULL);
    if (err || s.failed) {
        sl_gateway_error(g, req, resp, 503, "not readable here now", RETRY_AFTER_S);
    } else {
        json_t *list = json_array();
        for (size_t i = 0; list && i < s.n; i++)
            json_array_append_new(
                list, json_pack("{s:o, s:o}", "key",
                                sl_pbjson_base64(s.entries[i].key, s.entries[i].key_len), "value",
                                sl_pbjson_base64(s.entries[i].value, s.entries[i].value_len)));
        answer(g, req, resp, json_pack("{s:o}", "entries", list));
    }
    scan_free(&s);
    bounds_free(&b);
}

sl_err sl_gateway_store_routes(sl_gateway *g, sl_http_server *http, sl_http_server *admin) {
    sl_err err;
    if ((err = sl_http_route(admin, "GET", "/v1/stores", stores_route, g)) ||
        (err = sl_http_route(admin, "GET", "/v1/stores/{store}", scan_route, g)) ||
        (err = sl_http_route(admin, "GET", "/v1/stores/{store}/keys/{key}", key_route, g)) ||
        (err = sl_http_route(http, "GET", "/v1/read/{store}/{key}", read_route, g)) ||
        (err = sl_http_route(http, "GET", "/v1/scan/{store}/{partition}", partition_scan_route, g)))
        return err;
    return SL_OK;
}
