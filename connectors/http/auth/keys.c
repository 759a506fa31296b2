/*
 * keys.c: the key set of jwt.h: PEM parsing (each key parsed into an
 * EVP_PKEY once), kids, the JWKS document, the HMAC key derived from the
 * current key, key files and key generation. A sl_jwt_keys never changes
 * after it is built, so it needs no lock.
 */
#include "connectors/http/auth/jwt.h"
#include "connectors/http/auth/jwt_int.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

/* A key file is a few KiB; anything larger is not a key. */
#define MAX_KEY_FILE (64 * 1024)
#define MAX_RSA_BITS 8192
#define MIN_RSA_BITS 2048

/* ---- keys ---------------------------------------------------------------- */

/* Never prompt on a terminal for an encrypted key: refuse it. */
static int no_passphrase(char *buf, int size, int rwflag, void *opaque) {
    (void)buf, (void)size, (void)rwflag, (void)opaque;
    return -1;
}

static EVP_PKEY *parse_pem(const char *pem, size_t len, bool public_allowed, const char *label,
                           char *errstr, size_t errstr_size) {
    if (!pem || len == 0 || len > MAX_KEY_FILE) {
        sl_fail(errstr, errstr_size, SL_ERR_CONFIG, "%s: empty or larger than %d bytes", label,
                MAX_KEY_FILE);
        return NULL;
    }
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    if (!bio) {
        sl_jwt_ossl_fail(errstr, errstr_size, SL_ERR_NOMEM, "BIO_new_mem_buf");
        return NULL;
    }
    EVP_PKEY *pkey = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
    BIO_free(bio);
    if (!pkey && public_allowed) {
        ERR_clear_error();
        bio = BIO_new_mem_buf(pem, (int)len);
        if (!bio) {
            sl_jwt_ossl_fail(errstr, errstr_size, SL_ERR_NOMEM, "BIO_new_mem_buf");
            return NULL;
        }
        pkey = PEM_read_bio_PUBKEY(bio, NULL, no_passphrase, NULL);
        BIO_free(bio);
    }
    if (!pkey) {
        char what[256];
        snprintf(what, sizeof(what),
                 "%s: no usable %s PEM key (unencrypted PKCS#8, PKCS#1 or SEC1%s)", label,
                 public_allowed ? "private or public" : "private",
                 public_allowed ? ", or SubjectPublicKeyInfo" : "");
        sl_jwt_ossl_fail(errstr, errstr_size, SL_ERR_CONFIG, what);
        return NULL;
    }
    return pkey;
}

/* Which alg a key pins, and the length of its signatures. */
static sl_err key_kind(EVP_PKEY *pkey, const char *label, sl_jwt_alg *alg, size_t *sig_len,
                       char *errstr, size_t errstr_size) {
    if (EVP_PKEY_is_a(pkey, "RSA")) {
        int bits = EVP_PKEY_get_bits(pkey);
        if (bits < MIN_RSA_BITS || bits > MAX_RSA_BITS)
            return sl_fail(errstr, errstr_size, SL_ERR_CONFIG,
                           "%s: RSA key of %d bits (must be %d..%d)", label, bits, MIN_RSA_BITS,
                           MAX_RSA_BITS);
        *alg = SL_JWT_RS256;
        *sig_len = (size_t)EVP_PKEY_get_size(pkey);
        return SL_OK;
    }
    if (EVP_PKEY_is_a(pkey, "EC")) {
        char group[64];
        size_t group_len = 0;
        if (EVP_PKEY_get_group_name(pkey, group, sizeof(group), &group_len) != 1) {
            ERR_clear_error();
            return sl_fail(errstr, errstr_size, SL_ERR_CONFIG, "%s: EC key without a named curve",
                           label);
        }
        if (strcmp(group, "prime256v1") != 0 && strcmp(group, "P-256") != 0)
            return sl_fail(errstr, errstr_size, SL_ERR_CONFIG,
                           "%s: EC key on curve %s (only P-256, for ES256)", label, group);
        *alg = SL_JWT_ES256;
        *sig_len = 64;
        return SL_OK;
    }
    const char *type = EVP_PKEY_get0_type_name(pkey);
    return sl_fail(errstr, errstr_size, SL_ERR_CONFIG,
                   "%s: %s keys are not supported (RSA for RS256, EC P-256 for ES256)", label,
                   type ? type : "this kind of");
}

