/* version.h: which build of radcap this is. */
#ifndef RC_VERSION_H
#define RC_VERSION_H

/* git's description of the checkout radcap was built from: the commit
 * (with the nearest tag when there is one) and "-dirty" when it had
 * uncommitted changes; "unknown" when built outside git. The Makefile
 * writes it into $(BUILD)/version.c, rewritten only when it changes. */
extern const char *const radcap_version;

#endif
