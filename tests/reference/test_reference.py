#!/usr/bin/python3
"""Tests of the PyTorch reference itself: since it is the numerical ground
truth, its structure must be the real checkpoint's, its decoding the card's,
its random weights honest, and the committed fixtures what it computes.

    /usr/bin/python3 tests/reference/test_reference.py [NAME_SUBSTRING...]

Runs every test_* function (or those whose name contains one of the given
substrings), prints "N passed, M failed" and exits 1 if any failed.
"""

import copy
import os
import sys
import tempfile
import traceback
import zipfile

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import captioner  # noqa: E402
import check_torch_load  # noqa: E402
import make_fixtures  # noqa: E402

TINY_DIR = os.path.join(HERE, "..", "fixtures", "tiny")
TINY_CONFIG = os.path.join(TINY_DIR, "config.json")

_cache = {}


def full_model():
    """The card's model with default init (built once: ~100M parameters)."""
    if "full" not in _cache:
        _cache["full"] = captioner.build_model(captioner.load_config())
    return _cache["full"]


def tiny_model(seed=7):
    cfg = captioner.load_config(TINY_CONFIG)
    return captioner.randomize(captioner.build_model(cfg), seed, cfg), cfg


# --------------------------------------------------------------------------
# Structure of the card's model: the real checkpoint's keys, in its order
# --------------------------------------------------------------------------


def test_full_state_dict_has_the_real_checkpoints_keys():
    state = full_model().state_dict()
    keys = list(state)
    assert len(keys) == 398, len(keys)
    assert keys[0] == "pos_encoder", keys[0]
    shapes = {
        "pos_encoder": (1, 2000, 512),
        "encoder.embedder.embedder.convolution.weight": (64, 3, 7, 7),
        "encoder.embedder.embedder.normalization.num_batches_tracked": (),
        "encoder.encoder.stages.0.layers.0.shortcut.convolution.weight": (256, 64, 1, 1),
        "encoder.encoder.stages.1.layers.0.layer.1.normalization.running_var": (128,),
        "encoder.encoder.stages.1.layers.0.layer.1.convolution.weight": (128, 128, 3, 3),
        "encoder.encoder.stages.3.layers.2.layer.2.normalization.weight": (2048,),
        "vis_proj.weight": (512, 2048),
        "graph_layer.msg_linear.weight": (512, 512),
        "embedding.weight": (30522, 512),
        "decoder.layers.3.multihead_attn.in_proj_weight": (1536, 512),
        "decoder.layers.0.linear1.weight": (1024, 512),
        "decoder.layers.0.norm3.bias": (512,),
        "fc_out.bias": (30522,),
    }
    for key, shape in shapes.items():
        assert key in state, key
        assert tuple(state[key].shape) == shape, (key, tuple(state[key].shape))
    assert keys[-2:] == ["fc_out.weight", "fc_out.bias"], keys[-2:]
    # A shortcut projection only where the shape changes: first layer of each stage.
    shortcuts = sorted(k for k in keys if k.endswith("shortcut.convolution.weight"))
    assert shortcuts == [f"encoder.encoder.stages.{i}.layers.0.shortcut.convolution.weight"
                         for i in range(4)], shortcuts


def test_full_batchnorms_store_int64_num_batches_tracked():
    state = full_model().state_dict()
    counters = [k for k in state if k.endswith("num_batches_tracked")]
    # stem + 3 per bottleneck (3+4+6+3 = 16 of them) + 4 shortcut projections
    assert len(counters) == 1 + 3 * 16 + 4, len(counters)
    for k in counters:
        assert state[k].dtype == torch.int64 and state[k].shape == (), k
    others = [v.dtype for k, v in state.items() if not k.endswith("num_batches_tracked")]
    assert set(others) == {torch.float32}, set(others)


def test_full_encoder_has_resnet50_parameter_count():
    # torchvision's resnet50 has 25,557,032 parameters, of which its fc layer
    # (2048*1000 + 1000) is not part of Hugging Face's ResNetModel.
    n = sum(p.numel() for p in full_model().encoder.parameters())
    assert n == 25_557_032 - 2_049_000, n


