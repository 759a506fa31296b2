/*
 * throttle.h: fixed-memory login throttling keyed by strings (a client IP,
 * an account's normalized e-mail).
 *
 * Each key has a token bucket (`burst` attempts at once, one more every
 * `refill_ms`) and a failure score: every failed login adds 1, and the score
 * leaks `failure_limit` per `failure_window_ms` (so "5 failures per 15
 * minutes" is the sustained rate that never locks). When the score reaches
 * `failure_limit`, the key is locked for `lockout_ms`, doubled for each
 * further failure above the limit (the excess score rounded up), up to
 * `lockout_max_ms`. A check
 * answers allowed (and spends a token) or limited with a Retry-After in
 * seconds.
 *
 * Memory is fixed at creation: a set-associative table of `capacity` slots
 * (8 per set). A new key takes a free slot of its set, else evicts the slot
 * that carries the least information: first one that is back to its initial
 * state (full bucket, no failures), then one without failures, oldest first,
 * and only then one with failures. So spraying fresh keys (a million
 * made-up e-mails) cannot grow memory, and cannot evict a locked account
 * unless the sprayer also makes every key in that set fail.
 *
 * Keys are never stored: they are hashed on entry with SipHash-2-4
 * (libsodium's crypto_shorthash, a keyed hash made for hash tables) under a
 * random 128-bit key drawn per throttle, and only the 64-bit hash is kept.
 * Without the key an attacker can neither target one set nor collide with
 * someone's entry; two real keys share an entry with probability ~2^-64 per
 * pair (they would then share a limit, never a secret).
 *
 * Time is the caller's: now_ms from a monotonic clock (sl_clock_mono_ms),
 * which makes the behaviour testable. Every function may be called from any
 * thread; calls on keys in different sets rarely contend (striped locks).
 *
 * Wiring for a login: check the IP key, then the account key (the normalized
 * e-mail, never the user id, so an unknown account is throttled exactly like
 * a real one); 429 with Retry-After if either is limited. After a wrong
 * password: sl_throttle_failure on both. After a right one:
 * sl_throttle_success on the account key.
 */
#ifndef SLUICE_THROTTLE_H
#define SLUICE_THROTTLE_H

#include <stddef.h>
#include <stdint.h>

#include "processor/base/error.h"

typedef struct sl_throttle_config {
    uint32_t capacity;          /* keys tracked at once, 8..4194304 (rounded up to a power of 2) */
    uint32_t burst;             /* attempts allowed at once, 1..10000 */
    uint32_t refill_ms;         /* one attempt regained per refill_ms, 1..86400000 */
    uint32_t failure_limit;     /* failure score that locks, 0..10000 (0: failures never lock) */
    uint32_t failure_window_ms; /* the score leaks failure_limit per window, 1 s..7 days */
    uint32_t lockout_ms;        /* first lockout, 1 s..1 day */
    uint32_t lockout_max_ms;    /* longest lockout, lockout_ms..7 days */
} sl_throttle_config;

/* Per client IP: 20 attempts at once, then one per 3 s; 20 failures per
 * 15 min, then 1 min, 2, 4, ... up to 15 min. 65536 keys (2 MiB). */
extern const sl_throttle_config sl_throttle_config_per_ip;

/* Per account: 5 attempts at once, then one per 12 s; 5 failures per 15 min,
 * then 1 min, 2, 4, ... up to 15 min. 65536 keys (2 MiB). */
extern const sl_throttle_config sl_throttle_config_per_account;

typedef enum sl_throttle_verdict {
    SL_THROTTLE_ALLOWED = 0,
    SL_THROTTLE_LIMITED = 1,
} sl_throttle_verdict;

typedef struct sl_throttle sl_throttle;

/* A throttle with `config` (copied; checked against the bounds above).
 * Allocates all its memory here (32 bytes per slot). NULL with errstr on a
 * bad config, SL_ERR_NOMEM, or if libsodium cannot initialize. */
sl_throttle *sl_throttle_new(const sl_throttle_config *config, char *errstr, size_t errstr_size);

/* NULL is a no-op. No other call may be running on t. */
void sl_throttle_destroy(sl_throttle *t);

/* One attempt by `key` (borrowed, NUL-terminated, hashed then forgotten) at
 * now_ms. ALLOWED spends one token. LIMITED spends nothing and sets
 * *retry_after_s (may be NULL) to the whole seconds, >= 1, until an attempt
 * would be allowed. Any thread. */
sl_throttle_verdict sl_throttle_check(sl_throttle *t, const char *key, int64_t now_ms,
                                      int *retry_after_s);

/* Count a failed attempt by `key` at now_ms (a wrong password); may lock the
 * key. Any thread. */
void sl_throttle_failure(sl_throttle *t, const char *key, int64_t now_ms);

/* A successful attempt by `key`: clear its failure score and any lockout
 * (the token bucket stays as it is). No-op for an unknown key. Any thread. */
void sl_throttle_success(sl_throttle *t, const char *key);

/* The account throttle's key for a login: "acct:<user_id>" when the account
 * is known (whether the client named it by e-mail or by id, so both share
 * one bucket), else "acct:<identifier>" as sent (unknown accounts are
 * throttled like real ones). `user_id` may be NULL or "". Truncated to
 * out_size. Any thread. */
void sl_throttle_account_key(char *out, size_t out_size, const char *user_id,
                             const char *identifier);

/* Slots in use now (scans the table: for tests and metrics, not hot paths). */
size_t sl_throttle_tracked(sl_throttle *t);

/* Slots in the table: the hard bound of sl_throttle_tracked. */
size_t sl_throttle_capacity(const sl_throttle *t);

#endif
