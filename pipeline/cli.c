#include "cli.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>

int cli_parse_ll(const char *text, long long lo, long long hi, long long *out)
{
    if (!text || !*text)
        return -1;
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

int cli_parse_int(const char *text, int lo, int hi, int *out)
{
    long long v;
    if (cli_parse_ll(text, lo, hi, &v) < 0)
        return -1;
    *out = (int)v;
    return 0;
}

int cli_parse_double(const char *text, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    const double v = strtod(text, &end);
    if (end == text || *end != '\0' || errno == ERANGE || !isfinite(v) || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

const char *cli_option_name(const struct option *options, int val)
{
    for (; options->name; options++)
        if (options->val == val)
            return options->name;
    return "?";
}