def test_full_encoder_maps_224_to_2048x7x7_and_49_tokens():
    cfg = captioner.load_config()
    assert captioner.feature_side(cfg) == 7
    with torch.no_grad():
        encoder_out, vis_tokens, memory = captioner.encode(full_model(), torch.zeros(1, 3, 224, 224))
    assert encoder_out.shape == (1, 2048, 7, 7), encoder_out.shape
    assert vis_tokens.shape == memory.shape == (1, 49, 512), memory.shape


def test_tiny_feature_side_matches_the_encoder():
    model, cfg = tiny_model()
    side = captioner.feature_side(cfg)
    with torch.no_grad():
        out = model.encoder(pixel_values=torch.zeros(1, 3, cfg["image_size"], cfg["image_size"]))
    assert out.last_hidden_state.shape == (1, cfg["hidden_sizes"][-1], side, side)


def test_config_rejects_unknown_keys_and_accepts_comments():
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        f.write('{"_note": "x", "embed_dim": 16, "num_heads": 2}')
    try:
        cfg = captioner.load_config(f.name)
        assert cfg["embed_dim"] == 16 and cfg["vocab_size"] == 30522
        with open(f.name, "w") as g:
            g.write('{"embed_dims": 16}')
        try:
            captioner.load_config(f.name)
            raise AssertionError("unknown key accepted")
        except ValueError as e:
            assert "embed_dims" in str(e)
    finally:
        os.unlink(f.name)


# --------------------------------------------------------------------------
# Decoding: the card's logic
# --------------------------------------------------------------------------


def test_encode_and_decode_last_equal_the_cards_forward():
    model, cfg = tiny_model()
    gen = torch.Generator().manual_seed(3)
    images = captioner.random_images(2, cfg, gen)
    with torch.no_grad():
        for seq_len in (1, 2, 17):
            captions = torch.randint(0, cfg["vocab_size"], (2, seq_len), generator=gen)
            full = model(images, captions)[:, -1, :]
            halves = captioner.decode_last(model, captioner.encode(model, images)[2], captions)
            assert torch.allclose(full, halves, rtol=0, atol=1e-5), (full - halves).abs().max()


def test_greedy_equals_the_cards_generate_caption_loop():
    model, cfg = tiny_model()
    images = captioner.random_images(3, cfg, torch.Generator().manual_seed(5))
    for image in images:
        # The card's loop, re-running the whole model on every step.
        img_tensor = image.unsqueeze(0)
        input_ids = [cfg["bos_token_id"]]
        with torch.no_grad():
            for _ in range(cfg["max_len"]):
                outputs = model(img_tensor, torch.tensor([input_ids]))
                next_token = outputs[0, -1, :].argmax().item()
                if next_token == cfg["eos_token_id"]:
                    break
                input_ids.append(next_token)
        assert captioner.greedy(model, image, cfg) == input_ids[1:]


def test_greedy_batch_equals_greedy_image_by_image():
    # Batched, incremental decoding (what make_fixtures.py records) against
    # the card's loop run on each image alone: same ids, and the logits of
    # every step within float rounding.
    model, cfg = tiny_model(seed=1234)
    images = captioner.random_images(8, cfg, torch.Generator().manual_seed(21))
    with torch.no_grad():
        memory = captioner.encode(model, images)[2]
    batched = {}
    ids = captioner.greedy_batch(model, memory, cfg, on_step=lambda step, rows, logits:
                                 batched.update({(int(r), step): l for r, l in zip(rows, logits)}))
    lengths = [len(x) for x in ids]
    assert min(lengths) < cfg["max_len"] and max(lengths) == cfg["max_len"], lengths
    for i, image in enumerate(images):
        want_ids, want_logits = captioner.greedy_with_logits(model, image, cfg)
        assert ids[i] == want_ids, i
        assert sorted(step for row, step in batched if row == i) == list(range(len(want_logits))), i
        for step, want in enumerate(want_logits):
            got = batched[(i, step)]
            assert (got - want).abs().max() <= 1e-5 * want.abs().max(), (i, step)


