#!/usr/bin/env python3
"""PyTorch reference of radcap's decoding options, for tests/test_beam.c.

usage: beam_ref.py CONFIG.json CHECKPOINT MEMORY.f32 N < runs.json

MEMORY.f32 holds N images' memory tokens, float32 little-endian (N, L, D)
(what the encoder hands to the decoder). runs.json is a JSON list of
decoding settings, each an object with the keys of gen_decoding (beam,
length_penalty, early_stopping, min_length, no_repeat_ngram,
repetition_penalty) and max_len. Prints a JSON list with, per run, a list
per image of {"ids", "score", "mean_logprob", "min_token_prob",
"token_probs"}.

Written from issue #8 and Hugging Face's documented semantics, not from the
C code: the decoder is the card's full forward pass re-run on every prefix
(captioner.decode_last), all k beams are fed at every step, and scores are
float32 tensors as in transformers' beam_search:

* greedy (beam 1): processors on the raw logits, argmax;
* beam search: log_softmax, processors, plus the beam scores (beam 0 at 0,
  the others at -1e9 at the start), top 2k of the k*V (beam, token) pairs;
  an eos pair among the first k ends a hypothesis scored
  sum / generated_len^alpha (generated_len counts the eos, not bos); the
  others become the next k beams. An image is done when k hypotheses are
  kept and early_stopping is set or the worst kept score is at least the
  step's best pair score / (step + 1)^alpha. After max_len steps, live
  beams are offered with generated_len max_len. The best kept hypothesis
  wins (the latest among equals).
* processors (the sequence includes bos): repetition penalty (each
  distinct token's score times P if negative, else divided by P), no
  repeat n-gram (tokens that would complete an n-gram already in the
  sequence get -inf), min length (eos gets -inf while fewer than M tokens
  were generated).
* confidence: the softmax of the raw logits at each caption token
  ([SEP] excluded); mean of the natural logs, minimum, and every one.
"""
import json
import math
import sys

import numpy as np
import torch

import captioner


def process(scores, input_ids, run, eos):
    """The logits processors on scores (R, V) for sequences input_ids (R, T)."""
    penalty = run.get("repetition_penalty", 1.0)
    if penalty != 1.0:
        picked = torch.gather(scores, 1, input_ids)
        picked = torch.where(picked < 0, picked * penalty, picked / penalty)
        scores = scores.scatter(1, input_ids, picked)
    n = run.get("no_repeat_ngram", 0)
    if n > 0:
        scores = scores.clone()
        for row, seq in enumerate(input_ids.tolist()):
            if len(seq) + 1 < n:
                continue
            following = {}
            for start in range(len(seq) - n + 1):
                gram = tuple(seq[start:start + n])
                following.setdefault(gram[:-1], []).append(gram[-1])
            tail = tuple(seq[len(seq) - n + 1:]) if n > 1 else ()
            for token in following.get(tail, []):
                scores[row, token] = -math.inf
    if input_ids.shape[1] - 1 < run.get("min_length", 0):
        scores = scores.clone()
        scores[:, eos] = -math.inf
    return scores


def confidence(logprobs):
    if not logprobs:
        return None, None, []
    return (sum(logprobs) / len(logprobs), math.exp(min(logprobs)), [math.exp(x) for x in logprobs])


def result(ids, score, logprobs):
    mean, lowest, probs = confidence(logprobs)
    return {"ids": ids, "score": score, "mean_logprob": mean, "min_token_prob": lowest, "token_probs": probs}


def greedy(model, memory, cfg, run):
    bos, eos, max_len = cfg["bos_token_id"], cfg["eos_token_id"], run["max_len"]
    out = []
    for b in range(memory.shape[0]):
        seq, logprobs = [bos], []
        for _ in range(max_len):
            logits = captioner.decode_last(model, memory[b:b + 1], torch.tensor([seq]))
            token = int(process(logits, torch.tensor([seq]), run, eos)[0].argmax())
            if token == eos:
                break
            logprobs.append(float(torch.log_softmax(logits[0].double(), 0)[token]))
            seq.append(token)
        out.append(result(seq[1:], None, logprobs))
    return out


