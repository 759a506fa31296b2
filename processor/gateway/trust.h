/*
 * trust.h: the cluster secret and the MACs that make instance-to-instance
 * traffic authentic: the hop header of a forwarded HTTP request and the
 * membership records.
 *
 * The secret is a file of at least SL_TRUST_MIN_SECRET bytes (any bytes;
 * `head -c 32 /dev/urandom > file`), the same on every instance
 * (cluster.secret.file). Rotation works like the token signing key: put the
 * new file in cluster.secret.file and the old one in
 * cluster.secret.previous.file on every instance; an instance signs with the
 * current secret and accepts either, so instances restarted one at a time
 * keep talking to each other. With cluster.secret.file empty, one is
 * generated under <state.dir>/<application.id>/cluster-secret on first start
 * (with a warning): enough for a single instance, wrong for a cluster (each
 * instance would have its own, and they would refuse each other's hops).
 *
 * Hop header (X-Sluice-Hop) value: "v1:<unix seconds>:<hex mac>:<instance id>"
 * where mac = HMAC-SHA256(secret, "sluice-hop-v1", method, path+query,
 * SHA-256(body), seconds, instance id), each field length-prefixed. The
 * receiver accepts it when the MAC matches (constant-time compare) under the
 * current or the previous secret and the timestamp is within the replay
 * window. There is no nonce cache: a captured hop can be replayed within the
 * window (see docs/SECURITY.md, inter-instance traffic).
 *
 * Membership record MAC (Kafka header "sluice-mac"): "v1:<hex mac>" over
 * "sluice-members-v1", the record key and the record value.
 *
 * Sealed bodies: what crosses between instances (a forwarded login's
 * password, the tokens in its answer, store values) is encrypted and
 * authenticated with XChaCha20-Poly1305 (libsodium) under a key derived
 * from the secret: HMAC-SHA256(secret, "sluice-seal-v1"). A sealed body is
 * nonce (24 random bytes) || ciphertext || tag (16 bytes); the associated
 * data binds it to its request (the caller's `context`: the hop header
 * with a direction label), so a sealed body cannot be moved to another
 * request or from a request to an answer. Opening tries the current, then
 * the previous secret's key.
 *
 * The secret is never logged. Threading: load/destroy on one thread; the
 * sign and verify calls from any thread (the handle is immutable).
 */
#ifndef SLUICE_PROCESSOR_GATEWAY_TRUST_H
#define SLUICE_PROCESSOR_GATEWAY_TRUST_H

#include <stddef.h>
#include <stdint.h>

#include "processor/base/config.h"
#include "processor/base/error.h"
#include "processor/base/log.h"

#define SL_TRUST_MIN_SECRET 32
#define SL_TRUST_MAX_SECRET 4096
/* Room for a hop header value with an instance id of up to 64 bytes. */
#define SL_TRUST_HOP_MAX 192
/* Room for a record MAC header value. */
#define SL_TRUST_RECORD_MAC_MAX 72
#define SL_TRUST_RECORD_HEADER "sluice-mac"

typedef struct sl_trust sl_trust;

typedef enum sl_trust_verdict {
    SL_TRUST_VALID = 0,
    SL_TRUST_MALFORMED, /* not "v1:..." or a field out of shape */
    SL_TRUST_BAD_MAC,   /* neither secret gives this MAC */
    SL_TRUST_EXPIRED    /* the MAC is good but the timestamp is outside the window */
} sl_trust_verdict;

/* From secrets in memory (copied; previous may be NULL). NULL + errstr when
 * a secret is shorter than SL_TRUST_MIN_SECRET or longer than
 * SL_TRUST_MAX_SECRET. The caller frees with sl_trust_destroy. */
sl_trust *sl_trust_new(const void *current, size_t current_len, const void *previous,
                       size_t previous_len, char *errstr, size_t errstr_size);

/* From cluster.secret.file / cluster.secret.previous.file, or the generated
 * one in the state dir (see above). config and logger borrowed for the call.
 * NULL + errstr on a missing, unreadable or too short file. */
sl_trust *sl_trust_load(const sl_config *config, const sl_logger *logger, char *errstr,
                        size_t errstr_size);

/* Wipes the secrets. NULL is fine. */
void sl_trust_destroy(sl_trust *trust);

/* The hop header value for a request (method, `target` = decoded path plus
 * "?query" as sl_http_request_query_string builds it, body) sent at
 * `now_s` by `instance_id`, into out (SL_TRUST_HOP_MAX bytes). SL_ERR_INVALID
 * for an instance id with ':' control bytes or too long; SL_ERR_NOMEM. */
sl_err sl_trust_hop_sign(const sl_trust *trust, const char *method, const char *target,
                         const void *body, size_t body_len, int64_t now_s,
                         const char *instance_id, char *out, size_t out_size);

/* Check a hop header value against the request it came with, at `now_s`,
 * accepting timestamps within window_s either way. */
sl_trust_verdict sl_trust_hop_verify(const sl_trust *trust, const char *header,
                                     const char *method, const char *target, const void *body,
                                     size_t body_len, int64_t now_s, int window_s);

/* The MAC header value of a membership record (key, value) into out
 * (SL_TRUST_RECORD_MAC_MAX bytes). SL_ERR_NOMEM. */
sl_err sl_trust_record_sign(const sl_trust *trust, const void *key, size_t key_len,
                            const void *value, size_t value_len, char *out, size_t out_size);

/* Check a record's MAC header value (mac, mac_len bytes; NULL: unsigned). */
sl_trust_verdict sl_trust_record_verify(const sl_trust *trust, const void *mac, size_t mac_len,
                                        const void *key, size_t key_len, const void *value,
                                        size_t value_len);

/* Bytes a sealed body has more than its plaintext. */
#define SL_TRUST_SEAL_OVERHEAD 40

/* Seal `len` bytes of `plain` bound to `context` (NUL-terminated) under the
 * current secret: a malloc'd *out of len + SL_TRUST_SEAL_OVERHEAD bytes.
 * SL_ERR_NOMEM. */
sl_err sl_trust_seal(const sl_trust *trust, const char *context, const void *plain, size_t len,
                     unsigned char **out, size_t *out_len);

/* Open a sealed body: SL_TRUST_VALID and a malloc'd, NUL-terminated *out
 * (*out_len bytes, the NUL not counted), or SL_TRUST_MALFORMED (too short)
 * / SL_TRUST_BAD_MAC (altered, another context, or neither secret) with
 * *out NULL. */
sl_trust_verdict sl_trust_open(const sl_trust *trust, const char *context, const void *sealed,
                               size_t len, char **out, size_t *out_len);

#endif
