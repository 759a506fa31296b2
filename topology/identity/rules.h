/*
 * rules.h: the identity rules that the gateway (connectors/http) and the
 * processor (topology/identity) must apply alike, written once: the e-mail
 * rule, the limits of a profile's fields, and which stored password hashes
 * are acceptable (argon2id PHC strings within bounds).
 *
 * The gateway normalizes what a client sent (sl_email_normalize) and refuses
 * with a 400 what the processor would reject; the processor, which also
 * reads commands nobody checked, accepts only an e-mail that is already in
 * normalized form (sl_email_normalized) and equals the record key.
 *
 * Pure functions of their input: no I/O, no clock, no allocation of ours
 * (ICU's spoof checker is built once, on first use); any thread. Errors never quote the value they refuse, only name it.
 */
#ifndef SLUICE_TOPOLOGY_IDENTITY_RULES_H
#define SLUICE_TOPOLOGY_IDENTITY_RULES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "processor/base/error.h"

/* Limits of a user's fields, in bytes (text is UTF-8). Longer is a 400 at
 * the gateway and RegistrationRejected INVALID naming the field at the
 * processor. */
#define SL_IDENTITY_MAX_EMAIL     254 /* RFC 5321 path limit */
#define SL_IDENTITY_MAX_NAME      100 /* first_name, second_name, city */
#define SL_IDENTITY_MAX_BIOGRAPHY 2000

/* ---- e-mail -------------------------------------------------------------- */

/* Trim ASCII white space and lower-case `in` (len bytes) into out
 * (SL_IDENTITY_MAX_EMAIL + 1 bytes suffice). SL_ERR_INVALID unless it is
 * local@domain with a local part of 1..64 bytes of printable UTF-8 without
 * white space, '"', '\\' or ',' (no quoted local parts), and a domain of
 * dot-separated labels (ASCII letters, digits, hyphens, 1..63 bytes, no
 * leading or trailing hyphen; at least two labels, at most 253 bytes), at
 * most SL_IDENTITY_MAX_EMAIL bytes in all. Only the case of ASCII letters
 * is folded: the local part is otherwise kept. On error out is "". */
sl_err sl_email_normalize(const char *in, size_t len, char *out, size_t out_size);

/* sl_email_normalize, and on SL_ERR_INVALID *why says why in a sentence
 * for a 400 (static, names no character of the input). A local part that
 * is not all ASCII must also mean one mailbox: it is put in NFC, and
 * refused when it holds white space, control, format or other invisible
 * characters (U+00A0, U+200B, U+00AD, U+202E, U+FEFF...), compatibility
 * characters (fullwidth letters), or letters of several scripts (UTS #39
 * "highly restrictive": a Cyrillic "а" among Latin letters). Uses ICU;
 * safe on any thread. */
sl_err sl_email_normalize_why(const char *in, size_t len, char *out, size_t out_size,
                              const char **why);

/* True if `s` (NUL-terminated) is an e-mail address in the form
 * sl_email_normalize gives: it normalizes, to itself. */
bool sl_email_normalized(const char *s);

/* ---- stored password hashes ------------------------------------------------ */

/* Bounds on argon2id parameters, for hashing and for stored hashes. The
 * floors are OWASP's minimum for argon2id; the ceilings keep one verification
 * at most 256 MiB and a few hundred ms, whatever a stored string says. */
#define SL_ARGON2_M_MIN_KIB 19456u
#define SL_ARGON2_M_MAX_KIB 262144u
#define SL_ARGON2_T_MIN     2u
#define SL_ARGON2_T_MAX     10u
#define SL_ARGON2_P_MIN     1u
#define SL_ARGON2_P_MAX     4u

/* Buffer size that holds any encoded hash we write or accept, NUL included. */
#define SL_PASSWORD_ENCODED_MAX 256

/* The floors in force for a check (the ceilings above are never lifted). */
typedef struct sl_argon2_floors {
    uint32_t m_min, t_min, p_min;
} sl_argon2_floors;

/* The production floors: SL_ARGON2_{M,T,P}_MIN. */
extern const sl_argon2_floors sl_argon2_floors_production;

/* What a stored PHC string says. */
typedef struct sl_phc {
    uint32_t m, t, p;         /* memory KiB, passes, lanes */
    size_t salt_len, tag_len; /* decoded bytes */
} sl_phc;

/* SL_OK if argon2 costs m, t, p are within `floors` and the ceilings (and
 * argon2's own 8 KiB per lane), else `err` with errstr naming the cost. */
sl_err sl_argon2_costs_check(uint32_t m, uint32_t t, uint32_t p, sl_argon2_floors floors,
                             sl_err err, char *errstr, size_t errstr_size);

/* Parse `$argon2id$v=19$m=M,t=T,p=P$SALT$TAG` (borrowed) strictly into *out
 * and bound every number (costs by `floors`, salt and tag 16..64 bytes).
 * Never runs argon2; never echoes the string into errstr. SL_ERR_INVALID. */
sl_err sl_phc_parse(const char *encoded, sl_argon2_floors floors, sl_phc *out, char *errstr,
                    size_t errstr_size);

/* True if `encoded` (borrowed) is a PHC string that verification would run:
 * argon2id v=19 within the production bounds (what a processor checks
 * before it stores a hash it did not make). Cheap; any thread. */
bool sl_password_hash_acceptable(const char *encoded);

#endif
