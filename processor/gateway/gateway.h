/*
 * gateway.h: what HTTP routes over the engine stand on: interactive
 * queries routed to the instance that owns the key, the reply path for
 * commands, and JSON error answers.
 *
 * A route handler asks the gateway for a key of a store. The gateway
 *   - reads it locally when this instance owns the key's partition and the
 *     task is running (the handler then builds its own answer),
 *   - forwards the request (method, path, query, body, the headers that
 *     matter) to the owner found in the membership table, and relays the
 *     owner's answer (status, Content-Type, Retry-After, body), marking the
 *     request with the hop header so it is forwarded at most once,
 *   - or answers 503 with Retry-After when no answer can be right now: the
 *     store is restoring, the owner is unknown or unreachable, or a
 *     forwarded request arrives at an instance that does not own the key
 *     either (the assignment is moving).
 * Every error answer is {"message", "code", "request_id"} (the public
 * spec's error schema) and is logged with the request id.
 *
 * Threading: sl_gateway_new/start/destroy on the app's thread; everything
 * else from HTTP handler threads.
 */
#ifndef SLUICE_GATEWAY_H
#define SLUICE_GATEWAY_H

#include "processor/gateway/members.h"
#include "processor/gateway/replies.h"
#include "processor/base/config.h"
#include "processor/engine/engine.h"
#include "processor/http/client.h"
#include "processor/http/server.h"
#include "processor/base/log.h"

/* Forwarded requests carry this header, signed with the cluster secret
 * (trust.h); an instance never forwards a request that has a valid one, and
 * refuses (401) one that has an invalid one. */
#define SL_GATEWAY_HOP_HEADER "X-Sluice-Hop"
/* Every answer the gateway builds or relays names the instance that read
 * the store. */
#define SL_GATEWAY_SERVED_BY_HEADER "X-Sluice-Served-By"
/* An answer read from a standby replica (the request said allow_stale=true)
 * says how far behind it was: changelog offsets behind the end last seen. */
/* Marks a body sealed under the cluster secret (trust.h), on requests
 * between instances and on their answers. */
#define SL_GATEWAY_SEALED_HEADER    "X-Sluice-Sealed"
#define SL_GATEWAY_SEALED_V1        "v1"
#define SL_GATEWAY_STALE_LAG_HEADER "X-Sluice-Stale-Lag"

typedef struct sl_gateway sl_gateway;

/* A stopped gateway over `engine` (borrowed). config and logger borrowed.
 * NULL + errstr on failure. */
sl_gateway *sl_gateway_new(const sl_config *config, sl_engine *engine, const char *bootstrap,
                           const sl_logger *logger, char *errstr, size_t errstr_size);

/* Publish the gateway's metrics in `metrics` (borrowed; must outlive the
 * gateway): sluice_hops_refused_total, sluice_members_rejected_total.
 * Before sl_gateway_start. */
void sl_gateway_set_metrics(sl_gateway *gateway, sl_metrics *metrics);

/* Is `req` a request forwarded by an instance of this cluster (a hop header
 * with a valid MAC under the cluster secret, within the replay window)? A
 * client that sets the header gets false (and a 401 from the guard). Any
 * thread. */
bool sl_gateway_forwarded(sl_gateway *gateway, const sl_http_request *req);

/* Register the gateway's own generic routes (before the servers start):
 * on `http`, the public server, the guard that refuses (401) a hop header
 * without a valid MAC and the instance-only
 *   GET /v1/await/{store}/{key}/{ms}[/{needle}]
 * and on `admin`, the operators' listener (internals: instance ids,
 * addresses, assignments):
 *   GET /v1/members                  the live membership table
 *   GET /v1/metadata/{store}/{key}   the partition and owner of a key */
sl_err sl_gateway_routes(sl_gateway *gateway, sl_http_server *http, sl_http_server *admin);

/* Start membership (advertising gateway.advertised.address, or
 * http.host:http_port) and, if "<application.id>-replies" exists, the
 * reply consumer. */
sl_err sl_gateway_start(sl_gateway *gateway, int http_port, char *errstr, size_t errstr_size);

/* Stop everything (writes the membership tombstone). NULL is fine. */
void sl_gateway_destroy(sl_gateway *gateway);

