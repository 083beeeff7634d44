/* PLACEHOLDER: replaced by the real command while the engine is being built. */
#include "pipeline/commands.h"
#include <stdio.h>
int cmd_caption(int argc, char **argv)
{
    fprintf(stderr, "radcap %s: not built yet\n", argv[0]);
    return EXIT_FATAL;
}
