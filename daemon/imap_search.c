/*
 * imap_search: SEARCH / UID SEARCH (not complete yet: answers NO).
 */
#include "daemon/imap_private.h"

int
imap_cmd_search(struct imap_conn *c, struct imap_args *args)
{
	imap_no(c, "[CANNOT] SEARCH not available yet");
	return IMAP_CMD_DONE;
}
