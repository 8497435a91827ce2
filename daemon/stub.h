/* stub: "not available" handlers for protocols not built yet (see stub.c). */
#ifndef MOX_STUB_H
#define MOX_STUB_H

#include "daemon/server.h"

extern const struct proto_handler stub_imap_handler;
extern const struct proto_handler stub_smtp_handler;
extern const struct proto_handler stub_http_handler;

#endif