def test_bench_lean_decoder_equals_the_reference():
    # make bench times PyTorch with torch_bench.py's LeanDecoder (written
    # for speed): its logits at every step and its greedy captions must be
    # the reference's (_decode_newest, greedy_batch) within float rounding.
    sys.path.insert(0, os.path.join(HERE, "..", "bench"))
    import torch_bench
    model, cfg = tiny_model(seed=1234)
    images = captioner.random_images(8, cfg, torch.Generator().manual_seed(21))
    with torch.no_grad():
        memory = captioner.encode(model, images)[2]
        lean = torch_bench.LeanDecoder(model, cfg["max_len"])
        bos = torch.full((8,), cfg["bos_token_id"], dtype=torch.long)
        difference = torch_bench.lean_difference(lean, model, memory, bos, 12)
        assert difference <= 1e-5, difference
        steps = []

        class Counted(torch_bench.LeanDecoder):
            def step(self, *args):
                steps.append(args[2])
                return super().step(*args)

        ids = captioner.greedy_batch(model, memory, cfg, decoder=Counted(model, cfg["max_len"]))
    assert steps == list(range(cfg["max_len"])), steps  # the lean decoder made every step
    assert ids == captioner.greedy_batch(model, memory, cfg)
    lengths = [len(x) for x in ids]
    assert min(lengths) < cfg["max_len"] and max(lengths) == cfg["max_len"], lengths


def test_greedy_batch_without_eos_and_with_stopped_rows():
    model, cfg = tiny_model(seed=1234)
    images = captioner.random_images(4, cfg, torch.Generator().manual_seed(21))
    with torch.no_grad():
        memory = captioner.encode(model, images)[2]
    greedy_ids = [captioner.greedy(model, image, cfg) for image in images]
    # With eos forbidden every caption runs max_len steps, along greedy's path
    # until greedy stopped.
    forced = captioner.greedy_batch(model, memory, cfg, allow_eos=False)
    for want, got in zip(greedy_ids, forced):
        assert len(got) == cfg["max_len"] and cfg["eos_token_id"] not in got
        assert got[:len(want)] == want
    # on_step's False rows stop there, the others go on unchanged.
    stopped = captioner.greedy_batch(model, memory, cfg,
                                     on_step=lambda step, rows, logits: (rows != 1) | (step < 3))
    assert stopped[1] == greedy_ids[1][:3], stopped[1]
    assert [stopped[i] for i in (0, 2, 3)] == [greedy_ids[i] for i in (0, 2, 3)]


# --------------------------------------------------------------------------
# Random weights: honest and well scaled
# --------------------------------------------------------------------------


def test_randomize_draws_every_tensor_from_the_seed_alone():
    cfg = captioner.load_config(TINY_CONFIG)
    states = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)  # default init differs...
        model = captioner.randomize(captioner.build_model(cfg), 11, cfg)
        states.append(model.state_dict())
    for key in states[0]:  # ...and randomize overwrote all of it
        assert torch.equal(states[0][key], states[1][key]), key


def test_randomize_leaves_no_tensor_trivial_or_shared():
    model, cfg = tiny_model()
    state = model.state_dict()
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            assert int(value) > 0, key
            continue
        assert value.std() > 0.01, key  # not constant: no zero bias, no unit norm
        assert not torch.all(value == 1) and not torch.all(value == 0), key
    # No two tensors equal: decoder layers were not deep copies of one another.
    items = list(state.items())
    for i, (ka, va) in enumerate(items):
        for kb, vb in items[i + 1:]:
            assert va.shape != vb.shape or not torch.equal(va, vb), (ka, kb)


