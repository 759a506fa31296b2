/* pbjson.c: protobuf-c messages as JSON, by descriptor. See pbjson.h. */
#include "processor/gateway/pbjson.h"

#include <openssl/evp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

json_t *sl_pbjson_base64(const void *data, size_t len) {
    if (len > (size_t)INT32_MAX / 2)
        return NULL;
    char *text = malloc(4 * ((len + 2) / 3) + 1);
    if (!text)
        return NULL;
    EVP_EncodeBlock((unsigned char *)text, data, (int)len);
    json_t *s = json_string(text);
    free(text);
    return s;
}

bool sl_pbjson_base64_decode(const char *text, unsigned char **out, size_t *out_len) {
    size_t n = strlen(text);
    *out = NULL;
    *out_len = 0;
    if (n % 4 || n > (size_t)INT32_MAX / 2)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = text[i];
        bool pad_ok = c == '=' && i >= n - 2 && (i == n - 1 || text[n - 1] == '=');
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '+' || c == '/' || pad_ok))
            return false;
    }
    unsigned char *buf = malloc(n / 4 * 3 + 1);
    if (!buf)
        return false;
    int got = EVP_DecodeBlock(buf, (const unsigned char *)text, (int)n);
    if (got < 0) {
        free(buf);
        return false;
    }
    /* EVP_DecodeBlock counts the padding's zero bytes: take them off. */
    size_t len = (size_t)got;
    if (n && text[n - 1] == '=')
        len--;
    if (n > 1 && text[n - 2] == '=')
        len--;
    *out = buf;
    *out_len = len;
    return true;
}

static bool redacted(const char *name) {
    return strstr(name, "password") || strstr(name, "secret");
}

static json_t *message_json(const ProtobufCMessage *m);

/* One value of field `f` at `p` (a scalar slot or an array element). */
static json_t *value_json(const ProtobufCFieldDescriptor *f, const void *p) {
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        return json_integer(*(const int32_t *)p);
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        return json_integer(*(const uint32_t *)p);
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        return json_integer(*(const int64_t *)p);
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64: {
        uint64_t v = *(const uint64_t *)p;
        return v <= INT64_MAX ? json_integer((json_int_t)v) : json_real((double)v);
    }
    case PROTOBUF_C_TYPE_FLOAT:
        return json_real(*(const float *)p);
    case PROTOBUF_C_TYPE_DOUBLE:
        return json_real(*(const double *)p);
    case PROTOBUF_C_TYPE_BOOL:
        return json_boolean(*(const protobuf_c_boolean *)p);
    case PROTOBUF_C_TYPE_ENUM: {
        int v = *(const int *)p;
        const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(f->descriptor, v);
        return ev ? json_string(ev->name) : json_integer(v);
    }
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)p;
        /* invalid UTF-8 (a producer's bytes) shows as base64 of the bytes */
        json_t *j = json_string(s ? s : "");
        return j ? j : sl_pbjson_base64(s, strlen(s));
    }
    case PROTOBUF_C_TYPE_BYTES: {
        const ProtobufCBinaryData *b = p;
        return sl_pbjson_base64(b->data, b->len);
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessage *sub = *(ProtobufCMessage *const *)p;
        return sub ? message_json(sub) : json_null();
    }
    }
    return json_null();
}

static size_t element_size(ProtobufCType type) {
    switch (type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
    case PROTOBUF_C_TYPE_FLOAT:
    case PROTOBUF_C_TYPE_ENUM:
        return 4;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
    case PROTOBUF_C_TYPE_DOUBLE:
        return 8;
    case PROTOBUF_C_TYPE_BOOL:
        return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_STRING:
    case PROTOBUF_C_TYPE_MESSAGE:
        return sizeof(void *);
    case PROTOBUF_C_TYPE_BYTES:
        return sizeof(ProtobufCBinaryData);
    }
    return 0;
}

static json_t *message_json(const ProtobufCMessage *m) {
    const ProtobufCMessageDescriptor *d = m->descriptor;
    json_t *obj = json_object();
    for (unsigned i = 0; obj && i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        const char *base = (const char *)m;
        json_t *v;
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            if (*(const uint32_t *)(base + f->quantifier_offset) != f->id)
                continue; /* another member of the oneof is set */
            v = value_json(f, base + f->offset);
        } else if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)(base + f->quantifier_offset);
            const char *items = *(char *const *)(base + f->offset);
            v = json_array();
            for (size_t k = 0; v && k < n; k++)
                json_array_append_new(v, value_json(f, items + k * element_size(f->type)));
        } else if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->quantifier_offset &&
                   f->type != PROTOBUF_C_TYPE_STRING && f->type != PROTOBUF_C_TYPE_MESSAGE &&
                   !*(const protobuf_c_boolean *)(base + f->quantifier_offset)) {
            v = json_null(); /* an optional scalar that is not set */
        } else {
            v = value_json(f, base + f->offset);
        }
        if (redacted(f->name)) {
            json_decref(v);
            v = json_string("[redacted]");
        }
        json_object_set_new(obj, f->name, v ? v : json_null());
    }
    return obj;
}

json_t *sl_pbjson_render(const ProtobufCMessageDescriptor *type, const void *data, size_t len) {
    ProtobufCMessage *m = protobuf_c_message_unpack(type, NULL, len, data);
    if (!m)
        return NULL;
    json_t *obj = message_json(m);
    protobuf_c_message_free_unpacked(m, NULL);
    return obj;
}