/* Fill `key` from any key holding a public half: a public-only copy (made
 * from its DER SubjectPublicKeyInfo), its alg and its kid. */
static sl_err key_init(jwt_key *key, EVP_PKEY *pkey, const EVP_MD *sha256, const char *label,
                       char *errstr, size_t errstr_size) {
    sl_err err = key_kind(pkey, label, &key->alg, &key->sig_len, errstr, errstr_size);
    if (err)
        return err;
    unsigned char *der = NULL;
    int der_len = i2d_PUBKEY(pkey, &der);
    if (der_len <= 0)
        return sl_jwt_ossl_fail(errstr, errstr_size, SL_ERR_CONFIG, "cannot encode the public key");
    const unsigned char *p = der;
    key->pub = d2i_PUBKEY(NULL, &p, der_len);
    unsigned char digest[EVP_MAX_MD_SIZE];
    int ok = EVP_Digest(der, (size_t)der_len, digest, NULL, sha256, NULL);
    OPENSSL_free(der);
    if (!key->pub || ok != 1)
        return sl_jwt_ossl_fail(errstr, errstr_size, SL_ERR_CONFIG, "cannot derive the key id");
    sl_jwt_b64url_encode(digest, 16, key->kid, sizeof(key->kid));
    return SL_OK;
}

/* An unsigned big-endian integer parameter of a key as base64url; `width`
 * pads to a fixed size (EC coordinates), 0 keeps the minimal form (RSA). */
static sl_err bn_param_b64(const EVP_PKEY *pkey, const char *param, int width, char *out,
                           size_t out_size) {
    BIGNUM *bn = NULL;
    if (EVP_PKEY_get_bn_param(pkey, param, &bn) != 1)
        return SL_ERR_CONFIG;
    unsigned char bytes[MAX_SIG];
    int n = BN_num_bytes(bn);
    sl_err err = SL_ERR_CONFIG;
    if (n <= (int)sizeof(bytes) && width <= (int)sizeof(bytes)) {
        n = width ? BN_bn2binpad(bn, bytes, width) : BN_bn2bin(bn, bytes);
        if (n > 0)
            err = sl_jwt_b64url_encode(bytes, (size_t)n, out, out_size);
    }
    BN_free(bn);
    return err;
}

static json_t *jwk_of(const jwt_key *key) {
    char a[MAX_SIG * 2], b[MAX_SIG * 2];
    if (key->alg == SL_JWT_RS256) {
        if (bn_param_b64(key->pub, OSSL_PKEY_PARAM_RSA_N, 0, a, sizeof(a)) ||
            bn_param_b64(key->pub, OSSL_PKEY_PARAM_RSA_E, 0, b, sizeof(b)))
            return NULL;
        return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "kty", "RSA", "use", "sig", "alg",
                         "RS256", "kid", key->kid, "n", a, "e", b);
    }
    if (bn_param_b64(key->pub, OSSL_PKEY_PARAM_EC_PUB_X, 32, a, sizeof(a)) ||
        bn_param_b64(key->pub, OSSL_PKEY_PARAM_EC_PUB_Y, 32, b, sizeof(b)))
        return NULL;
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "kty", "EC", "use", "sig", "alg",
                     "ES256", "kid", key->kid, "crv", "P-256", "x", a, "y", b);
}

static sl_err build_jwks(sl_jwt_keys *keys, char *errstr, size_t errstr_size) {
    json_t *list = json_array();
    json_t *root = json_pack("{s:o}", "keys", list);
    if (!root) {
        json_decref(list);
        return sl_fail(errstr, errstr_size, SL_ERR_NOMEM, "JWKS: out of memory");
    }
    for (size_t i = 0; i < keys->n_keys; i++) {
        json_t *jwk = jwk_of(&keys->key[i]);
        if (!jwk || json_array_append_new(list, jwk) != 0) {
            ERR_clear_error();
            json_decref(root);
            return sl_fail(errstr, errstr_size, SL_ERR_CONFIG, "JWKS: cannot export key %s",
                           keys->key[i].kid);
        }
    }
    keys->jwks = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(root);
    if (!keys->jwks)
        return sl_fail(errstr, errstr_size, SL_ERR_NOMEM, "JWKS: out of memory");
    keys->jwks_len = strlen(keys->jwks);
    return SL_OK;
}