def test_random_model_gives_varied_captions_and_sane_activations():
    model, cfg = tiny_model(seed=1234)
    images = captioner.random_images(12, cfg, torch.Generator().manual_seed(21))
    with torch.no_grad():
        encoder_out, vis_tokens, memory = captioner.encode(model, images)
    assert 0.1 < encoder_out.std() < 10 and 0.1 < memory.std() < 10
    # The graph layer works mostly in its Hardtanh's linear range.
    assert vis_tokens.abs().max() <= make_fixtures.MAX_VIS, vis_tokens.abs().max()
    clamped = make_fixtures.saturation(memory)
    assert clamped <= make_fixtures.MAX_SATURATION, clamped
    captions = [tuple(captioner.greedy(model, image, cfg)) for image in images]
    lengths = [len(c) for c in captions]
    assert len(set(captions)) >= 6, captions
    assert min(lengths) < cfg["max_len"] and max(lengths) == cfg["max_len"], lengths


def test_random_model_keeps_float32_rounding_small():
    # The parity test allows 1e-4 of each tensor's max |value|. Two correct
    # float32 implementations differ by about the float32 rounding error,
    # which the random model must not amplify towards that limit: here the
    # reference in float32 against itself in float64.
    model, cfg = tiny_model(seed=1234)
    images = captioner.random_images(6, cfg, torch.Generator().manual_seed(21))
    with torch.no_grad():
        single = captioner.encode(model, images)
        double = captioner.encode(copy.deepcopy(model).double(), images.double())
        ids = torch.tensor([[cfg["bos_token_id"]] + list(range(200, 239))] * len(images))
        logits = (captioner.decode_last(model, single[2], ids),
                  captioner.decode_last(copy.deepcopy(model).double(), double[2], ids))
    for name, got, want in zip(("encoder_out", "vis_tokens", "memory", "logits"),
                               single + logits[:1], double + logits[1:]):
        ratio = float((got.double() - want).abs().max() / want.abs().max())
        assert ratio < 1e-5, (name, ratio)


def test_random_resnet50_is_well_conditioned():
    # The card-sized encoder (the tiny one is too shallow to show either
    # fault): an image of twice the contrast gets features about twice as
    # large, not 5-10 times (uncentred filters), and the float32 output is
    # within 1e-5 of float64 (the earlier weights: 4e-5).
    cfg = captioner.load_config()
    encoder = captioner.ResNetModel(cfg).eval()
    captioner._randomize_encoder(encoder, torch.Generator().manual_seed(5), cfg)
    images = captioner.random_images(3, cfg, torch.Generator().manual_seed(21))
    mean = torch.tensor(cfg["image_mean"]).view(1, 3, 1, 1)
    std = torch.tensor(cfg["image_std"]).view(1, 3, 1, 1)
    pixels = images * std + mean
    with torch.no_grad():
        once, twice = (encoder(pixel_values=(0.5 + k * (pixels - 0.5) - mean) / std).last_hidden_state
                       for k in (1.0, 2.0))
        double = copy.deepcopy(encoder).double()(pixel_values=images[:2].double()).last_hidden_state
    for i in range(len(images)):
        assert twice[i].std() < 2.5 * once[i].std(), (i, float(twice[i].std() / once[i].std()))
    ratio = float((once[:2].double() - double).abs().max() / double.abs().max())
    assert ratio < 1e-5, ratio


def test_check_useful_rejects_ill_conditioned_fixtures():
    cfg = captioner.load_config(TINY_CONFIG)
    ids = [[1] * k for k in range(cfg["max_len"] - 7, cfg["max_len"] + 1)]
    gen = torch.Generator().manual_seed(3)
    encoder_out = torch.randn(8, 64, 3, 3, generator=gen)
    vis_tokens = torch.randn(8, 9, 32, generator=gen) * 0.4
    memory = vis_tokens.clamp(-1, 1)
    make_fixtures.check_useful(cfg, ids, encoder_out, vis_tokens, memory)
    big = vis_tokens.clone()
    big[3, 4, 5] = 6.0
    try:
        make_fixtures.check_useful(cfg, ids, encoder_out, big, memory)
        raise AssertionError("max |vis_tokens| 6 accepted")
    except RuntimeError as e:
        assert "max |vis_tokens| 6" in str(e), e
    saturated = (vis_tokens * 3).clamp(-1, 1)
    try:
        make_fixtures.check_useful(cfg, ids, encoder_out, vis_tokens, saturated)
        raise AssertionError("saturated memory accepted")
    except RuntimeError as e:
        assert "Hardtanh clamps" in str(e), e


