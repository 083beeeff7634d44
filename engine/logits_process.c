#include "logits_process.h"

#include <math.h>
#include <string.h>

int lp_active(const gen_decoding *d)
{
    return d->repetition_penalty != 1.0 || d->no_repeat_ngram > 0 || d->min_length > 0;
}

static void penalise_repeats(float penalty, const int *seq, int n_seq, float *scores)
{
    for (int t = 0; t < n_seq; t++) {
        int seen = 0;
        for (int u = 0; u < t && !seen; u++)
            seen = seq[u] == seq[t];
        if (seen)
            continue;
        float *s = scores + seq[t];
        *s = *s < 0 ? *s * penalty : *s / penalty;
    }
}

/* Bans the token after every earlier occurrence of the sequence's last
 * n - 1 tokens, i.e. every n-gram start i whose first n - 1 tokens equal
 * the tail. */
static void ban_repeated_ngrams(int n, const int *seq, int n_seq, float *scores)
{
    const int *tail = seq + n_seq - (n - 1);
    for (int i = 0; i + n <= n_seq; i++)
        if (memcmp(seq + i, tail, sizeof(int) * (n - 1)) == 0)
            scores[seq[i + n - 1]] = -INFINITY;
}

void lp_apply(const gen_decoding *d, int eos_token_id, const int *seq, int n_seq, float *scores)
{
    if (d->repetition_penalty != 1.0)
        penalise_repeats((float)d->repetition_penalty, seq, n_seq, scores);
    if (d->no_repeat_ngram > 0)
        ban_repeated_ngrams(d->no_repeat_ngram, seq, n_seq, scores);
    if (n_seq - 1 < d->min_length)
        scores[eos_token_id] = -INFINITY;
}
