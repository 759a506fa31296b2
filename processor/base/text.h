/*
 * text.h: checks and makers for the text values every room handles: UTF-8
 * (profile fields, message text, passwords), canonical UUIDs (user ids,
 * command ids), calendar dates and hex (keys in instance routes).
 *
 * Pure functions of their input except sl_uuid_v4 (getrandom): no
 * allocation, no clock, any thread. A processor replaying old commands
 * decides the same way as the gateway that first saw them.
 */
#ifndef SLUICE_TEXT_H
#define SLUICE_TEXT_H

#include <stdbool.h>
#include <stddef.h>

#include "processor/base/error.h"

/* Characters of a canonical UUID (8-4-4-4-12), without the NUL. */
#define SL_UUID_LEN 36

/* True if `len` bytes of s are valid UTF-8 (no overlong forms, no
 * surrogates, nothing above U+10FFFF) without NUL or C0/C1 controls other
 * than TAB, LF, CR (allowed only when multiline). */
bool sl_text_valid(const char *s, size_t len, bool multiline);

/* True if `len` bytes of s are well-formed UTF-8 without a NUL (controls
 * allowed: message text). */
bool sl_utf8_valid(const char *s, size_t len);

/* Code points in `len` bytes of valid UTF-8. */
size_t sl_utf8_chars(const char *s, size_t len);

/* True for a canonical UUID: 8-4-4-4-12 hex digits, lower case. */
bool sl_uuid_valid(const char *s);
/* A random (version 4) UUID, lower case, into out (37 bytes). SL_ERR_IO
 * when the kernel gives no randomness. */
sl_err sl_uuid_v4(char out[SL_UUID_LEN + 1]);
/* The UUID (version 8, RFC 9562 custom) whose 122 free bits are the first
 * bytes of `digest` (at least 16): a stable id derived from a MAC. */
void sl_uuid_from_digest(const unsigned char *digest, char out[SL_UUID_LEN + 1]);

/* True for "YYYY-MM-DD", a real calendar date (no clock involved, so a
 * processor replaying old commands decides the same way). */
bool sl_date_valid(const char *s);

/* True if the JSON text's nesting (objects and arrays, counted outside
 * strings) stays within max_depth. Counted before jansson sees the text:
 * jansson's own limit (JSON_PARSER_MAX_DEPTH, 2048) is a compile-time
 * constant with no decode flag. Balance and everything else is the
 * parser's to check. */
bool sl_json_depth_ok(const char *text, size_t len, int max_depth);

/* `len` bytes as lower-case hex into out (2 * len + 1 bytes, NUL-ended). */
void sl_hex_encode(const void *data, size_t len, char *out);
/* Hex (either case, even length) into at most `size` bytes of out: the
 * byte count, or -1 when malformed or longer than size. */
long sl_hex_decode(const char *hex, unsigned char *out, size_t size);

#endif