/* mac_key = HMAC-SHA256(key: the private key's DER, "sluice/v1 mac key").
 * Every instance configured with the same signing key derives the same
 * secret, with nothing more to distribute; the DER is wiped at once. */
static sl_err derive_mac_key(sl_jwt_keys *keys, char *errstr, size_t errstr_size) {
    unsigned char *der = NULL;
    int der_len = i2d_PrivateKey(keys->signing, &der);
    if (der_len <= 0)
        return sl_jwt_ossl_fail(errstr, errstr_size, SL_ERR_CONFIG,
                                "cannot encode the current key");
    static const char label[] = "sluice/v1 mac key";
    unsigned int out_len = 0;
    unsigned char *ok = HMAC(EVP_sha256(), der, der_len, (const unsigned char *)label,
                             sizeof(label) - 1, keys->mac_key, &out_len);
    OPENSSL_clear_free(der, (size_t)der_len);
    if (!ok || out_len != sizeof(keys->mac_key))
        return sl_jwt_ossl_fail(errstr, errstr_size, SL_ERR_CONFIG, "cannot derive the MAC key");
    return SL_OK;
}

sl_err sl_jwt_keys_mac(const sl_jwt_keys *keys, const char *label, const void *data, size_t len,
                       unsigned char out[32]) {
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *ctx = mac ? EVP_MAC_CTX_new(mac) : NULL;
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0),
                           OSSL_PARAM_construct_end()};
    size_t out_len = 0;
    /* The label and the data are separated by a NUL, which a label never
     * contains: ("a", "bc") and ("ab", "c") give different MACs. */
    bool ok = ctx && EVP_MAC_init(ctx, keys->mac_key, sizeof(keys->mac_key), params) == 1 &&
              EVP_MAC_update(ctx, (const unsigned char *)label, strlen(label) + 1) == 1 &&
              (len == 0 || EVP_MAC_update(ctx, data, len) == 1) &&
              EVP_MAC_final(ctx, out, &out_len, 32) == 1 && out_len == 32;
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(mac);
    if (!ok) {
        ERR_clear_error();
        return SL_ERR_IO;
    }
    return SL_OK;
}

static sl_jwt_keys *keys_build(const char *current_pem, size_t current_len,
                               const char *current_label, const char *previous_pem,
                               size_t previous_len, const char *previous_label, char *errstr,
                               size_t errstr_size) {
    sl_jwt_keys *keys = calloc(1, sizeof(*keys));
    if (!keys) {
        sl_fail(errstr, errstr_size, SL_ERR_NOMEM, "out of memory");
        return NULL;
    }
    keys->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    if (!keys->sha256) {
        sl_jwt_ossl_fail(errstr, errstr_size, SL_ERR_CONFIG, "OpenSSL has no SHA256");
        goto fail;
    }
    keys->signing = parse_pem(current_pem, current_len, false, current_label, errstr, errstr_size);
    if (!keys->signing)
        goto fail;
    if (key_init(&keys->key[0], keys->signing, keys->sha256, current_label, errstr, errstr_size))
        goto fail;
    keys->n_keys = 1;
    if (previous_pem && previous_len > 0) {
        EVP_PKEY *previous =
            parse_pem(previous_pem, previous_len, true, previous_label, errstr, errstr_size);
        if (!previous)
            goto fail;
        sl_err err =
            key_init(&keys->key[1], previous, keys->sha256, previous_label, errstr, errstr_size);
        EVP_PKEY_free(previous); /* key[1].pub is a public-only copy */
        keys->n_keys = 2;        /* so that destroy frees key[1].pub */
        if (err)
            goto fail;
        if (strcmp(keys->key[0].kid, keys->key[1].kid) == 0) {
            sl_fail(errstr, errstr_size, SL_ERR_CONFIG, "%s is the same key as the %s",
                    previous_label, current_label);
            goto fail;
        }
    }
    if (build_jwks(keys, errstr, errstr_size))
        goto fail;
    if (derive_mac_key(keys, errstr, errstr_size))
        goto fail;
    return keys;
fail:
    sl_jwt_keys_destroy(keys);
    return NULL;
}

