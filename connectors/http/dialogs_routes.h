/*
 * dialogs_http.h: the dialogs routes of the HTTP gateway.
 *
 *   POST /dialog/{user_id}/send  {"text"} from the token's subject to
 *                                user_id: produces SendMessage keyed by the
 *                                dialog id and answers once the partition
 *                                owning the dialog decided (reply path):
 *                                200 {"dialog_id", "sequence"} with header
 *                                X-Sluice-Position: <sequence>; 400 invalid
 *                                text / user id / unknown recipient
 *   GET  /dialog/{user_id}/list  the dialog between the caller and user_id,
 *                                oldest first: [{"from","to","text"}];
 *                                ?offset= (default 0) &limit= (default and
 *                                cap dialogs.list.limit.max) &after=<seq>
 *                                (read-your-writes: wait until the message
 *                                with that sequence is stored)
 *   GET  /dialogs                the caller's dialogs from the per-user
 *                                index, by dialog id: [{"dialog_id",
 *                                "partner_id", "last_sequence",
 *                                "last_sender_id", "last_text",
 *                                "last_at_ms", "unread"}]; offset/limit
 *
 * Every route needs a valid, non-revoked access token (Authorization:
 * Bearer; 401 without). The dialog is always the caller's own (caller,
 * user_id), so nobody reads or writes a dialog they are not in. Reads are
 * routed to the owner of the dialog's (or the caller's) partition, which
 * authenticates the forwarded request again. Message text is never logged.
 *
 * Threading: new/routes/destroy on the app's thread; handlers on HTTP
 * threads.
 */
#ifndef SLUICE_DIALOGS_HTTP_H
#define SLUICE_DIALOGS_HTTP_H

#include "processor/gateway/gateway.h"
#include "connectors/http/identity_routes.h"
#include "processor/base/config.h"
#include "processor/http/server.h"
#include "processor/base/log.h"

/* The answer header that carries a send's position token. */
#define SL_DIALOGS_POSITION_HEADER "X-Sluice-Position"

typedef struct sl_dialogs_http sl_dialogs_http;

/* `config`, `gateway`, `identity` (for sl_identity_http_authenticate) and
 * `logger` are borrowed and must outlive the object. NULL + errstr. */
sl_dialogs_http *sl_dialogs_http_new(const sl_config *config, sl_gateway *gateway,
                                     sl_identity_http *identity, const sl_logger *logger,
                                     char *errstr, size_t errstr_size);

/* Register the routes above on `http` (before it starts). */
sl_err sl_dialogs_http_routes(sl_dialogs_http *dh, sl_http_server *http);

/* Stop the HTTP server first. NULL is fine. */
void sl_dialogs_http_destroy(sl_dialogs_http *dh);

#endif
