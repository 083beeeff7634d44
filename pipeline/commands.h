/* commands.h: the subcommands of the radcap program.
 *
 * Each command lives in pipeline/cmd_<name>.c and is called by main() with
 * argv[0] set to the command's name. It returns the process exit status:
 * 0 on success, 1 when some items failed but the command completed, 2 on a
 * usage error, 3 when it could not run at all (missing file, bad model),
 * 4 when a signal interrupted it (radcap run: the run can be resumed).
 */
#ifndef RC_COMMANDS_H
#define RC_COMMANDS_H

enum { EXIT_OK = 0, EXIT_PARTIAL = 1, EXIT_USAGE = 2, EXIT_FATAL = 3, EXIT_INTERRUPTED = 4 };

int cmd_caption(int argc, char **argv);    /* caption images, print captions */
int cmd_init_model(int argc, char **argv); /* write a random-weights checkpoint */
int cmd_tokenize(int argc, char **argv);   /* WordPiece encode / decode JSON Lines */
int cmd_preprocess(int argc, char **argv); /* write the model input tensor of an image */
int cmd_score(int argc, char **argv);      /* BLEU / CIDEr-D / ROUGE-L of text files */
int cmd_export(int argc, char **argv);     /* a stored run's records as CSV or JSON Lines */
int cmd_synth(int argc, char **argv);      /* write a synthetic demo archive (ROCOv2 layout) */
int cmd_run(int argc, char **argv);        /* caption a manifest into the results database (MPI) */
int cmd_eval(int argc, char **argv);       /* score a stored run against its references */

#endif
