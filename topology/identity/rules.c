/*
 * rules.c: the identity rules shared by the gateway and the processor. See
 * rules.h.
 */
#include "topology/identity/rules.h"

#include <string.h>

#include "processor/base/text.h"

/* ---- e-mail -------------------------------------------------------------- */

static bool is_ws(char c) {
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static bool domain_valid(const char *d, size_t len) {
    if (len == 0 || len > 253)
        return false;
    size_t label = 0, labels = 0;
    for (size_t i = 0; i <= len; i++) {
        char c = i < len ? d[i] : '.';
        if (c == '.') {
            if (label == 0 || label > 63 || d[i - 1] == '-' || d[i - label] == '-')
                return false;
            label = 0;
            labels++;
            continue;
        }
        bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
        if (!ok)
            return false;
        label++;
    }
    return labels >= 2;
}

sl_err sl_email_normalize(const char *in, size_t len, char *out, size_t out_size) {
    while (len > 0 && is_ws(in[0]))
        in++, len--;
    while (len > 0 && is_ws(in[len - 1]))
        len--;
    if (len == 0 || len > SL_IDENTITY_MAX_EMAIL || len + 1 > out_size)
        return SL_ERR_INVALID;
    if (!sl_text_valid(in, len, false))
        return SL_ERR_INVALID;
    size_t at = len;
    for (size_t i = 0; i < len; i++) {
        char c = in[i];
        if (is_ws(c) || (at == len && (c == '"' || c == '\\' || c == ',')))
            return SL_ERR_INVALID; /* no quoted local parts */
        if (c == '@') {
            if (at != len)
                return SL_ERR_INVALID; /* a second @ */
            at = i;
        }
        out[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
    }
    out[len] = '\0';
    if (at == 0 || at == len || at > 64 || !domain_valid(out + at + 1, len - at - 1)) {
        out[0] = '\0';
        return SL_ERR_INVALID;
    }
    return SL_OK;
}

bool sl_email_normalized(const char *s) {
    char normalized[SL_IDENTITY_MAX_EMAIL + 1];
    size_t len = strnlen(s, sizeof(normalized));
    return len < sizeof(normalized) &&
           sl_email_normalize(s, len, normalized, sizeof(normalized)) == SL_OK &&
           strcmp(normalized, s) == 0;
}

/* ---- stored password hashes ------------------------------------------------ */

const sl_argon2_floors sl_argon2_floors_production = {
    .m_min = SL_ARGON2_M_MIN_KIB, .t_min = SL_ARGON2_T_MIN, .p_min = SL_ARGON2_P_MIN};

/* Bounds of stored salts and tags, in bytes. We write 16 and 32. */
#define SALT_MIN 16
#define SALT_MAX 64
#define TAG_MIN  16
#define TAG_MAX  64

sl_err sl_argon2_costs_check(uint32_t m, uint32_t t, uint32_t p, sl_argon2_floors b,
                             sl_err err, char *errstr, size_t errstr_size) {
    if (m < b.m_min || m > SL_ARGON2_M_MAX_KIB)
        return sl_fail(errstr, errstr_size, err, "argon2 memory %u KiB is outside [%u, %u]", m,
                       b.m_min, SL_ARGON2_M_MAX_KIB);
    if (t < b.t_min || t > SL_ARGON2_T_MAX)
        return sl_fail(errstr, errstr_size, err, "argon2 passes %u is outside [%u, %u]", t, b.t_min,
                       SL_ARGON2_T_MAX);
    if (p < b.p_min || p > SL_ARGON2_P_MAX)
        return sl_fail(errstr, errstr_size, err, "argon2 parallelism %u is outside [%u, %u]", p,
                       b.p_min, SL_ARGON2_P_MAX);
    if (m < 8 * p) /* argon2's own floor: 8 KiB per lane */
        return sl_fail(errstr, errstr_size, err, "argon2 memory %u KiB is below 8 KiB per lane", m);
    return SL_OK;
}

/* A decimal without sign or leading zeros that fits uint32_t. Advances *s. */
static bool parse_u32(const char **s, uint32_t *out) {
    const char *c = *s;
    uint64_t v = 0;
    int digits = 0;
    while (*c >= '0' && *c <= '9') {
        if (digits == 0 && *c == '0' && c[1] >= '0' && c[1] <= '9')
            return false;
        v = v * 10 + (uint64_t)(*c - '0');
        if (++digits > 10 || v > UINT32_MAX)
            return false;
        c++;
    }
    if (digits == 0)
        return false;
    *out = (uint32_t)v;
    *s = c;
    return true;
}

static bool is_b64(char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '/';
}

/* Length in bytes of an unpadded base64 run starting at *s; advances *s to
 * its end. false if the run has an impossible length. */
static bool b64_run(const char **s, size_t *bytes) {
    const char *c = *s;
    size_t n = 0;
    while (is_b64(c[n]))
        n++;
    if (n % 4 == 1)
        return false;
    *bytes = n / 4 * 3 + (n % 4 ? n % 4 - 1 : 0);
    *s = c + n;
    return true;
}

static bool eat(const char **s, const char *lit) {
    size_t n = strlen(lit);
    if (strncmp(*s, lit, n) != 0)
        return false;
    *s += n;
    return true;
}

sl_err sl_phc_parse(const char *encoded, sl_argon2_floors floors, sl_phc *out, char *errstr,
                    size_t errstr_size) {
    if (!encoded)
        return sl_fail(errstr, errstr_size, SL_ERR_INVALID, "no stored hash");
    if (strnlen(encoded, SL_PASSWORD_ENCODED_MAX) >= SL_PASSWORD_ENCODED_MAX)
        return sl_fail(errstr, errstr_size, SL_ERR_INVALID, "stored hash is too long");
    const char *s = encoded;
    if (!eat(&s, "$argon2id$"))
        return sl_fail(errstr, errstr_size, SL_ERR_INVALID, "stored hash is not argon2id");
    if (!eat(&s, "v=19$"))
        return sl_fail(errstr, errstr_size, SL_ERR_INVALID, "stored hash is not argon2 v=19");
    if (!eat(&s, "m=") || !parse_u32(&s, &out->m) || !eat(&s, ",t=") || !parse_u32(&s, &out->t) ||
        !eat(&s, ",p=") || !parse_u32(&s, &out->p) || !eat(&s, "$"))
        return sl_fail(errstr, errstr_size, SL_ERR_INVALID, "stored hash has malformed parameters");
    sl_err err =
        sl_argon2_costs_check(out->m, out->t, out->p, floors, SL_ERR_INVALID, errstr, errstr_size);
    if (err)
        return err;
    if (!b64_run(&s, &out->salt_len) || !eat(&s, "$") || !b64_run(&s, &out->tag_len) || *s != '\0')
        return sl_fail(errstr, errstr_size, SL_ERR_INVALID, "stored hash is malformed");
    if (out->salt_len < SALT_MIN || out->salt_len > SALT_MAX)
        return sl_fail(errstr, errstr_size, SL_ERR_INVALID, "stored salt of %zu bytes",
                       out->salt_len);
    if (out->tag_len < TAG_MIN || out->tag_len > TAG_MAX)
        return sl_fail(errstr, errstr_size, SL_ERR_INVALID, "stored tag of %zu bytes",
                       out->tag_len);
    return SL_OK;
}

bool sl_password_hash_acceptable(const char *encoded) {
    sl_phc parsed;
    return encoded &&
           sl_phc_parse(encoded, sl_argon2_floors_production, &parsed, NULL, 0) == SL_OK;
}
