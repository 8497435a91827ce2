/*
 * smtp: the ESMTP server (RFC 5321) for inbound mail (port 25), message
 * submission with STARTTLS (587) and over implicit TLS (465). Owns the SMTP
 * sessions: command dispatch, STARTTLS, AUTH (through daemon/auth.h), DATA
 * and BDAT streaming into a spool file, and local delivery through the
 * account store. Does not: parse bytes itself (daemon/smtp_parse.h does),
 * relay to other servers (the outbound queue is its own module), or check
 * SPF/DKIM/DMARC yet.
 */
#ifndef MOX_SMTP_H
#define MOX_SMTP_H

#include "daemon/server.h"

/* Register for SVC_SMTP, SVC_SUBMISSION and SVC_SUBMISSIONS. */
extern const struct proto_handler smtp_handler;

#endif
