/*
 * smtp_private: what the files of the SMTP server share. One struct
 * smtp_conn per connection (state, flags, counters, the current
 * transaction); smtp_session.c owns its lifecycle and the command loop,
 * smtp_auth.c STARTTLS and AUTH, smtp_data.c DATA/BDAT into the spool and
 * the SPF/DKIM checks of inbound mail, smtp_deliver.c recipients, rulesets
 * and delivery. Loop thread only.
 */
#ifndef MOX_SMTP_PRIVATE_H
#define MOX_SMTP_PRIVATE_H

#include <stdbool.h>
#include <stdint.h>

#include <event2/bufferevent.h>
#include <event2/event.h>

#include "daemon/auth.h"
#include "daemon/server.h"
#include "daemon/smtp.h"
#include "daemon/smtp_parse.h"

#define SMTP_PKG "smtp"

enum smtp_state {
	SMTP_ST_INIT,    /* greeting sent, no EHLO/HELO yet */
	SMTP_ST_READY,   /* EHLO done, no transaction */
	SMTP_ST_MAIL,    /* MAIL accepted, no recipient yet */
	SMTP_ST_RCPT,    /* at least one recipient (or BDAT chunks under way) */
	SMTP_ST_DATA,    /* reading the DATA body */
	SMTP_ST_BDAT,    /* reading the bytes of one BDAT chunk */
	SMTP_ST_AUTH,    /* waiting for a SASL response line */
	SMTP_ST_BUSY,    /* waiting for work (delivery, auth delay, TLS) */
	SMTP_ST_CLOSING, /* the last reply is being flushed */
};
#define SMTP_STB(s) (1u << (s))

/* struct smtp_conn.flags */
#define SMTP_F_ESMTP     0x001u /* EHLO (not HELO) was given */
#define SMTP_F_TLS       0x002u /* the connection is TLS */
#define SMTP_F_AUTHED    0x004u /* AUTH succeeded */
#define SMTP_F_SUBMIT    0x008u /* a submission port */
#define SMTP_F_JOB       0x010u /* a storage job holds a pointer to the conn */
#define SMTP_F_DEAD      0x020u /* the client is gone: free when the job is done */
#define SMTP_F_SKIPLINE  0x040u /* drop input up to the next LF (line too long) */
#define SMTP_F_GOODCMD   0x080u /* a valid SMTP command was seen */
#define SMTP_F_STARTTLS  0x100u /* switch to TLS when the 220 is flushed */
#define SMTP_F_FREEING   0x200u /* the deferred free is scheduled */
#define SMTP_F_INPROC    0x400u /* process() is running: smtp_resume must not recurse */

/* One accepted recipient. */
struct smtp_rcpt {
	char *addr;      /* localpart@domain as sent (localpart unquoted) */
	char *localpart; /* unquoted */
	char *domain;    /* lowercased */
	char *account;   /* account name */
	bool local_any;  /* localserve submission: any address goes to the account */
};

/* The current mail transaction (MAIL through the end of the message). */
struct smtp_txn {
	char *mail_from;   /* "" for the null sender <> */
	bool smtputf8;
	bool requiretls;
	uint64_t declared_size;
	struct smtp_rcpt *rcpts;
	size_t nrcpts, rcpt_cap;

	/* message input (smtp_data.c) */
	struct maildir_writer *w;
	struct smtp_data data;  /* DATA reader */
	bool bdat;              /* BDAT chunks under way */
	uint64_t bdat_left;     /* bytes of the current chunk still to read */
	bool bdat_last;
	uint64_t size;          /* message bytes from the client */
	bool failed;            /* writing failed: answer 451 at the end */
	bool too_big;
	uint32_t prefix_len;    /* the headers we prepended (Received, Authentication-Results, ...) */
	bool want_header;       /* capture the header section for rulesets */
	struct mbuf header;     /* the message header, up to a cap */
	bool header_done;
	unsigned hdr_state;     /* CRLF CRLF scan state */

	/* SPF and DKIM of inbound mail (smtp_data.c); NULL: nothing is checked */
	struct smtp_verify *verify;
};

struct smtp_deliv; /* smtp_deliver.c: one delivery in progress */

/* What a session waits for when a timeout ends it (named in the log). */
enum smtp_phase {
	SMTP_PH_NONE,
	SMTP_PH_SETUP,   /* connect until the first MAIL or AUTH: SMTPSetupTimeout */
	SMTP_PH_COMMAND, /* the next command line: SMTPTimeout */
	SMTP_PH_AUTH,    /* a SASL response line: SMTPTimeout */
	SMTP_PH_DATA,    /* more message bytes: SMTPDataTimeout */
	SMTP_PH_MESSAGE, /* the rest of one message's data: SMTPMessageTimeout */
	SMTP_PH_WRITE,   /* the client to take a reply: SMTPTimeout */
};

struct smtp_conn {
	struct server *srv;
	struct conn_info *ci;
	struct bufferevent *bev;
	struct event *ev;  /* deferred work: auth delay, free */
	void (*ev_fn)(struct smtp_conn *c);
	struct smtp_conn *prev, *next;

	enum smtp_state state;
	unsigned flags;
	unsigned nerrors;
	unsigned njunk;  /* commands that move no mail (SMTPMaxJunkCommands), see dispatch */
	unsigned linger; /* 50 ms waits for TLS output to drain before the free */
	struct smtp_limits lim;
	const char *hostname;
	char *helo;