def test_draw_inputs_keeps_the_first_acceptable_draws():
    # draw_inputs decodes many draws at once; its inputs must be those that
    # drawing and decoding one image at a time would keep.
    model, cfg = tiny_model(seed=1234)
    steps = [k for k in make_fixtures.LOGIT_STEPS if k < cfg["max_len"]]
    min_gap = 3e-3  # high, so that some draws are rejected
    fixture, ids, rejected, _ = make_fixtures.draw_inputs(model, cfg, 40, 6, min_gap, steps)
    gen = torch.Generator().manual_seed(41)
    want_inputs, want_ids, want_rejected = [], [], 0
    while len(want_inputs) < 6:
        image = captioner.random_images(1, cfg, gen)[0]
        image_ids, step_logits = captioner.greedy_with_logits(model, image, cfg)
        if min(float(make_fixtures.rel_gaps(l[None])[0]) for l in step_logits) < min_gap:
            want_rejected += 1
            continue
        want_inputs.append(image)
        want_ids.append(image_ids)
    assert want_rejected > 0
    assert rejected == want_rejected, (rejected, want_rejected)
    assert torch.equal(fixture["input"], torch.stack(want_inputs))
    assert ids == want_ids


# --------------------------------------------------------------------------
# Fixture writing and the committed tiny fixtures
# --------------------------------------------------------------------------


def test_safetensors_layout_and_round_trip():
    tensors = [("a", np.arange(6, dtype=np.float32).reshape(2, 3)),
               ("b", np.array([-1, 2**40], dtype=np.int64)), ("c", np.float32(np.nan).reshape(()))]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "t.safetensors")
        make_fixtures.write_safetensors(path, tensors, {"seed": 3})
        raw = open(path, "rb").read()
        n = int.from_bytes(raw[:8], "little")
        assert n % 8 == 0 and len(raw) == 8 + n + 24 + 16 + 4
        assert raw[8:9] == b"{"
        got, meta = make_fixtures.read_safetensors(path)
    assert meta == {"seed": "3"}
    assert list(got) == ["a", "b", "c"]
    for name, want in tensors:
        assert got[name].dtype == want.dtype and got[name].shape == want.shape
        assert np.array_equal(got[name], want, equal_nan=True), name


