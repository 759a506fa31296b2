/*
 * passwords.h: argon2id password hashing and verification (libargon2), and a
 * bounded worker pool that keeps hashing off the HTTP threads.
 *
 * Why a pool: argon2id at OWASP's minimum (m = 19 MiB, t = 2, p = 1) costs
 * ~28 ms of one core and 19 MiB of memory per call. Run on an HTTP thread,
 * a burst of registrations would stall every read behind it and could ask
 * for unbounded memory. The pool runs at most `threads` hashes at a time
 * (so at most threads x m KiB of argon2 memory) and queues at most
 * `max_queue` more; past that, submission fails at once with SL_ERR_FULL,
 * which the gateway answers with 503 (or 429) and Retry-After.
 *
 * Formats. A hash is the standard PHC string libargon2 writes,
 * `$argon2id$v=19$m=19456,t=2,p=1$<salt b64>$<hash b64>`, with a 16-byte salt
 * from getrandom() and a 32-byte tag. Stored strings are parsed and their
 * parameters bounded (argon2id, v=19, m in [19456, 262144] KiB, t in [2, 10],
 * p in [1, 4], salt 16..64 bytes, tag 16..64 bytes) BEFORE argon2 runs: a
 * corrupt or hostile hash asking for 4 GiB is refused, never executed.
 *
 * Unknown users. Verification for a user that does not exist runs the same
 * argon2id work against a dummy hash made once at startup with the
 * configured parameters, and reports a mismatch: a login answers the same
 * way, in about the same time, whether the account exists or not.
 *
 * Secrets. Passwords are never logged, never copied into errstr, and every
 * copy this module makes (the pool's job buffers) is wiped with
 * explicit_bzero as soon as the work is done. The caller owns and wipes its
 * own buffers.
 *
 * Threading. sl_password_hash / _verify / _verify_dummy / _needs_rehash are
 * pure functions of their arguments: any thread (but they burn ~28 ms of CPU,
 * so never an HTTP thread: use the pool). The pool's submit and wait
 * functions may be called from any number of threads at once.
 */
#ifndef SLUICE_PASSWORDS_H
#define SLUICE_PASSWORDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "processor/base/error.h"
#include "topology/identity/rules.h"

/* Longest password accepted, in bytes (anything longer is SL_ERR_INVALID:
 * argon2 would hash it fine, but a megabyte "password" is an attack, not a
 * secret). Empty passwords are refused too. Bytes are hashed as given: any
 * Unicode normalization is the caller's business, done before hashing. */
#define SL_PASSWORD_MAX_LEN 1024

#define SL_PASSWORD_SALT_LEN 16 /* bytes of salt in hashes we write */
#define SL_PASSWORD_TAG_LEN  32 /* bytes of argon2 output in hashes we write */

/* The argon2id bounds (SL_ARGON2_*), the encoded-hash size
 * (SL_PASSWORD_ENCODED_MAX), the PHC parser and sl_password_hash_acceptable
 * are identity rules: topology/identity/rules.h, shared with the processor. */

typedef struct sl_argon2_params {
    uint32_t m_cost_kib;  /* memory per hash, KiB */
    uint32_t t_cost;      /* passes over memory */
    uint32_t parallelism; /* lanes (and argon2's own threads per hash) */
} sl_argon2_params;

/* OWASP's minimum for argon2id: m = 19456 KiB, t = 2, p = 1. What a NULL
 * params argument means everywhere below. */
extern const sl_argon2_params sl_argon2_params_owasp;

/* TESTS ONLY: m = 64 KiB, t = 1, p = 1, so unit tests can run hundreds of
 * hashes. Recognized by its address: passing &sl_argon2_params_insecure_test_only
 * (and only that object) as params lifts the floors above, for hashing and
 * for the hashes verify accepts; a copy of it, or any other struct with weak
 * values, is refused. Never reference it outside tests/ and bench/. */
extern const sl_argon2_params sl_argon2_params_insecure_test_only;