sl_engine *sl_gateway_engine(sl_gateway *gateway);
/* NULL before start (or when the reply topic does not exist). */
sl_replies *sl_gateway_replies(sl_gateway *gateway);
sl_members *sl_gateway_members(sl_gateway *gateway);

typedef enum sl_gateway_outcome {
    SL_GATEWAY_LOCAL,   /* read here: the handler answers (value / visits are set) */
    SL_GATEWAY_MISSING, /* read here, the key is absent: the handler answers (404) */
    SL_GATEWAY_ANSWERED /* resp is filled (forwarded answer, 503, 500): return */
} sl_gateway_outcome;

/* Get `key` of `store` for the request being handled. On SL_GATEWAY_LOCAL
 * *value is malloc'd (the caller frees it). */
sl_gateway_outcome sl_gateway_get(sl_gateway *gateway, const sl_http_request *req,
                                  sl_http_response *resp, const char *store, const void *key,
                                  size_t key_len, char **value, size_t *value_len);

/* A bounded scan of the partition owning `routing_key` (see
 * sl_engine_query_range); `visit` runs only on SL_GATEWAY_LOCAL. */
sl_gateway_outcome sl_gateway_range(sl_gateway *gateway, const sl_http_request *req,
                                    sl_http_response *resp, const char *store,
                                    const void *routing_key, size_t routing_key_len,
                                    const sl_query_range *range, sl_query_visit_fn *visit,
                                    void *opaque);

/* The longest key sl_gateway_await can ask another instance about. */
#define SL_GATEWAY_AWAIT_KEY_MAX 512

/* Wait until `key` of `store` exists at the owner of its partition, its
 * value holding the bytes of `needle` (NULL: any value; at most
 * SL_GATEWAY_AWAIT_KEY_MAX bytes), here or by asking the owner through GET
 * /v1/await, applied to the owner's store: after SL_OK, any instance's read
 * of the key finds it. For the answer of a command whose effect reaches
 * another store one hop later. SL_ERR_TIMEOUT after timeout_ms. Any
 * handler thread. */
sl_err sl_gateway_await(sl_gateway *gateway, const char *store, const void *key, size_t key_len,
                        const void *needle, size_t needle_len, int timeout_ms);

/* For the gateway's own route files (stores.c). The owner of a partition
 * of a topic in the membership table: false while unknown. */
bool sl_gateway_owner(sl_gateway *gateway, const char *topic, int32_t partition,
                      char owner_id[SL_MEMBERS_MAX_ID], char address[SL_MEMBERS_MAX_ADDRESS]);
/* The planned standbys of that partition (sl_members_standbys). */
size_t sl_gateway_standbys(sl_gateway *gateway, const char *topic, int32_t partition,
                           char (*ids)[SL_MEMBERS_MAX_ID], size_t max);
/* Whether `instance_id` is this instance. */
bool sl_gateway_is_self(sl_gateway *gateway, const char *instance_id);
/* GET `target` from the instance at `address` as this instance (a signed
 * hop header; the thread's trace passed on), within
 * gateway.forward.timeout.ms: *answer (sl_httpc_response_free) on SL_OK. */
sl_err sl_gateway_instance_get(sl_gateway *gateway, const char *address, const char *target,
                               sl_httpc_response *answer);
/* The state endpoint's routes (stores.c): GET /v1/stores... on `admin`,
 * the instance-only GET /v1/read and /v1/scan on `http`. */
sl_err sl_gateway_store_routes(sl_gateway *gateway, sl_http_server *http, sl_http_server *admin);

/* Answer an error {"message", "code", "request_id"}, with Retry-After when
 * retry_after_s > 0, and log it with the request id (5xx as warnings). */
void sl_gateway_error(sl_gateway *gateway, const sl_http_request *req, sl_http_response *resp,
                      int status, const char *message, int retry_after_s);

/* Produce a command and wait for its reply (sl_replies_request with
 * gateway.reply.timeout.ms). SL_ERR_NOT_READY when the reply path is not
 * running. */
sl_err sl_gateway_request(sl_gateway *gateway, const char *topic, const void *key, size_t key_len,
                          sl_command_encode_fn *encode, void *opaque, Sluice__V1__Reply **reply);

#endif
