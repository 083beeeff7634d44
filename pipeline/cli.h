/* cli.h: small helpers shared by the commands' option parsing. */
#ifndef RC_CLI_H
#define RC_CLI_H

/* Parses a whole decimal integer in [lo, hi]; -1 if text is not one. */
int cli_parse_ll(const char *text, long long lo, long long hi, long long *out);

/* Like cli_parse_ll for an int. */
int cli_parse_int(const char *text, int lo, int hi, int *out);

/* Parses a whole finite decimal number (strtod syntax) in [lo, hi]; -1 if
 * text is not one. */
int cli_parse_double(const char *text, double lo, double hi, double *out);

struct option;
/* The long name of the option whose getopt value is val ("?" if none). */
const char *cli_option_name(const struct option *options, int val);

#endif