/* SL_OK if params (NULL: OWASP) is within the bounds above, else
 * SL_ERR_CONFIG with errstr naming the parameter. Any thread. */
sl_err sl_argon2_params_check(const sl_argon2_params *params, char *errstr, size_t errstr_size);

/* Hash `len` bytes of `password` (borrowed; not NUL-terminated necessarily)
 * with a fresh random salt and write the PHC string, NUL-terminated, into
 * `encoded` (caller's buffer of encoded_size bytes; SL_PASSWORD_ENCODED_MAX
 * always suffices). params NULL means OWASP. Errors: SL_ERR_INVALID (empty or
 * longer than SL_PASSWORD_MAX_LEN), SL_ERR_CONFIG (weak or absurd params),
 * SL_ERR_FULL (encoded too small), SL_ERR_IO (no randomness), SL_ERR_NOMEM.
 * On error `encoded` holds an empty string. ~28 ms of CPU at OWASP cost. */
sl_err sl_password_hash(const char *password, size_t len, const sl_argon2_params *params,
                        char *encoded, size_t encoded_size, char *errstr, size_t errstr_size);

/* Check `len` bytes of `password` against the stored PHC string `encoded`
 * (both borrowed). SL_OK with *match true or false is an answer; the
 * comparison of tags is constant-time (libargon2's verify). The stored
 * string is parsed and bounded first: anything but argon2id v=19 within the
 * bounds is SL_ERR_INVALID without running argon2. params (NULL: OWASP) is
 * the configured policy: it only selects the floors (production ones unless
 * it is &sl_argon2_params_insecure_test_only); the work done is the one the
 * stored string names. Errors: SL_ERR_INVALID (bad password length or stored
 * string refused; *match false), SL_ERR_NOMEM. */
sl_err sl_password_verify(const char *password, size_t len, const char *encoded,
                          const sl_argon2_params *params, bool *match, char *errstr,
                          size_t errstr_size);

/* Make the dummy hash for unknown users: a hash, with `params`, of 32 random
 * bytes nobody knows. Call once at startup and keep the string (it is not a
 * secret, but there is no need to show it). Same errors as sl_password_hash. */
sl_err sl_password_dummy_new(const sl_argon2_params *params, char *encoded, size_t encoded_size,
                             char *errstr, size_t errstr_size);

/* The unknown-user path: validate the password exactly as verify does, then
 * run the same argon2id work against `dummy_encoded` (from
 * sl_password_dummy_new with the same params) and answer "no match". SL_OK
 * means the work was done and there is no match; errors as verify. */
sl_err sl_password_verify_dummy(const char *password, size_t len, const char *dummy_encoded,
                                const sl_argon2_params *params, char *errstr, size_t errstr_size);

/* True if `encoded` (borrowed) was made with parameters other than `params`
 * (NULL: OWASP), or cannot be parsed: after a successful login the gateway
 * may rehash the password with the current parameters. Cheap; any thread. */
bool sl_password_needs_rehash(const char *encoded, const sl_argon2_params *params);

/* ---- The worker pool ------------------------------------------------------ */

typedef struct sl_password_pool sl_password_pool;

/* Outcome of one pool job, delivered exactly once per accepted submission.
 *
 *   err       SL_OK: the work was done. SL_ERR_CANCELLED: the pool shut down
 *             (or a waiter gave up) before the job started. SL_ERR_INVALID
 *             (verify): the stored hash was refused; the dummy work was run
 *             instead so the answer still takes the usual time, and match is
 *             false. SL_ERR_NOMEM / SL_ERR_IO: argon2 could not allocate, or
 *             there was no randomness for a salt.
 *   match     verify with err == SL_OK: the password matches. Else false.
 *   encoded   hash with err == SL_OK: the PHC string, borrowed for the
 *             duration of the callback only (copy it). Else NULL.
 *
 * Runs on a pool worker thread, outside every pool lock. It must not block for
 * long (it delays the next hash) and must not call sl_password_pool_destroy;
 * it may submit more jobs. The password is already wiped when it runs. */