	struct smtp_txn *txn;
	struct smtp_deliv *deliv;
	/* A BDAT chunk that is read and dropped, then answered with skip_code. */
	uint64_t skip_bytes;
	int skip_code;

	/*
	 * Timeouts (smtp_session.c). Inactivity within message data and stuck
	 * writes are bufferevent timeouts; the rest are deadlines on tmo_ev,
	 * which carries the earliest of them. Times are mono_ms(), 0 when off.
	 */
	struct event *tmo_ev;
	enum smtp_phase tmo_phase; /* the deadline tmo_ev is set for */
	int64_t cmd_wait_since;    /* the wait for the next command line began */
	int64_t setup_deadline;    /* SMTPSetupTimeout after connect, until MAIL or AUTH */
	int64_t msg_deadline;      /* SMTPMessageTimeout after the data began, until it is in */

	struct auth_session *auth;
	bool auth_final;    /* SCRAM server-final sent: expect an empty line */
	int auth_fail_code; /* the reply after the failed-auth delay */
	char *account;      /* authenticated account */
};

/* smtp_session.c */
void smtp_set_state(struct smtp_conn *c, enum smtp_state st);
/* Append a reply; codes >= 400 carry the cid. Returns like smtp_replyf. */
int smtp_reply(struct smtp_conn *c, int code, const char *ecode, const char *fmt, ...) MOX_PRINTF(4, 5);
/* Count a client error; true when the session must end (reply sent). */
bool smtp_error(struct smtp_conn *c);
/* Send the final reply then close once it is flushed. */
void smtp_close_after(struct smtp_conn *c, int code, const char *ecode, const char *text);
/* Async work is done: go back to reading commands (also pipelined ones). */
void smtp_resume(struct smtp_conn *c, enum smtp_state st);
/* Run fn from the loop after ms milliseconds (one pending at a time). */
void smtp_defer(struct smtp_conn *c, int64_t ms, void (*fn)(struct smtp_conn *c));
/* Free a conn now, or when its storage job is done. */
void smtp_conn_release(struct smtp_conn *c);
void smtp_txn_free(struct smtp_txn **tp);
/* The config of the running server. */
const struct config *smtp_cfg(const struct smtp_conn *c);

/* Set the normal bufferevent callbacks and timeouts on c->bev. */
void smtp_session_setcb(struct smtp_conn *c);
/*
 * The data of one message begins (DATA's 354, the first BDAT of a message,
 * also one that is dropped) or is all in (the final "." or BDAT LAST):
 * starts or stops the SMTPMessageTimeout cap. Processing after the end of
 * the data (delivery) is not timed by it.
 */
void smtp_message_timer(struct smtp_conn *c, bool start);

/* smtp_auth.c */
/* The 220 for STARTTLS is flushed: start the TLS handshake. */
void smtp_starttls_go(struct smtp_conn *c);
void smtp_cmd_starttls(struct smtp_conn *c, struct smtp_cmd *cmd);
void smtp_cmd_auth(struct smtp_conn *c, struct smtp_cmd *cmd);
/* A SASL response line in SMTP_ST_AUTH. */
void smtp_auth_line(struct smtp_conn *c, const char *line, size_t len);
/* Whether AUTH may be used now / with plaintext mechanisms. */
bool smtp_auth_offered(const struct smtp_conn *c);
bool smtp_starttls_offered(const struct smtp_conn *c);

/* smtp_data.c */
void smtp_cmd_data(struct smtp_conn *c, struct smtp_cmd *cmd);
void smtp_cmd_bdat(struct smtp_conn *c, struct smtp_cmd *cmd);
/* Consume message input in SMTP_ST_DATA/SMTP_ST_BDAT. Returns false when
 * processing must stop (more input needed or the conn went busy). */
bool smtp_data_input(struct smtp_conn *c);

/*
 * Inbound SMTP with a resolver (server_dns): start the SPF check of a new
 * transaction (c->txn) for the MAIL FROM domain, canonical in mail_domain
 * ("" for the null reverse path or an address literal: then the HELO name
 * is checked for "<>", when it is a domain). Creates c->txn->verify; the
 * DKIM check and the headers follow at the end of the data. No-op otherwise.
 */
void smtp_verify_start(struct smtp_conn *c, const char *mail_domain);
/* Cancel the checks in flight and free. Accepts NULL; sets *vp = NULL. */
void smtp_verify_free(struct smtp_verify **vp);
/*
 * The verified domains of the transaction's message (canonical): the SPF
 * domain when SPF passed, the d= of each DKIM signature that passed with a
 * non-testing key. Valid until the transaction is freed. Returns the count.
 */
size_t smtp_verify_domains(const struct smtp_txn *t, const char *const **domains_r);

/* smtp_deliver.c */
void smtp_cmd_rcpt(struct smtp_conn *c, struct smtp_cmd *cmd);
/* The message is complete in txn->w: deliver it, then reply and resume. */
void smtp_deliver(struct smtp_conn *c);
/* Whether a recipient's rulesets look at message headers (capture them). */
bool smtp_deliver_want_header(struct smtp_conn *c);
void smtp_deliv_free(struct smtp_deliv **dp);
/* Release compiled rulesets (server shutdown). */
void smtp_rulesets_free(void);

#endif
