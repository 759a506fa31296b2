/*
 * jwt_bench: token verifications per second on one core, in one run:
 *
 *   ours            sl_jwt_verify (parse, checks, EVP_DigestVerify with the
 *                   key parsed once), no cache
 *   ours, cache hit sl_jwt_verify_cached on a token already cached
 *   libjwt          libjwt's jwt_decode with the public key PEM: the
 *                   baseline DESIGN.md 9 measured (it parses the PEM per call).
 *                   libjwt 1.10 refuses any header typ but "JWT", so it gets
 *                   the same token re-signed with typ "JWT" (4 bytes shorter)
 *   openssl         EVP_DigestVerify alone with a loaded key and a
 *                   pre-decoded signature: the ceiling for an uncached verify
 *
 * for RS256 (RSA-2048) and ES256 (P-256), as calls per second of the
 * thread's CPU time. Rounds are interleaved and the median of each is
 * reported, because the machine's cores are shared and noisy; the ratios
 * compare numbers from the same run.
 *
 *   usage: jwt_bench [seconds per measurement, default 1] [rounds, default 3]
 */
#include <jwt.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "connectors/http/auth/jwt.h"

#define NOW 1700000000
#define ISS "https://sluice.bench"
#define AUD "sluice-api"

typedef struct bench_alg {
    const char *name;
    sl_jwt_alg alg;
    char key_path[128];
    sl_jwt_keys *keys;
    sl_jwt_cache *cache;
    char token[SL_JWT_MAX_TOKEN + 1];
    size_t token_len;
    char libjwt_token[SL_JWT_MAX_TOKEN + 1]; /* the same, with typ "JWT" */
    char *public_pem;                        /* for libjwt */
    int public_pem_len;
    EVP_PKEY *public_key; /* for the raw OpenSSL measurement */
    unsigned char sig[1024];
    size_t sig_len;
} bench_alg;

/* CPU time of this thread, not wall time: the machine's two cores are
 * shared with other work, and time spent descheduled is not ours to count. */
static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static const sl_jwt_expect expect = {
    .iss = ISS, .aud = AUD, .typ = SL_JWT_ACCESS, .now = NOW, .leeway_s = 0};

static int run_ours(bench_alg *b) {
    return sl_jwt_verify(b->keys, b->token, b->token_len, &expect, NULL, NULL, 0) == SL_JWT_OK;
}

static int run_cached(bench_alg *b) {
    return sl_jwt_verify_cached(b->keys, b->cache, b->token, b->token_len, &expect, NULL, NULL,
                                0) == SL_JWT_OK;
}

static int run_libjwt(bench_alg *b) {
    jwt_t *jwt = NULL;
    int rc =
        jwt_decode(&jwt, b->libjwt_token, (const unsigned char *)b->public_pem, b->public_pem_len);
    jwt_free(jwt);
    return rc == 0;
}

static int run_openssl(bench_alg *b) {
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    size_t signed_len = (size_t)(strrchr(b->token, '.') - b->token);
    int ok =
        EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, b->public_key) == 1 &&
        EVP_DigestVerify(ctx, b->sig, b->sig_len, (const unsigned char *)b->token, signed_len) == 1;
    EVP_MD_CTX_free(ctx);
    return ok;
}