typedef void sl_password_done_fn(void *opaque, sl_err err, bool match, const char *encoded);

/* A pool of `threads` (1..64) workers and a queue of at most `max_queue`
 * (1..65536) waiting jobs, hashing with `params` (NULL: OWASP; copied; refused
 * if weak, see sl_argon2_params_check). All job memory (a password buffer of
 * SL_PASSWORD_MAX_LEN per slot) is allocated here, once: submission never
 * allocates. Computes the dummy hash on the calling thread (one hash, ~28 ms).
 * NULL with errstr on failure. */
sl_password_pool *sl_password_pool_new(int threads, int max_queue, const sl_argon2_params *params,
                                       char *errstr, size_t errstr_size);

/* Queue a hash of `len` bytes of `password` (copied into the job; the
 * caller may wipe its buffer as soon as this returns). On SL_OK, `done`
 * will be called exactly once with `opaque` (borrowed until then) on a
 * worker thread. Returns at once: SL_ERR_FULL if max_queue jobs are already
 * waiting (nothing queued, done is never called), SL_ERR_INVALID for an
 * empty or over-long password, SL_ERR_CANCELLED once the pool is shutting
 * down. Any thread. */
sl_err sl_password_pool_submit_hash(sl_password_pool *pool, const char *password, size_t len,
                                    sl_password_done_fn *done, void *opaque);

/* Queue a verification of `password` against `encoded`, the user's stored
 * hash (copied; at most SL_PASSWORD_ENCODED_MAX - 1 bytes), or NULL when the
 * user does not exist: then the job runs the dummy verification and reports
 * match == false, indistinguishable in time from a wrong password. A stored
 * hash that fails the parameter check is not run either; see
 * sl_password_done_fn. Returns as sl_password_pool_submit_hash. */
sl_err sl_password_pool_submit_verify(sl_password_pool *pool, const char *password, size_t len,
                                      const char *encoded, sl_password_done_fn *done, void *opaque);

/* Blocking conveniences for a handler that waits: submit, then wait at most
 * timeout_ms (>= 0) for the result. On SL_OK, the hash is in `encoded`
 * (caller's buffer; SL_PASSWORD_ENCODED_MAX suffices, else SL_ERR_FULL) or
 * the answer in *match. SL_ERR_TIMEOUT: the job did not finish in time; it is
 * cancelled if it has not started, and its result is discarded if it has
 * (so nothing ever writes to the caller's buffers after return). Other errors
 * as submit and sl_password_done_fn. The calling thread sleeps while it
 * waits: use from threads that may block (an HTTP worker with a spare
 * thread), or use the submit functions with a callback. */
sl_err sl_password_pool_hash_wait(sl_password_pool *pool, const char *password, size_t len,
                                  int timeout_ms, char *encoded, size_t encoded_size);
sl_err sl_password_pool_verify_wait(sl_password_pool *pool, const char *password, size_t len,
                                    const char *encoded, int timeout_ms, bool *match);

/* Jobs waiting in the queue right now (for a metric or a Retry-After
 * estimate). Any thread. */
int sl_password_pool_queued(sl_password_pool *pool);

/* Shut down: jobs already running finish and report normally; every job
 * still queued is reported with SL_ERR_CANCELLED (on a worker thread); then
 * the workers are joined, all job buffers wiped and everything freed. When
 * this returns, every accepted submission has had its callback (or its
 * waiter has returned) and none will run again. A thread blocked in a *_wait
 * call when destroy starts is woken and returns before destroy does;
 * submissions racing with destroy get SL_ERR_CANCELLED. But the handle is
 * freed when destroy returns: stop every submitter (the HTTP server) first.
 * NULL is a no-op. Never from a callback. */
void sl_password_pool_destroy(sl_password_pool *pool);

#endif
