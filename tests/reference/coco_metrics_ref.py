#!/usr/bin/env python3
"""An independent, deliberately plain implementation of the COCO caption
metrics (BLEU-1..4, CIDEr-D, ROUGE-L) as pycocoevalcap computes them, written
from their published description, to check pipeline/metrics.c.

Input on stdin, JSON: {"items": [{"candidate": str, "references": [str, ...]}, ...]}
Output on stdout, JSON: {"bleu": [4], "cider": x, "rouge_l": x,
  "per_image": [{"bleu": [4], "cider": x, "rouge_l": x} or null, ...]}
with every float written by repr (it round-trips exactly).

Conventions beyond pycocoevalcap (which crashes on these): an image with no
reference is not scored (null in per_image) and does not count in the corpus;
a corpus whose references hold no token scores CIDEr-D 0.
The corpus means use numpy's np.mean when numpy is importable, as the
reference does (its summation order is part of the last digit); otherwise a
plain sum.
"""
import json
import math
import sys

try:
    import numpy
except ImportError:
    numpy = None

N = 4


def mean(values):
    if not values:
        return 0.0
    if numpy is not None:
        return float(numpy.mean(numpy.array(values, dtype=numpy.float64)))
    return sum(values) / len(values)


def ngram_counts(sentence):
    """{ngram tuple: count}, in insertion order: order 1 first, then by position."""
    words = sentence.split()
    counts = {}
    for n in range(1, N + 1):
        for i in range(len(words) - n + 1):
            gram = tuple(words[i:i + n])
            counts[gram] = counts.get(gram, 0) + 1
    return len(words), counts


# ---- BLEU ----

def bleu_counts(candidate, references):
    cand_len, cand = ngram_counts(candidate)
    ref_lens = []
    ref_max = {}
    for ref in references:
        length, counts = ngram_counts(ref)
        ref_lens.append(length)
        for gram, count in counts.items():
            ref_max[gram] = max(ref_max.get(gram, 0), count)
    closest = min((abs(length - cand_len), length) for length in ref_lens)[1]
    correct = [0] * N
    for gram, count in cand.items():
        correct[len(gram) - 1] += min(ref_max.get(gram, 0), count)
    guess = [max(0, cand_len - n + 1) for n in range(1, N + 1)]
    return correct, guess, cand_len, closest


def bleu_from(correct, guess, cand_len, ref_len):
    scores = []
    product = 1.0
    for n in range(N):
        product *= (float(correct[n]) + 1e-15) / (float(guess[n]) + 1e-9)
        scores.append(product ** (1.0 / (n + 1)))
    ratio = (cand_len + 1e-15) / (ref_len + 1e-9)
    if ratio < 1:
        scores = [s * math.exp(1 - 1 / ratio) for s in scores]
    return scores


# ---- CIDEr-D ----

def cider_scores(pairs):
    """pairs: [(candidate, [references])]; returns the per-image CIDEr-D."""
    cand_counts = [ngram_counts(c)[1] for c, _ in pairs]
    ref_counts = [[ngram_counts(r)[1] for r in refs] for _, refs in pairs]
    df = {}
    for refs in ref_counts:
        for gram in set(g for counts in refs for g in counts):
            df[gram] = df.get(gram, 0) + 1
    log_n = math.log(float(len(pairs))) if pairs else 0.0

    def vector(counts):
        vec = [{} for _ in range(N)]
        norm = [0.0] * N
        length = 0
        for gram, tf in counts.items():
            n = len(gram) - 1
            weight = float(tf) * (log_n - math.log(max(1.0, float(df.get(gram, 0)))))
            vec[n][gram] = weight
            norm[n] += weight ** 2
            if n == 1:
                length += tf
        return vec, [math.sqrt(x) for x in norm], length

    result = []
    for counts, refs in zip(cand_counts, ref_counts):
        vec, norm, length = vector(counts)
        score = [0.0] * N
        for ref in refs:
            rvec, rnorm, rlength = vector(ref)
            delta = float(length - rlength)
            for n in range(N):
                val = 0.0
                for gram in vec[n]:
                    r = rvec[n].get(gram, 0.0)
                    val += min(vec[n][gram], r) * r
                if norm[n] != 0 and rnorm[n] != 0:
                    val /= norm[n] * rnorm[n]
                val *= 2.718281828459045 ** (-(delta ** 2) / (2 * 6.0 ** 2))
                score[n] += val
        result.append(mean(score) / len(refs) * 10.0)
    return result


# ---- ROUGE-L ----

def lcs(a, b):
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            if a[i - 1] == b[j - 1]:
                table[i][j] = table[i - 1][j - 1] + 1
            else:
                table[i][j] = max(table[i - 1][j], table[i][j - 1])
    return table[len(a)][len(b)]


def rouge_l(candidate, references, beta=1.2):
    c = candidate.split(" ")
    precisions, recalls = [], []
    for ref in references:
        r = ref.split(" ")
        common = lcs(r, c)
        precisions.append(common / float(len(c)))
        recalls.append(common / float(len(r)))
    p, r = max(precisions), max(recalls)
    if p == 0 or r == 0:
        return 0.0
    return ((1 + beta ** 2) * p * r) / float(r + beta ** 2 * p)


def main():
    items = json.load(sys.stdin)["items"]
    scored = [(it["candidate"], it["references"]) for it in items if it["references"]]
    ciders = cider_scores(scored)
    totals = [[0] * N, [0] * N, 0, 0]
    per_image, rouges = [], []
    k = 0
    for it in items:
        if not it["references"]:
            per_image.append(None)
            continue
        correct, guess, cand_len, ref_len = bleu_counts(it["candidate"], it["references"])
        for n in range(N):
            totals[0][n] += correct[n]
            totals[1][n] += guess[n]
        totals[2] += cand_len
        totals[3] += ref_len
        rouge = rouge_l(it["candidate"], it["references"])
        rouges.append(rouge)
        per_image.append({"bleu": bleu_from(correct, guess, cand_len, ref_len),
                          "cider": ciders[k], "rouge_l": rouge})
        k += 1
    out = {"bleu": bleu_from(*totals), "cider": mean(ciders), "rouge_l": mean(rouges),
           "per_image": per_image}
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
