/* error.c: names and messages of the sluice error codes. */
#include "processor/base/error.h"

#include <stdarg.h>
#include <stdio.h>

static const struct {
    const char *name;
    const char *msg;
} sl_err_table[] = {
#define SL_ERR_ROW_(code, msg) {#code, msg},
    SL_ERRORS(SL_ERR_ROW_)
#undef SL_ERR_ROW_
};

const char *sl_err_name(sl_err err) {
    if ((unsigned)err >= SL_ERR__COUNT)
        return "SL_ERR_UNKNOWN";
    return sl_err_table[err].name;
}

const char *sl_err_msg(sl_err err) {
    if ((unsigned)err >= SL_ERR__COUNT)
        return "unknown error code";
    return sl_err_table[err].msg;
}

sl_err sl_fail(char *errstr, size_t errstr_size, sl_err err, const char *fmt, ...) {
    if (errstr && errstr_size > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(errstr, errstr_size, fmt, ap);
        va_end(ap);
    }
    return err;
}
