/*
 * resolve: addresses and login names to accounts. Domains are compared in
 * their canonical form (idn.h), so a domain configured as a U-label takes
 * mail and logins written with its A-label and the other way round.
 */
#define _GNU_SOURCE 1
#include "daemon/resolve.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>

#include "daemon/idn.h"

#define ITEM(arr, type, i) (&((const type *)(arr).v)[i])

/* Our domain for name in any spelling; NULL when not ours or not a valid name. */
static const struct config_domain *
find_domain(const struct config *cfg, const char *name)
{
	char canon[IDN_BUFSIZE];

	if (idn_domain_canon(name, strlen(name), canon, sizeof(canon), NULL, 0) < 0)
		return NULL;
	return config_domain_find(cfg, canon);
}

/* Find destination "lp@domain" of our domain dom (lp compared as the domain says). */
static int
find_dest(const struct config *cfg, const char *lp, size_t lplen, const struct config_domain *dom,
    bool case_sensitive, struct resolved *r)
{
	for (size_t i = 0; i < cfg->dom.accounts.n; i++) {
		const struct config_account *a = ITEM(cfg->dom.accounts, struct config_account, i);
		for (size_t j = 0; j < a->destinations.n; j++) {
			const struct config_destination *d = ITEM(a->destinations, struct config_destination, j);
			const char *at = strrchr(d->name, '@');
			if (at == NULL || d->domain_canon == NULL || strcmp(d->domain_canon, dom->canon) != 0 ||
			    (size_t)(at - d->name) != lplen)
				continue;
			if (case_sensitive ? strncmp(d->name, lp, lplen) != 0 : strncasecmp(d->name, lp, lplen) != 0)
				continue;
			r->account = a;
			r->dest = d;
			r->mailbox = d->mailbox && d->mailbox[0] ? d->mailbox : "INBOX";
			return 1;
		}
	}
	return 0;
}

int
resolve_recipient(const struct config *cfg, const char *localpart, const char *domain, struct resolved *r)
{
	const struct config_domain *d = find_domain(cfg, domain);
	size_t lplen = strlen(localpart);

	memset(r, 0, sizeof(*r));
	if (d == NULL)
		return -1;
	/* Cut the localpart at the first catch-all separator: mjl+news -> mjl. */
	for (size_t i = 0; i < d->localpart_catchall_separators.n; i++) {
		const char *sep = strchr(localpart, d->localpart_catchall_separators.v[i][0]);
		if (sep != NULL && (size_t)(sep - localpart) < lplen && sep != localpart)
			lplen = (size_t)(sep - localpart);
	}
	if (find_dest(cfg, localpart, lplen, d, d->localpart_case_sensitive, r) > 0)
		return 1;
	if (find_dest(cfg, "", 0, d, false, r) > 0) /* catch-all "@domain" */
		return 1;
	if (strcasecmp(localpart, "postmaster") == 0 && cfg->st.postmaster.account != NULL) {
		r->account = config_account_find(cfg, cfg->st.postmaster.account);
		r->mailbox = cfg->st.postmaster.mailbox ? cfg->st.postmaster.mailbox : "INBOX";
		return r->account != NULL ? 1 : 0;
	}
	return 0;
}

int
resolve_login(const struct config *cfg, const char *username, const struct config_account **acc_r)
{
	const char *at = strrchr(username, '@');
	struct resolved r;

	if (at != NULL && at != username) {
		const struct config_domain *d = find_domain(cfg, at + 1);
		if (d != NULL && find_dest(cfg, username, (size_t)(at - username), d, d->localpart_case_sensitive, &r) > 0) {
			*acc_r = r.account;
			return 1;
		}
		return 0;
	}
	*acc_r = config_account_find(cfg, username);
	return *acc_r != NULL ? 1 : 0;
}