/* Calls per second of fn for about `seconds`; exits if fn ever fails. */
static double measure(int (*fn)(bench_alg *), bench_alg *b, double seconds, const char *what) {
    long calls = 0;
    double start = now_s(), elapsed = 0;
    do {
        for (int i = 0; i < 32; i++, calls++)
            if (!fn(b)) {
                fprintf(stderr, "jwt_bench: %s %s failed\n", what, b->name);
                exit(1);
            }
        elapsed = now_s() - start;
    } while (elapsed < seconds);
    return (double)calls / elapsed;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof(*v), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void die(const char *what) {
    fprintf(stderr, "jwt_bench: %s\n", what);
    exit(1);
}

/* b->token with its header's typ replaced by "JWT", signed with OpenSSL. */
static void make_libjwt_token(bench_alg *b, EVP_PKEY *private_key) {
    char header[256];
    snprintf(header, sizeof(header), "{\"alg\":\"%s\",\"kid\":\"%s\",\"typ\":\"JWT\"}", b->name,
             sl_jwt_keys_current_kid(b->keys));
    char *out = b->libjwt_token;
    size_t size = sizeof(b->libjwt_token);
    if (sl_jwt_b64url_encode((const unsigned char *)header, strlen(header), out, size))
        die("header too long");
    const char *payload = strchr(b->token, '.'); /* ".payload.sig" */
    size_t payload_len = (size_t)(strrchr(b->token, '.') - payload);
    size_t pos = strlen(out);
    if (pos + payload_len + 1 >= size)
        die("token too long");
    memcpy(out + pos, payload, payload_len);
    pos += payload_len;
    unsigned char der[1024], raw[1024];
    size_t der_len = sizeof(der), raw_len;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, private_key) != 1 ||
        EVP_DigestSign(ctx, der, &der_len, (const unsigned char *)out, pos) != 1)
        die("signing failed");
    EVP_MD_CTX_free(ctx);
    if (b->alg == SL_JWT_ES256) {
        const unsigned char *p = der;
        ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)der_len);
        if (!es)
            die("bad ECDSA signature");
        BN_bn2binpad(ECDSA_SIG_get0_r(es), raw, 32);
        BN_bn2binpad(ECDSA_SIG_get0_s(es), raw + 32, 32);
        ECDSA_SIG_free(es);
        raw_len = 64;
    } else {
        memcpy(raw, der, der_len);
        raw_len = der_len;
    }
    out[pos++] = '.';
    if (sl_jwt_b64url_encode(raw, raw_len, out + pos, size - pos))
        die("token too long");
}

static void setup(bench_alg *b, const char *dir) {
    char errstr[512];
    snprintf(b->key_path, sizeof(b->key_path), "%s/%s.pem", dir, b->name);
    if (sl_jwt_key_generate(b->key_path, b->alg, NULL, errstr, sizeof(errstr)) ||
        !(b->keys = sl_jwt_keys_load(b->key_path, NULL, errstr, sizeof(errstr))) ||
        !(b->cache = sl_jwt_cache_new(65536, errstr, sizeof(errstr)))) {
        fprintf(stderr, "jwt_bench: %s\n", errstr);
        exit(1);
    }
    sl_jwt_claims claims;
    if (sl_jwt_claims_init(&claims, SL_JWT_ACCESS, "123456789", "session-0123456789", ISS, AUD, NOW,
                           SL_JWT_ACCESS_TTL_S, errstr, sizeof(errstr)) ||
        sl_jwt_issue(b->keys, &claims, b->token, sizeof(b->token), &b->token_len, errstr,
                     sizeof(errstr))) {
        fprintf(stderr, "jwt_bench: %s\n", errstr);
        exit(1);
    }
    /* the public key as PEM (for libjwt) and as a loaded EVP_PKEY */
    FILE *f = fopen(b->key_path, "r");
    EVP_PKEY *private_key = f ? PEM_read_PrivateKey(f, NULL, NULL, NULL) : NULL;
    if (f)
        fclose(f);
    BIO *bio = BIO_new(BIO_s_mem());
    if (!private_key || !bio || PEM_write_bio_PUBKEY(bio, private_key) != 1) {
        fprintf(stderr, "jwt_bench: cannot export the public key\n");
        exit(1);
    }
    make_libjwt_token(b, private_key);
    char *pem;
    long pem_len = BIO_get_mem_data(bio, &pem);
    b->public_pem = malloc((size_t)pem_len + 1);
    memcpy(b->public_pem, pem, (size_t)pem_len);
    b->public_pem[pem_len] = '\0';
    b->public_pem_len = (int)pem_len;
    BIO_free(bio);
    bio = BIO_new_mem_buf(b->public_pem, b->public_pem_len);
    b->public_key = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
    BIO_free(bio);
    EVP_PKEY_free(private_key);
    /* the signature, decoded (and DER for ECDSA) once, outside the timing */
    const char *sig_b64 = strrchr(b->token, '.') + 1;
    unsigned char raw[1024];
    size_t raw_len;
    if (!sl_jwt_b64url_decode(sig_b64, strlen(sig_b64), raw, sizeof(raw), &raw_len)) {
        fprintf(stderr, "jwt_bench: bad signature encoding\n");
        exit(1);
    }
    if (b->alg == SL_JWT_ES256) {
        ECDSA_SIG *es = ECDSA_SIG_new();
        ECDSA_SIG_set0(es, BN_bin2bn(raw, 32, NULL), BN_bin2bn(raw + 32, 32, NULL));
        unsigned char *p = b->sig;
        b->sig_len = (size_t)i2d_ECDSA_SIG(es, &p);
        ECDSA_SIG_free(es);
    } else {
        memcpy(b->sig, raw, raw_len);
        b->sig_len = raw_len;
    }
}

