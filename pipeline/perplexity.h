/* perplexity.h: `radcap eval --perplexity`, the model card's own training
 * metric on a manifest's ground-truth captions. */
#ifndef RC_PERPLEXITY_H
#define RC_PERPLEXITY_H

/* Runs the command (argv as cmd_eval received it); returns the exit status. */
int eval_perplexity(int argc, char **argv);

#endif