sl_jwt_keys *sl_jwt_keys_from_pem(const char *current_pem, size_t current_len,
                                  const char *previous_pem, size_t previous_len, char *errstr,
                                  size_t errstr_size) {
    return keys_build(current_pem, current_len, "current key", previous_pem, previous_len,
                      "previous key", errstr, errstr_size);
}

/* Read a whole (small) file into a fresh buffer of *len + 1 bytes. */
static char *read_key_file(const char *path, size_t *len, char *errstr, size_t errstr_size) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        sl_fail(errstr, errstr_size, SL_ERR_CONFIG, "key file '%s': cannot open: %s", path,
                strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size <= 0 ||
        st.st_size > MAX_KEY_FILE) {
        sl_fail(errstr, errstr_size, SL_ERR_CONFIG,
                "key file '%s': not a regular file of 1..%d bytes", path, MAX_KEY_FILE);
        close(fd);
        return NULL;
    }
    size_t size = (size_t)st.st_size;
    char *buf = malloc(size + 1);
    size_t got = 0;
    while (buf && got < size) {
        ssize_t n = read(fd, buf + got, size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    if (!buf || got != size) {
        if (buf)
            OPENSSL_cleanse(buf, size);
        free(buf);
        sl_fail(errstr, errstr_size, buf ? SL_ERR_IO : SL_ERR_NOMEM,
                "key file '%s': cannot read it", path);
        return NULL;
    }
    buf[size] = '\0';
    *len = size;
    return buf;
}

sl_jwt_keys *sl_jwt_keys_load(const char *current_path, const char *previous_path, char *errstr,
                              size_t errstr_size) {
    if (!current_path || !*current_path) {
        sl_fail(errstr, errstr_size, SL_ERR_CONFIG, "no signing key file given");
        return NULL;
    }
    char current_label[PATH_MAX + 32], previous_label[PATH_MAX + 32] = "previous key";
    snprintf(current_label, sizeof(current_label), "key file '%s'", current_path);
    size_t current_len = 0, previous_len = 0;
    char *previous = NULL;
    char *current = read_key_file(current_path, &current_len, errstr, errstr_size);
    if (!current)
        return NULL;
    if (previous_path && *previous_path) {
        snprintf(previous_label, sizeof(previous_label), "previous key file '%s'", previous_path);
        previous = read_key_file(previous_path, &previous_len, errstr, errstr_size);
        if (!previous) {
            OPENSSL_cleanse(current, current_len);
            free(current);
            return NULL;
        }
    }
    sl_jwt_keys *keys = keys_build(current, current_len, current_label, previous, previous_len,
                                   previous_label, errstr, errstr_size);
    /* Private key material does not linger in freed heap memory. */
    OPENSSL_cleanse(current, current_len);
    free(current);
    if (previous) {
        OPENSSL_cleanse(previous, previous_len);
        free(previous);
    }
    return keys;
}

void sl_jwt_keys_destroy(sl_jwt_keys *keys) {
    if (!keys)
        return;
    for (size_t i = 0; i < keys->n_keys; i++)
        EVP_PKEY_free(keys->key[i].pub);
    EVP_PKEY_free(keys->signing);
    EVP_MD_free(keys->sha256);
    free(keys->jwks);
    OPENSSL_cleanse(keys->mac_key, sizeof(keys->mac_key));
    free(keys);
}

const char *sl_jwt_keys_current_kid(const sl_jwt_keys *keys) {
    return keys->key[0].kid;
}

const char *sl_jwt_keys_previous_kid(const sl_jwt_keys *keys) {
    return keys->n_keys > 1 ? keys->key[1].kid : NULL;
}

sl_jwt_alg sl_jwt_keys_alg(const sl_jwt_keys *keys) {
    return keys->key[0].alg;
}

const char *sl_jwt_jwks_json(const sl_jwt_keys *keys, size_t *len) {
    if (len)
        *len = keys->jwks_len;
    return keys->jwks;
}

const jwt_key *sl_jwt_find_key(const sl_jwt_keys *keys, const char *kid) {
    for (size_t i = 0; i < keys->n_keys; i++)
        if (strcmp(keys->key[i].kid, kid) == 0)
            return &keys->key[i];
    return NULL;
}

/* ---- key generation ------------------------------------------------------ */

static sl_err write_all(int fd, const char *data, size_t len) {
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return SL_ERR_IO;
        data += n;
        len -= (size_t)n;
    }
    return SL_OK;
}

