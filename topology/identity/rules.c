/*
 * rules.c: the identity rules shared by the gateway and the processor. See
 * rules.h.
 */
#include "topology/identity/rules.h"

#include <pthread.h>
#include <string.h>
#include <unicode/uchar.h>
#include <unicode/unorm2.h>
#include <unicode/uspoof.h>
#include <unicode/ustring.h>

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

/* ---- one mailbox: the non-ASCII local part (ICU) ---------------------------
 *
 * An ASCII local part is taken as it is. One with other characters must
 * mean one mailbox to a reader: it is put in NFC (composed and decomposed
 * "ç" are one account), and refused when it holds white space, control,
 * format or other invisible characters (U+00A0, U+200B, U+00AD, U+202E,
 * U+FEFF: general categories Z*, C*, and Default_Ignorable_Code_Point),
 * compatibility characters (fullwidth letters: NFKC would change them), or
 * letters of more than one script as UTS #39 "highly restrictive" defines
 * it (Latin with a Cyrillic "а"; Latin + Han + Hiragana/Katakana and the
 * like stay allowed). The spoof checker is built once, on first use, and
 * is safe for concurrent checks (ICU's documented guarantee). */

#define LOCAL_MAX_UNITS 128 /* UTF-16 units of a 64-byte local part, with room */

static USpoofChecker *spoof_checker;
static pthread_once_t spoof_once = PTHREAD_ONCE_INIT;

static void spoof_init(void) {
    UErrorCode status = U_ZERO_ERROR;
    USpoofChecker *checker = uspoof_open(&status);
    uspoof_setChecks(checker, USPOOF_RESTRICTION_LEVEL, &status);
    uspoof_setRestrictionLevel(checker, USPOOF_HIGHLY_RESTRICTIVE);
    if (U_FAILURE(status)) {
        uspoof_close(checker);
        return; /* spoof_checker stays NULL: every non-ASCII local part is refused */
    }
    spoof_checker = checker;
}

static bool invisible_or_control(UChar32 c) {
    int8_t type = u_charType(c);
    switch (type) {
    case U_SPACE_SEPARATOR:
    case U_LINE_SEPARATOR:
    case U_PARAGRAPH_SEPARATOR:
    case U_CONTROL_CHAR:
    case U_FORMAT_CHAR:
    case U_PRIVATE_USE_CHAR:
    case U_SURROGATE:
    case U_UNASSIGNED:
        return true;
    default:
        return u_hasBinaryProperty(c, UCHAR_DEFAULT_IGNORABLE_CODE_POINT) != 0;
    }
}

/* NFC of the local part `local` (len bytes, not all ASCII) into out (NUL
 * terminated, *out_len bytes), or SL_ERR_INVALID with *why. */
static sl_err local_part_nfc(const char *local, size_t len, char *out, size_t out_size,
                             size_t *out_len, const char **why) {
    UChar units[LOCAL_MAX_UNITS], nfc[LOCAL_MAX_UNITS], nfkc[LOCAL_MAX_UNITS];
    UErrorCode status = U_ZERO_ERROR;
    int32_t n = 0;
    *why = "email: the local part is not valid UTF-8";
    u_strFromUTF8(units, LOCAL_MAX_UNITS, &n, local, (int32_t)len, &status);
    if (U_FAILURE(status) || n >= LOCAL_MAX_UNITS)
        return SL_ERR_INVALID;
    for (int32_t i = 0; i < n;) {
        UChar32 c;
        U16_NEXT(units, i, n, c);
        if (invisible_or_control(c)) {
            *why = "email: the local part holds white space, control, format or invisible "
                   "characters";
            return SL_ERR_INVALID;
        }
    }
    const UNormalizer2 *to_nfc = unorm2_getNFCInstance(&status);
    const UNormalizer2 *to_nfkc = unorm2_getNFKCInstance(&status);
    int32_t nfc_len = U_SUCCESS(status) ? unorm2_normalize(to_nfc, units, n, nfc,
                                                           LOCAL_MAX_UNITS, &status)
                                        : 0;
    int32_t nfkc_len = U_SUCCESS(status) ? unorm2_normalize(to_nfkc, nfc, nfc_len, nfkc,
                                                            LOCAL_MAX_UNITS, &status)
                                         : 0;
    *why = "email: the local part cannot be normalized";
    if (U_FAILURE(status) || nfc_len >= LOCAL_MAX_UNITS || nfkc_len >= LOCAL_MAX_UNITS)
        return SL_ERR_INVALID;
    if (nfkc_len != nfc_len || u_strncmp(nfc, nfkc, nfc_len) != 0) {
        *why = "email: the local part holds compatibility characters (such as fullwidth "
               "letters)";
        return SL_ERR_INVALID;
    }
    pthread_once(&spoof_once, spoof_init);
    if (!spoof_checker)
        return SL_ERR_INVALID;
    int32_t checks = uspoof_check(spoof_checker, nfc, nfc_len, NULL, &status);
    if (U_FAILURE(status) || (checks & USPOOF_RESTRICTION_LEVEL)) {
        *why = "email: the local part mixes scripts (such as a Cyrillic letter among Latin "
               "ones)";
        return SL_ERR_INVALID;
    }
    int32_t bytes = 0;
    u_strToUTF8(out, (int32_t)out_size, &bytes, nfc, nfc_len, &status);
    *why = "email: not a valid e-mail address";
    if (U_FAILURE(status) || bytes < 0 || (size_t)bytes >= out_size)
        return SL_ERR_INVALID;
    out[bytes] = '\0';
    *out_len = (size_t)bytes;
    return SL_OK;
}

sl_err sl_email_normalize(const char *in, size_t len, char *out, size_t out_size) {
    const char *why;
    return sl_email_normalize_why(in, len, out, out_size, &why);
}

sl_err sl_email_normalize_why(const char *in, size_t len, char *out, size_t out_size,
                              const char **why) {
    *why = "email: not a valid e-mail address";
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
    bool ascii = true;
    for (size_t i = 0; i < at; i++)
        ascii = ascii && (unsigned char)out[i] < 0x80;
    if (ascii)
        return SL_OK;
    /* The local part in NFC, then the domain after it. */
    char domain[SL_IDENTITY_MAX_EMAIL + 1], local[SL_IDENTITY_MAX_EMAIL + 1];
    size_t domain_len = len - at, local_len = 0;
    memcpy(domain, out + at, domain_len);
    if (local_part_nfc(out, at, local, sizeof(local), &local_len, why) ||
        local_len == 0 || local_len > 64 || local_len + domain_len + 1 > out_size ||
        local_len + domain_len > SL_IDENTITY_MAX_EMAIL) {
        out[0] = '\0';
        return SL_ERR_INVALID;
    }
    memcpy(out, local, local_len);
    memcpy(out + local_len, domain, domain_len);
    out[local_len + domain_len] = '\0';
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
