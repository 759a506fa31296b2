/*
 * pbjson.h: a stored value rendered as JSON through its protobuf-c
 * descriptor (the state endpoint, GET /v1/stores/...), with no hand-written
 * encoder per message type.
 *
 * Fields appear under their .proto names, every field (proto3 defaults
 * included, so the shape is the same for every value); 64-bit integers as
 * JSON integers; enums by value name (the number when unknown); bytes as
 * standard base64; oneof members only when set. A field whose name
 * contains "password" or "secret" is shown as "[redacted]" whatever its
 * value: the endpoint is for operators, not for reading credentials.
 */
#ifndef SLUICE_PBJSON_H
#define SLUICE_PBJSON_H

#include <jansson.h>
#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>

/* The value decoded with `type` as a JSON object (the caller owns it), or
 * NULL when the bytes are not a valid message of that type. */
json_t *sl_pbjson_render(const ProtobufCMessageDescriptor *type, const void *data, size_t len);

/* Standard padded base64 of `data` as a JSON string; NULL without memory. */
json_t *sl_pbjson_base64(const void *data, size_t len);

/* Decode standard base64 (padding required) into a malloc'd buffer:
 * *out (caller frees) and *out_len; false if `text` is not base64. */
bool sl_pbjson_base64_decode(const char *text, unsigned char **out, size_t *out_len);

#endif