/* fsync the directory holding `path`, so the new name survives a crash. */
static void sync_parent_dir(const char *path) {
    char dir[PATH_MAX];
    const char *slash = strrchr(path, '/');
    if (!slash)
        sl_jwt_copy_text(dir, sizeof(dir), ".");
    else if (slash == path)
        sl_jwt_copy_text(dir, sizeof(dir), "/");
    else
        snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

sl_err sl_jwt_key_generate(const char *path, sl_jwt_alg alg, bool *created, char *errstr,
                           size_t errstr_size) {
    if (created)
        *created = false;
    if (!path || !*path || (alg != SL_JWT_RS256 && alg != SL_JWT_ES256))
        return sl_fail(errstr, errstr_size, SL_ERR_INVALID, "key generation: bad arguments");
    char tmp[PATH_MAX];
    int n = snprintf(tmp, sizeof(tmp), "%s.tmp.XXXXXX", path);
    if (n < 0 || (size_t)n >= sizeof(tmp))
        return sl_fail(errstr, errstr_size, SL_ERR_INVALID, "key file path is too long");
    if (access(path, F_OK) == 0)
        return SL_OK; /* never replace a key: that would log everybody out */

    EVP_PKEY *pkey = alg == SL_JWT_RS256 ? EVP_RSA_gen(MIN_RSA_BITS) : EVP_EC_gen("P-256");
    if (!pkey)
        return sl_jwt_ossl_fail(errstr, errstr_size, SL_ERR_IO, "key generation failed");
    /* secmem: the PEM text is wiped when the BIO is freed. */
    BIO *bio = BIO_new(BIO_s_secmem());
    sl_err err = SL_OK;
    if (!bio || PEM_write_bio_PrivateKey(bio, pkey, NULL, NULL, 0, NULL, NULL) != 1) {
        err = sl_jwt_ossl_fail(errstr, errstr_size, SL_ERR_IO, "cannot encode the new key as PEM");
        goto done;
    }
    char *pem = NULL;
    long pem_len = BIO_get_mem_data(bio, &pem);
    if (pem_len <= 0) {
        err = sl_fail(errstr, errstr_size, SL_ERR_IO, "cannot encode the new key as PEM");
        goto done;
    }
    int fd = mkostemp(tmp, O_CLOEXEC); /* mode 0600 */
    if (fd < 0) {
        err = sl_fail(errstr, errstr_size, SL_ERR_IO, "key file '%s': cannot create %s: %s", path,
                      tmp, strerror(errno));
        goto done;
    }
    if (fchmod(fd, 0600) != 0 || write_all(fd, pem, (size_t)pem_len) != SL_OK || fsync(fd) != 0) {
        err = sl_fail(errstr, errstr_size, SL_ERR_IO, "key file '%s': cannot write %s: %s", path,
                      tmp, strerror(errno));
        close(fd);
        unlink(tmp);
        goto done;
    }
    close(fd);
    /* link() rather than rename(): it fails instead of replacing a key that
     * another process created meanwhile. */
    if (link(tmp, path) == 0) {
        if (created)
            *created = true;
        sync_parent_dir(path);
    } else if (errno != EEXIST) {
        err = sl_fail(errstr, errstr_size, SL_ERR_IO, "key file '%s': cannot create it: %s", path,
                      strerror(errno));
    }
    unlink(tmp);
done:
    BIO_free(bio);
    EVP_PKEY_free(pkey);
    return err;
}
