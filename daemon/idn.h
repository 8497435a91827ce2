/*
 * idn: one canonical form for domain names, so both spellings of an
 * internationalized domain (U-label "bücher.example", A-label
 * "xn--bcher-kva.example") compare equal. The canonical form is the
 * lower-case A-label (ASCII) form; conversion and validation are GNU
 * libidn2's (IDNA2008 with UTS#46 non-transitional mapping, NFC input).
 * Pure functions: no allocation that outlives a call, no logging, no globals.
 * Does not decide what a caller does with an invalid name.
 */
#ifndef MOX_IDN_H
#define MOX_IDN_H

#include <stddef.h>

#define IDN_NAME_MAX 253  /* octets of a canonical name, without a trailing dot */
#define IDN_LABEL_MAX 63  /* octets of one canonical label */
#define IDN_INPUT_MAX 2048 /* longer input is refused before any conversion */
/* An output buffer of this size holds every canonical name. */
#define IDN_BUFSIZE (IDN_NAME_MAX + 1)

/*
 * Write the canonical form of domain in[0..len) (UTF-8, not necessarily
 * NUL-terminated) to out, NUL-terminated. Labels of plain ASCII that do not
 * start with "xn--" are only lower-cased (their letters, digits, '-' and '_'
 * are kept as they are, whatever IDNA2008 would say about hyphens); every
 * other label goes through libidn2, which checks A-labels (punycode) and
 * refuses disallowed code points. One trailing dot (the root) is dropped.
 * The result has labels of 1..63 octets of [a-z0-9_-] and at most 253
 * octets in all.
 * Returns the length of out (> 0), or -1 with a short English reason in err
 * (ASCII, no input bytes, safe to send to a client). outsize should be
 * IDN_BUFSIZE; a smaller out that cannot hold the result is an error.
 */
int idn_domain_canon(const char *in, size_t len, char *out, size_t outsize, char *err, size_t errlen);

#endif
