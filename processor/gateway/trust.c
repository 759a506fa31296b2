/*
 * trust.c: the cluster secret and the hop / membership MACs (see trust.h).
 *
 * Every MAC is HMAC-SHA256 over a domain label and fields, each field
 * preceded by its length (4 bytes, big-endian), so no two different field
 * lists give the same input. Verification tries the current secret, then the
 * previous one, and compares with CRYPTO_memcmp.
 */
#include "processor/gateway/trust.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAC_LEN           32
#define GENERATED_BYTES   32
#define GENERATED_NAME    "cluster-secret"
#define MAX_INSTANCE_ID   64

struct sl_trust {
    unsigned char current[SL_TRUST_MAX_SECRET];
    size_t current_len;
    unsigned char previous[SL_TRUST_MAX_SECRET];
    size_t previous_len; /* 0: none */
    /* Sealing keys derived from each secret (see trust.h). */
    unsigned char seal_current[crypto_aead_xchacha20poly1305_ietf_KEYBYTES];
    unsigned char seal_previous[crypto_aead_xchacha20poly1305_ietf_KEYBYTES];
};

typedef struct field {
    const void *data;
    size_t len;
} field;

static bool mac_fields(const unsigned char *secret, size_t secret_len, const field *fields,
                       size_t n, unsigned char *mac);
static bool seal_key(const unsigned char *secret, size_t secret_len, unsigned char *key);

sl_trust *sl_trust_new(const void *current, size_t current_len, const void *previous,
                       size_t previous_len, char *errstr, size_t errstr_size) {
    if (current_len < SL_TRUST_MIN_SECRET || current_len > SL_TRUST_MAX_SECRET ||
        (previous && (previous_len < SL_TRUST_MIN_SECRET || previous_len > SL_TRUST_MAX_SECRET))) {
        sl_fail(errstr, errstr_size, SL_ERR_CONFIG, "a cluster secret must be %d to %d bytes",
                SL_TRUST_MIN_SECRET, SL_TRUST_MAX_SECRET);
        return NULL;
    }
    sl_trust *t = calloc(1, sizeof(*t));
    if (!t) {
        sl_fail(errstr, errstr_size, SL_ERR_NOMEM, "out of memory");
        return NULL;
    }
    memcpy(t->current, current, current_len);
    t->current_len = current_len;
    if (previous) {
        memcpy(t->previous, previous, previous_len);
        t->previous_len = previous_len;
    }
    if (sodium_init() < 0 || !seal_key(t->current, t->current_len, t->seal_current) ||
        (previous && !seal_key(t->previous, t->previous_len, t->seal_previous))) {
        sl_trust_destroy(t);
        sl_fail(errstr, errstr_size, SL_ERR_NOMEM, "the sealing keys could not be derived");
        return NULL;
    }
    return t;
}

void sl_trust_destroy(sl_trust *t) {
    if (!t)
        return;
    OPENSSL_cleanse(t, sizeof(*t));
    free(t);
}

/* ---- loading ------------------------------------------------------------- */

/* Read a secret file (at most SL_TRUST_MAX_SECRET bytes) into out. */
static sl_err read_secret(const char *path, unsigned char *out, size_t *len, char *errstr,
                          size_t errstr_size) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return sl_fail(errstr, errstr_size, SL_ERR_CONFIG, "cannot open cluster secret %s: %s",
                       path, strerror(errno));
    size_t n = 0;
    unsigned char extra;
    ssize_t got = 0;
    while (n < SL_TRUST_MAX_SECRET &&
           (got = read(fd, out + n, SL_TRUST_MAX_SECRET - n)) > 0)
        n += (size_t)got;
    bool too_long = got >= 0 && n == SL_TRUST_MAX_SECRET && read(fd, &extra, 1) > 0;
    int saved = errno;
    close(fd);
    if (got < 0)
        return sl_fail(errstr, errstr_size, SL_ERR_IO, "cannot read cluster secret %s: %s", path,
                       strerror(saved));
    if (n < SL_TRUST_MIN_SECRET || too_long)
        return sl_fail(errstr, errstr_size, SL_ERR_CONFIG,
                       "cluster secret %s must hold %d to %d bytes (it has %s%zu)", path,
                       SL_TRUST_MIN_SECRET, SL_TRUST_MAX_SECRET, too_long ? "more than " : "",
                       n);
    *len = n;
    return SL_OK;
}

/* <state.dir>/<application.id>/cluster-secret: created with fresh random
 * bytes (0600) unless it exists. *created says which. */
