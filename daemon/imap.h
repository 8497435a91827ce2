/*
 * imap: the IMAP4rev2/IMAP4rev1 server (RFC 9051, RFC 3501 and the
 * extensions in the capability list). Owns the connections of the IMAP and
 * IMAPS services: sessions, authentication, the selected-mailbox view, every
 * command. Parsing is imap_parse.h's, storage the index's through store.h.
 * Does not: accept sockets, do TLS handshakes of implicit-TLS ports, or
 * touch the index on the loop thread.
 */
#ifndef MOX_IMAP_H
#define MOX_IMAP_H

#include "daemon/server.h"

/* Register for SVC_IMAP and SVC_IMAPS. */
extern const struct proto_handler imap_handler;

#endif