class Hypotheses:
    """An image's k best finished hypotheses, in the order added."""

    def __init__(self, k, alpha):
        self.k, self.alpha, self.kept, self.worst = k, alpha, [], 1e9

    def add(self, ids, logprobs, total, generated_len):
        score = total / generated_len ** self.alpha
        if len(self.kept) < self.k or score > self.worst:
            self.kept.append((score, ids, logprobs))
            if len(self.kept) > self.k:
                order = sorted((s, i) for i, (s, _, _) in enumerate(self.kept))
                del self.kept[order[0][1]]
                self.worst = order[1][0]
            else:
                self.worst = min(score, self.worst)

    def done(self, best_total, length, early_stopping):
        if len(self.kept) < self.k:
            return False
        return early_stopping or self.worst >= best_total / length ** self.alpha

    def best(self):
        return sorted(self.kept, key=lambda h: h[0])[-1]


def beam(model, memory, cfg, run):
    bos, eos, max_len, k = cfg["bos_token_id"], cfg["eos_token_id"], run["max_len"], run["beam"]
    alpha, early = run.get("length_penalty", 1.0), bool(run.get("early_stopping", 0))
    n, V = memory.shape[0], cfg["vocab_size"]
    beam_memory = memory.repeat_interleave(k, dim=0)
    input_ids = torch.full((n * k, 1), bos, dtype=torch.long)
    beam_scores = torch.zeros((n, k), dtype=torch.float32)
    beam_scores[:, 1:] = -1e9
    beam_scores = beam_scores.view(-1)
    beam_logprobs = [[] for _ in range(n * k)]
    hyps = [Hypotheses(k, alpha) for _ in range(n)]
    done = [False] * n
    for step in range(max_len):
        logits = captioner.decode_last(model, beam_memory, input_ids)
        raw = torch.log_softmax(logits, dim=-1)
        scores = process(raw, input_ids, run, eos) + beam_scores[:, None]
        top_scores, top_index = torch.topk(scores.view(n, k * V), 2 * k, dim=1, largest=True, sorted=True)
        next_scores = torch.zeros((n, k), dtype=torch.float32)
        next_tokens = torch.full((n, k), eos, dtype=torch.long)
        next_rows = torch.zeros((n, k), dtype=torch.long)
        for b in range(n):
            if done[b]:
                continue
            found = 0
            for rank in range(2 * k):
                row = b * k + int(top_index[b, rank]) // V
                token = int(top_index[b, rank]) % V
                total = float(top_scores[b, rank])
                if token == eos:
                    if rank < k:
                        hyps[b].add(input_ids[row, 1:].tolist(), beam_logprobs[row], total, step + 1)
                else:
                    next_scores[b, found], next_tokens[b, found], next_rows[b, found] = total, token, row
                    found += 1
                if found == k:
                    break
            done[b] = hyps[b].done(float(top_scores[b].max()), step + 1, early)
        rows = next_rows.view(-1)
        new_logprobs = []
        for i, row in enumerate(rows.tolist()):
            token = int(next_tokens.view(-1)[i])
            new_logprobs.append(beam_logprobs[row] + [float(raw[row, token].double())])
        beam_logprobs = new_logprobs
        input_ids = torch.cat([input_ids[rows], next_tokens.view(-1, 1)], dim=1)
        beam_scores = next_scores.view(-1)
        if all(done):
            break
    out = []
    for b in range(n):
        if not done[b]:
            for j in range(k):
                row = b * k + j
                hyps[b].add(input_ids[row, 1:].tolist(), beam_logprobs[row], float(beam_scores[row]), max_len)
        score, ids, logprobs = hyps[b].best()
        out.append(result(ids, score, logprobs))
    return out


def main(argv):
    if len(argv) != 5:
        print(__doc__, file=sys.stderr)
        return 2
    cfg, model = captioner.load_model(argv[1], argv[2])
    n, L, D = int(argv[4]), captioner.feature_side(cfg) ** 2, cfg["embed_dim"]
    memory = torch.from_numpy(np.fromfile(argv[3], dtype="<f4").reshape(n, L, D).copy())
    runs = json.load(sys.stdin)
    results = []
    with torch.no_grad():
        for run in runs:
            run.setdefault("max_len", cfg["max_len"])
            results.append(greedy(model, memory, cfg, run) if run.get("beam", 1) == 1 else
                           beam(model, memory, cfg, run))
    json.dump(results, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