def test_committed_tiny_fixtures_are_what_the_reference_computes():
    cfg = captioner.load_config(os.path.join(TINY_DIR, "config.json"))
    ref, meta = make_fixtures.read_safetensors(os.path.join(TINY_DIR, "reference.safetensors"))
    assert list(ref) == ["input", "encoder_out", "vis_tokens", "memory", "greedy_ids",
                         "greedy_len", "logit_steps", "logits"], list(ref)
    n, S, L, D = len(ref["input"]), cfg["image_size"], captioner.feature_side(cfg) ** 2, cfg["embed_dim"]
    steps = [k for k in make_fixtures.LOGIT_STEPS if k < cfg["max_len"]]
    assert n >= 20
    assert ref["input"].shape == (n, 3, S, S)
    assert ref["encoder_out"].shape == (n, cfg["hidden_sizes"][-1]) + (captioner.feature_side(cfg),) * 2
    assert ref["vis_tokens"].shape == ref["memory"].shape == (n, L, D)
    assert ref["greedy_ids"].shape == (n, cfg["max_len"]) and ref["greedy_len"].shape == (n,)
    assert ref["logit_steps"].tolist() == steps
    assert ref["logits"].shape == (n, len(steps), cfg["vocab_size"])

    ok, message = check_torch_load.check(os.path.join(TINY_DIR, "model.bin"), os.path.join(TINY_DIR, "config.json"))
    assert ok, message
    model = captioner.build_model(cfg)
    model.load_state_dict(torch.load(os.path.join(TINY_DIR, "model.bin")))
    inputs = torch.from_numpy(ref["input"].copy())
    with torch.no_grad():
        for name, got in zip(("encoder_out", "vis_tokens", "memory"), captioner.encode(model, inputs)):
            want = torch.from_numpy(ref[name].copy())
            assert (got - want).abs().max() <= 1e-5 * want.abs().max(), name
    for i in range(n):
        ids, step_logits = captioner.greedy_with_logits(model, inputs[i], cfg)
        length = int(ref["greedy_len"][i])
        assert ids == ref["greedy_ids"][i, :length].tolist(), i
        assert (ref["greedy_ids"][i, length:] == -1).all(), i
        for j, k in enumerate(steps):
            recorded = torch.from_numpy(ref["logits"][i, j].copy())
            if k < len(step_logits):
                assert (step_logits[k] - recorded).abs().max() <= 1e-5 * recorded.abs().max(), (i, k)
            else:
                assert torch.isnan(recorded).all(), (i, k)
    lengths = ref["greedy_len"].tolist()
    assert min(lengths) < cfg["max_len"] and max(lengths) == cfg["max_len"], lengths


def test_check_torch_load_names_each_fault():
    cfg = captioner.load_config(TINY_CONFIG)
    model = captioner.build_model(cfg)
    good = model.state_dict()

    def verdict(state):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "m.bin")
            torch.save(state, path)
            return check_torch_load.check(path, TINY_CONFIG)

    ok, message = verdict(good)
    assert ok and message == f"ok {len(good)} tensors", message
    missing = {k: v for k, v in good.items() if k != "graph_layer.msg_linear.bias"}
    ok, message = verdict(missing)
    assert not ok and "missing keys: graph_layer.msg_linear.bias" in message, message
    extra = dict(good, **{"decoder.layers.9.norm1.weight": torch.zeros(3)})
    ok, message = verdict(extra)
    assert not ok and "unexpected keys: decoder.layers.9.norm1.weight" in message, message
    shaped = dict(good, **{"fc_out.bias": torch.zeros(7)})
    ok, message = verdict(shaped)
    assert not ok and "fc_out.bias" in message and "(7,)" in message, message
    halved = dict(good, **{"fc_out.bias": good["fc_out.bias"].half()})
    ok, message = verdict(halved)
    assert not ok and "torch.float16" in message, message
    reordered = dict(reversed(list(good.items())))
    ok, message = verdict(reordered)
    assert not ok and "key order" in message and "index 0" in message, message
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bad.bin")
        with open(path, "wb") as f:
            f.write(b"PK\x03\x04 truncated")
        ok, message = check_torch_load.check(path, TINY_CONFIG)
    assert not ok and message.startswith("torch.load failed"), message


def test_save_checkpoint_names_the_archive():
    model, _ = tiny_model()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.bin")
        make_fixtures.save_checkpoint(model, path, "roco_best_model")
        names = zipfile.ZipFile(path).namelist()
        assert "roco_best_model/data.pkl" in names, names
        make_fixtures.save_checkpoint(model, path)
        assert "model/data.pkl" in zipfile.ZipFile(path).namelist()
        state = torch.load(path)
    assert list(state) == list(model.state_dict())


def main(argv):
    tests = [(name, fn) for name, fn in sorted(globals().items())
             if name.startswith("test_") and callable(fn)
             and (len(argv) < 2 or any(s in name for s in argv[1:]))]
    torch.set_grad_enabled(False)
    passed = failed = 0
    for name, fn in tests:
        try:
            fn()
        except Exception:  # assertion or error: report and go on
            failed += 1
            print(f"FAIL {name}")
            traceback.print_exc(file=sys.stdout)
        else:
            passed += 1
            print(f"ok   {name}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
