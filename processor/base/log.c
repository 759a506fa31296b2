/* log.c: format a line and pass it to the installed callback. */
#include "processor/base/log.h"

#include "processor/base/trace.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void sl_log(const sl_logger *logger, sl_log_level level, const char *component, const char *fmt,
            ...) {
    if (!logger || !logger->fn || level > logger->level)
        return;
    char line[1024];
    const char *trace = sl_trace_current();
    /* room kept for " trace=<trace id>" */
    size_t room = sizeof(line) - (trace ? 8 + SL_TRACE_ID_LEN : 0);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, room, fmt, ap);
    va_end(ap);
    if (trace) {
        size_t used = n < 0 ? 0 : (size_t)n < room ? (size_t)n : room - 1;
        snprintf(line + used, sizeof(line) - used, " trace=%.*s", SL_TRACE_ID_LEN, trace + 3);
    }
    /* One event, one line: fold embedded newlines (from librdkafka messages,
     * say) so a line-oriented log shipper never splits an event. */
    for (char *p = line; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    logger->fn(logger->opaque, level, component, line);
}

const char *sl_log_level_name(sl_log_level level) {
    switch (level) {
    case SL_LOG_ERROR:
        return "error";
    case SL_LOG_WARN:
        return "warn";
    case SL_LOG_INFO:
        return "info";
    case SL_LOG_DEBUG:
        return "debug";
    }
    return "unknown";
}

bool sl_log_level_parse(const char *name, sl_log_level *level) {
    static const sl_log_level all[] = {SL_LOG_ERROR, SL_LOG_WARN, SL_LOG_INFO, SL_LOG_DEBUG};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        if (strcmp(name, sl_log_level_name(all[i])) == 0) {
            *level = all[i];
            return true;
        }
    }
    return false;
}