static sl_err generated_secret(const sl_config *config, char *path, size_t path_size,
                               bool *created, char *errstr, size_t errstr_size) {
    const char *state_dir = sl_config_get(config, "state.dir");
    const char *app = sl_config_get(config, "application.id");
    *created = false;
    int n = snprintf(path, path_size, "%s", state_dir);
    for (int step = 0; step < 2; step++) {
        if (n < 0 || (size_t)n >= path_size)
            return sl_fail(errstr, errstr_size, SL_ERR_CONFIG, "state.dir is too long");
        /* state.dir and state.dir/<app> may not exist yet (the engine
         * creates them too, later or earlier). */
        if (mkdir(path, 0700) != 0 && errno != EEXIST)
            return sl_fail(errstr, errstr_size, SL_ERR_IO, "cannot create %s: %s", path,
                           strerror(errno));
        n += snprintf(path + n, path_size - (size_t)n, "/%s", step == 0 ? app : GENERATED_NAME);
    }
    if (n < 0 || (size_t)n >= path_size)
        return sl_fail(errstr, errstr_size, SL_ERR_CONFIG, "state.dir is too long");
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return errno == EEXIST ? SL_OK
                               : sl_fail(errstr, errstr_size, SL_ERR_IO, "cannot create %s: %s",
                                         path, strerror(errno));
    unsigned char bytes[GENERATED_BYTES];
    bool ok = RAND_bytes(bytes, sizeof(bytes)) == 1 &&
              write(fd, bytes, sizeof(bytes)) == (ssize_t)sizeof(bytes) && fsync(fd) == 0;
    OPENSSL_cleanse(bytes, sizeof(bytes));
    close(fd);
    if (!ok) {
        unlink(path);
        return sl_fail(errstr, errstr_size, SL_ERR_IO, "cannot write %s", path);
    }
    *created = true;
    return SL_OK;
}

sl_trust *sl_trust_load(const sl_config *config, const sl_logger *logger, char *errstr,
                        size_t errstr_size) {
    const char *path = sl_config_get(config, "cluster.secret.file");
    const char *previous_path = sl_config_get(config, "cluster.secret.previous.file");
    char generated[PATH_MAX];
    if (!path || !path[0]) {
        bool created = false;
        if (generated_secret(config, generated, sizeof(generated), &created, errstr,
                             errstr_size))
            return NULL;
        if (created)
            sl_log(logger, SL_LOG_WARN, "trust",
                   "generated a cluster secret in the state dir (set cluster.secret.file, the "
                   "same on every instance, for more than one instance: instances with "
                   "different secrets refuse each other's forwarded requests and membership)");
        path = generated;
    }
    unsigned char *current = malloc(SL_TRUST_MAX_SECRET), *previous = malloc(SL_TRUST_MAX_SECRET);
    size_t current_len = 0, previous_len = 0;
    bool has_previous = previous_path && previous_path[0];
    sl_trust *t = NULL;
    if (!current || !previous)
        sl_fail(errstr, errstr_size, SL_ERR_NOMEM, "out of memory");
    else if (read_secret(path, current, &current_len, errstr, errstr_size) == SL_OK &&
             (!has_previous ||
              read_secret(previous_path, previous, &previous_len, errstr, errstr_size) == SL_OK))
        t = sl_trust_new(current, current_len, has_previous ? previous : NULL, previous_len,
                         errstr, errstr_size);
    if (current)
        OPENSSL_cleanse(current, SL_TRUST_MAX_SECRET);
    if (previous)
        OPENSSL_cleanse(previous, SL_TRUST_MAX_SECRET);
    free(current);
    free(previous);
    if (t)
        sl_log(logger, SL_LOG_INFO, "trust", "cluster secret from %s%s", path,
               has_previous ? " (and the previous one, accepted during a rotation)" : "");
    return t;
}

/* ---- MACs ------------------------------------------------------------------ */

/* The sealing key of a secret: HMAC-SHA256(secret, "sluice-seal-v1"). */
static bool seal_key(const unsigned char *secret, size_t secret_len, unsigned char *key) {
    static const char label[] = "sluice-seal-v1";
    field f = {label, sizeof(label) - 1};
    return mac_fields(secret, secret_len, &f, 1, key);
}

/* HMAC-SHA256(secret, len||field for each field) into mac. false when out
 * of memory. */
static bool mac_fields(const unsigned char *secret, size_t secret_len, const field *fields,
                       size_t n, unsigned char *mac) {
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += 4 + fields[i].len;
    unsigned char *input = malloc(total ? total : 1);
    if (!input)
        return false;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t len = (uint32_t)fields[i].len;
        input[at++] = (unsigned char)(len >> 24);
        input[at++] = (unsigned char)(len >> 16);
        input[at++] = (unsigned char)(len >> 8);
        input[at++] = (unsigned char)len;
        if (fields[i].len)
            memcpy(input + at, fields[i].data, fields[i].len);
        at += fields[i].len;
    }
    unsigned int mac_len = 0;
    bool ok = HMAC(EVP_sha256(), secret, (int)secret_len, input, total, mac, &mac_len) != NULL &&
              mac_len == MAC_LEN;
    free(input);
    return ok;
}