static void teardown(bench_alg *b) {
    sl_jwt_keys_destroy(b->keys);
    sl_jwt_cache_destroy(b->cache);
    EVP_PKEY_free(b->public_key);
    free(b->public_pem);
    unlink(b->key_path);
}

int main(int argc, char **argv) {
    double seconds = argc > 1 ? strtod(argv[1], NULL) : 1.0;
    int rounds = argc > 2 ? (int)strtol(argv[2], NULL, 10) : 3;
    if (seconds <= 0 || rounds < 1 || rounds > 99) {
        fprintf(stderr, "usage: jwt_bench [seconds > 0] [rounds 1..99]\n");
        return 2;
    }
    /* one core: stay on the CPU we started on */
    cpu_set_t one;
    CPU_ZERO(&one);
    int cpu = sched_getcpu();
    CPU_SET(cpu < 0 ? 0 : cpu, &one);
    sched_setaffinity(0, sizeof(one), &one);

    char dir[] = "/tmp/sluice-jwt-bench-XXXXXX";
    if (!mkdtemp(dir)) {
        perror("jwt_bench: mkdtemp");
        return 1;
    }
    bench_alg algs[2] = {{.name = "RS256", .alg = SL_JWT_RS256},
                         {.name = "ES256", .alg = SL_JWT_ES256}};
    for (int a = 0; a < 2; a++)
        setup(&algs[a], dir);

    enum { OURS, CACHED, LIBJWT, OPENSSL, N_WAYS };
    static const char *const way_names[N_WAYS] = {"ours (no cache)", "ours (cache hit)",
                                                  "libjwt 1.10 jwt_decode", "openssl verify only"};
    int (*const ways[N_WAYS])(bench_alg *) = {run_ours, run_cached, run_libjwt, run_openssl};
    double samples[2][N_WAYS][99];
    for (int r = 0; r < rounds; r++)
        for (int a = 0; a < 2; a++)
            for (int w = 0; w < N_WAYS; w++)
                samples[a][w][r] = measure(ways[w], &algs[a], seconds, way_names[w]);

    printf("token verifications per CPU second, one core, median of %d x %.1f s\n", rounds,
           seconds);
    printf("token: %zu bytes (RS256), %zu bytes (ES256)\n\n", algs[0].token_len, algs[1].token_len);
    printf("%-24s %14s %14s\n", "", "RS256", "ES256");
    double med[2][N_WAYS];
    for (int a = 0; a < 2; a++)
        for (int w = 0; w < N_WAYS; w++)
            med[a][w] = median(samples[a][w], rounds);
    for (int w = 0; w < N_WAYS; w++)
        printf("%-24s %14.0f %14.0f\n", way_names[w], med[0][w], med[1][w]);
    printf("\n");
    printf("%-24s %13.1fx %13.1fx\n", "ours / libjwt", med[0][OURS] / med[0][LIBJWT],
           med[1][OURS] / med[1][LIBJWT]);
    printf("%-24s %13.1fx %13.1fx\n", "cache hit / libjwt", med[0][CACHED] / med[0][LIBJWT],
           med[1][CACHED] / med[1][LIBJWT]);
    printf("%-24s %13.1fx %13.1fx\n", "cache hit / ours", med[0][CACHED] / med[0][OURS],
           med[1][CACHED] / med[1][OURS]);
    printf("%-24s %13.2fx %13.2fx\n", "ours / openssl only", med[0][OURS] / med[0][OPENSSL],
           med[1][OURS] / med[1][OPENSSL]);

    for (int a = 0; a < 2; a++)
        teardown(&algs[a]);
    rmdir(dir);
    return 0;
}