static void hex(const unsigned char *bytes, size_t n, char *out) {
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[bytes[i] >> 4];
        out[2 * i + 1] = digits[bytes[i] & 15];
    }
    out[2 * n] = '\0';
}

static int hex_value(char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Exactly 2*MAC_LEN lowercase hex digits -> mac. */
static bool unhex_mac(const char *text, size_t len, unsigned char mac[MAC_LEN]) {
    if (len != 2 * MAC_LEN)
        return false;
    for (size_t i = 0; i < MAC_LEN; i++) {
        int hi = hex_value(text[2 * i]), lo = hex_value(text[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return false;
        mac[i] = (unsigned char)(hi << 4 | lo);
    }
    return true;
}

/* Does `mac` match the fields under the current or the previous secret? */
static sl_trust_verdict check(const sl_trust *t, const field *fields, size_t n,
                              const unsigned char mac[MAC_LEN]) {
    unsigned char expected[MAC_LEN];
    bool valid = mac_fields(t->current, t->current_len, fields, n, expected) &&
                 CRYPTO_memcmp(expected, mac, MAC_LEN) == 0;
    if (!valid && t->previous_len)
        valid = mac_fields(t->previous, t->previous_len, fields, n, expected) &&
                CRYPTO_memcmp(expected, mac, MAC_LEN) == 0;
    return valid ? SL_TRUST_VALID : SL_TRUST_BAD_MAC;
}

static bool instance_id_ok(const char *id) {
    size_t len = strlen(id);
    if (len == 0 || len > MAX_INSTANCE_ID)
        return false;
    for (const unsigned char *p = (const unsigned char *)id; *p; p++)
        if (*p <= 0x20 || *p >= 0x7f || *p == ':')
            return false;
    return true;
}

/* The hop MAC's fields; body_digest and ts are buffers of the caller's. */
static size_t hop_fields(field *fields, const char *method, const char *target, const void *body,
                         size_t body_len, int64_t ts, const char *instance_id,
                         unsigned char body_digest[SHA256_DIGEST_LENGTH], char ts_text[24]) {
    SHA256(body_len ? body : (const void *)"", body_len, body_digest);
    snprintf(ts_text, 24, "%" PRId64, ts);
    size_t n = 0;
    fields[n++] = (field){"sluice-hop-v1", 13};
    fields[n++] = (field){method, strlen(method)};
    fields[n++] = (field){target, strlen(target)};
    fields[n++] = (field){body_digest, SHA256_DIGEST_LENGTH};
    fields[n++] = (field){ts_text, strlen(ts_text)};
    fields[n++] = (field){instance_id, strlen(instance_id)};
    return n;
}

sl_err sl_trust_hop_sign(const sl_trust *t, const char *method, const char *target,
                         const void *body, size_t body_len, int64_t now_s,
                         const char *instance_id, char *out, size_t out_size) {
    if (!instance_id_ok(instance_id))
        return SL_ERR_INVALID;
    field fields[6];
    unsigned char digest[SHA256_DIGEST_LENGTH], mac[MAC_LEN];
    char ts[24], mac_hex[2 * MAC_LEN + 1];
    size_t n = hop_fields(fields, method, target, body, body_len, now_s, instance_id, digest, ts);
    if (!mac_fields(t->current, t->current_len, fields, n, mac))
        return SL_ERR_NOMEM;
    hex(mac, MAC_LEN, mac_hex);
    int written = snprintf(out, out_size, "v1:%s:%s:%s", ts, mac_hex, instance_id);
    return written < 0 || (size_t)written >= out_size ? SL_ERR_FULL : SL_OK;
}

sl_trust_verdict sl_trust_hop_verify(const sl_trust *t, const char *header, const char *method,
                                     const char *target, const void *body, size_t body_len,
                                     int64_t now_s, int window_s) {
    if (!header || strncmp(header, "v1:", 3) != 0)
        return SL_TRUST_MALFORMED;
    const char *ts_text = header + 3;
    char *end = NULL;
    errno = 0;
    long long ts = strtoll(ts_text, &end, 10);
    if (errno || end == ts_text || *end != ':' || ts_text[0] == '-' || ts_text[0] == '+')
        return SL_TRUST_MALFORMED;
    const char *mac_text = end + 1;
    const char *colon = strchr(mac_text, ':');
    unsigned char mac[MAC_LEN];
    if (!colon || !unhex_mac(mac_text, (size_t)(colon - mac_text), mac) ||
        !instance_id_ok(colon + 1))
        return SL_TRUST_MALFORMED;
    field fields[6];
    unsigned char digest[SHA256_DIGEST_LENGTH];
    char ts_buf[24];
    size_t n = hop_fields(fields, method, target, body, body_len, (int64_t)ts, colon + 1, digest,
                          ts_buf);
    /* The canonical decimal only: "007" and "7" must not both pass. */
    if (strncmp(ts_buf, ts_text, (size_t)(end - ts_text)) != 0 ||
        strlen(ts_buf) != (size_t)(end - ts_text))
        return SL_TRUST_MALFORMED;
    sl_trust_verdict verdict = check(t, fields, n, mac);
    if (verdict != SL_TRUST_VALID)
        return verdict;
    int64_t skew = now_s - (int64_t)ts;
    return skew > window_s || skew < -window_s ? SL_TRUST_EXPIRED : SL_TRUST_VALID;
}

sl_err sl_trust_record_sign(const sl_trust *t, const void *key, size_t key_len,
                            const void *value, size_t value_len, char *out, size_t out_size) {
    field fields[] = {{"sluice-members-v1", 17}, {key, key_len}, {value, value_len}};
    unsigned char mac[MAC_LEN];
    if (out_size < 3 + 2 * MAC_LEN + 1)
        return SL_ERR_FULL;
    if (!mac_fields(t->current, t->current_len, fields, 3, mac))
        return SL_ERR_NOMEM;
    memcpy(out, "v1:", 3);
    hex(mac, MAC_LEN, out + 3);
    return SL_OK;
}

sl_trust_verdict sl_trust_record_verify(const sl_trust *t, const void *mac_text, size_t mac_len,
                                        const void *key, size_t key_len, const void *value,
                                        size_t value_len) {
    unsigned char mac[MAC_LEN];
    if (!mac_text || mac_len < 3 || memcmp(mac_text, "v1:", 3) != 0 ||
        !unhex_mac((const char *)mac_text + 3, mac_len - 3, mac))
        return SL_TRUST_MALFORMED;
    field fields[] = {{"sluice-members-v1", 17}, {key, key_len}, {value, value_len}};
    return check(t, fields, 3, mac);
}

/* ---- sealed bodies -------------------------------------------------------- */

#define NONCE_LEN crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
#define TAG_LEN   crypto_aead_xchacha20poly1305_ietf_ABYTES

_Static_assert(NONCE_LEN + TAG_LEN == SL_TRUST_SEAL_OVERHEAD, "seal overhead");
_Static_assert(MAC_LEN == crypto_aead_xchacha20poly1305_ietf_KEYBYTES, "seal key size");

sl_err sl_trust_seal(const sl_trust *t, const char *context, const void *plain, size_t len,
                     unsigned char **out, size_t *out_len) {
    *out = malloc(len + SL_TRUST_SEAL_OVERHEAD);
    *out_len = 0;
    if (!*out)
        return SL_ERR_NOMEM;
    randombytes_buf(*out, NONCE_LEN);
    unsigned long long sealed_len = 0;
    crypto_aead_xchacha20poly1305_ietf_encrypt(*out + NONCE_LEN, &sealed_len, plain, len,
                                               (const unsigned char *)context, strlen(context),
                                               NULL, *out, t->seal_current);
    *out_len = NONCE_LEN + (size_t)sealed_len;
    return SL_OK;
}

sl_trust_verdict sl_trust_open(const sl_trust *t, const char *context, const void *sealed,
                               size_t len, char **out, size_t *out_len) {
    *out = NULL;
    *out_len = 0;
    if (len < SL_TRUST_SEAL_OVERHEAD)
        return SL_TRUST_MALFORMED;
    const unsigned char *nonce = sealed;
    size_t cipher_len = len - NONCE_LEN;
    unsigned char *plain = malloc(cipher_len - TAG_LEN + 1);
    if (!plain)
        return SL_TRUST_MALFORMED;
    const unsigned char *keys[2] = {t->seal_current, t->previous_len ? t->seal_previous : NULL};
    for (int k = 0; k < 2 && keys[k]; k++) {
        unsigned long long plain_len = 0;
        if (crypto_aead_xchacha20poly1305_ietf_decrypt(plain, &plain_len, NULL, nonce + NONCE_LEN,
                                                       cipher_len, (const unsigned char *)context,
                                                       strlen(context), nonce, keys[k]) == 0) {
            plain[plain_len] = '\0';
            *out = (char *)plain;
            *out_len = (size_t)plain_len;
            return SL_TRUST_VALID;
        }
    }
    free(plain);
    return SL_TRUST_BAD_MAC;
}
