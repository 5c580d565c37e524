"""`ssd analyze fit`: the measures against hand computations on a designed tiny model (a 5-token
vocabulary whose next-token distribution depends only on the current token), and the whole command on
a train directory of tiny-random against an independent full-vocabulary computation."""

import math
import os
import shutil

import numpy as np
import pytest
import torch

import selfdistill.fit as fit_module
from selfdistill import analyze
from selfdistill.analyze import load_model, score
from selfdistill.config import FitConfig, TrainConfig
from selfdistill.fit import FitError, Target, fit, measures, target_positions
from selfdistill.generate import truncate_logits
from selfdistill.manifest import RunDir, read_jsonl, weights_sha256

# Next-token distributions of the designed models, by current token (5-token vocabulary).
BASE = {0: [0.5, 0.25, 0.15, 0.07, 0.03], 1: [0.9, 0.05, 0.03, 0.01, 0.01]}
TRAINED = {0: [0.4, 0.3, 0.1, 0.1, 0.1], 1: [0.85, 0.1, 0.02, 0.02, 0.01]}


def designed_model(path, next_token: dict[int, list[float]]) -> str:
    """A 1-layer Llama whose attention and MLP write nothing, so the last hidden state is the normalised
    embedding of the current token: one-hot token embeddings and an LM head holding each token's log
    next-token probabilities make logits = log p(. | current token)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    hidden = 8
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=5,
            hidden_size=hidden,
            intermediate_size=8,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            tie_word_embeddings=False,
            rms_norm_eps=1e-12,
        )
    )
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.model.norm.weight.fill_(1.0)
        for token in range(5):
            model.model.embed_tokens.weight[token, token] = 1.0  # RMS-normalised: sqrt(hidden) at that coordinate
            probs = next_token.get(token, [0.2] * 5)
            model.lm_head.weight[:, token] = torch.tensor(probs).log() / math.sqrt(hidden)
    model.save_pretrained(path)
    return str(path)


def test_measures_by_hand():
    """Current token 0 at T=1, top-k 3: S = {0, 1, 2}, q = (.5, .25, .15) / .9; the trained model puts .8 on S."""
    base, trained = torch.tensor([BASE[0]]).log(), torch.tensor([TRAINED[0]]).log()
    t = target_positions(base, 1.0, 3, 1.0)
    q = np.array([5 / 9, 5 / 18, 1 / 6])
    assert (
        t["support_len"].tolist() == [3] and t["support_ids"].tolist() == [0, 1, 2] and np.allclose(t["support_q"], q)
    )
    assert t["target_entropy"][0] == pytest.approx(-(q * np.log(q)).sum(), abs=1e-6)
    assert t["tail"][0] == pytest.approx(-math.log(0.9), abs=1e-6)  # the base model itself at T=1
    m = measures(trained, torch.tensor([[0, 1, 2]]), torch.from_numpy(q[None]))
    within = np.array([0.5, 0.375, 0.125])  # .4, .3, .1 renormalised on S
    assert m["tail"][0] == pytest.approx(-math.log(0.8), abs=1e-6)  # 0.2231
    assert m["within_kl"][0] == pytest.approx(
        5 / 9 * math.log(10 / 9) + 5 / 18 * math.log(20 / 27) + 1 / 6 * math.log(4 / 3), abs=1e-6
    )  # 0.0231
    assert m["entropy"][0] == pytest.approx(-(within * np.log(within)).sum(), abs=1e-6)  # 0.9743
    assert m["tv"][0] == pytest.approx(
        0.5 * (abs(5 / 9 - 0.4) + abs(5 / 18 - 0.3) + abs(1 / 6 - 0.1) + 0.2), abs=1e-6
    )  # 0.2222
    # KL(q || p) over the whole vocabulary is the sum of the two terms
    assert m["tail"][0] + m["within_kl"][0] == pytest.approx(
        (q * np.log(q / np.array(TRAINED[0][:3]))).sum(), abs=1e-6
    )


def test_temperature_then_top_p_by_hand():
    """T=2 takes square roots of (.64, .16, .16, .04): (4, 2, 2, 1) / 9; top-p .7 drops only the last
    (6/9 of the mass lies above it... and 8/9 before it), so q = (.5, .25, .25)."""
    t = target_positions(torch.tensor([[0.64, 0.16, 0.16, 0.04]]).log(), 2.0, 0, 0.7)
    assert t["support_len"].tolist() == [3] and np.allclose(t["support_q"], [0.5, 0.25, 0.25])
    assert t["target_entropy"][0] == pytest.approx(1.5 * math.log(2), abs=1e-6)


def test_designed_model_through_chunked_scoring(tmp_path, monkeypatch):
    """score() in chunks of 2 positions over two replies: every position's measures are the hand
    computation for its current token, so chunk and reply boundaries line up with the cached target."""
    monkeypatch.setattr(analyze, "CHUNK", 2)
    base = load_model(designed_model(tmp_path / "base", BASE))
    trained = load_model(designed_model(tmp_path / "trained", TRAINED))
    sequences = [
        ([1, 0], [0, 1, 0]),
        ([0], [1, 1, 0, 2]),
    ]  # (prompt, reply): the token before each reply token decides it
    target = score(
        base, "base", sequences, lambda logits, _: target_positions(logits, 1.0, 3, 1.0), tmp_path / "target.npz"
    )
    cache = Target(target)
    scores = score(
        trained,
        "trained",
        sequences,
        lambda logits, first: measures(logits, *cache.chunk(first, len(logits))),
        tmp_path / "s.npz",
    )
    current = [0, 0, 1, 0, 1, 1, 0]  # the token before each of the 7 reply positions
    expected_tail = {0: -math.log(0.8), 1: -math.log(0.85 + 0.1 + 0.02)}
    assert np.allclose(scores["tail"], [expected_tail[c] for c in current], atol=1e-5)
    assert target["support_len"].tolist() == [3] * 7
    q1 = np.array([0.9, 0.05, 0.03]) / 0.98
    p1 = np.array([0.85, 0.1, 0.02]) / 0.97
    assert np.allclose(scores["within_kl"][np.array(current) == 1], (q1 * np.log(q1 / p1)).sum(), atol=1e-5)


# ---------------------------------------------------------------- the command on a train directory


def write_train_dir(path, base_model, samples, model_dir, holdout, steps=4):
    cfg = TrainConfig(model=base_model, samples=str(samples), holdout=len(holdout), output_dir=str(path))
    run = RunDir.open(path, "train", cfg, {})
    run.finish(model_dir=str(model_dir), steps=steps, holdout=holdout)
    return path


@pytest.fixture(scope="module")
def fitted(tiny_model, tmp_path_factory):
    from test_train import write_samples
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = tmp_path_factory.mktemp("fit")
    samples = write_samples(root / "samples", tiny_model, [f"```python\nprint({i} * {i + 3})\n```" for i in range(6)])
    trained = AutoModelForCausalLM.from_pretrained(tiny_model)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.3 * p.float().std().nan_to_num(0.02).clamp(min=0.02))
    trained.save_pretrained(root / "trained")
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(root / "trained")
    train_dir = write_train_dir(root / "train", tiny_model, samples, root / "trained", [["p1", 0], ["p4", 0]])
    out = fit(FitConfig(train_dir=str(train_dir), train_samples=3))
    return root, train_dir, out, read_jsonl(out / "fit.jsonl")


def test_rows_for_the_base_and_the_trained_model(fitted):
    root, _, out, rows = fitted
    assert [r["step"] for r in rows] == [0, 4]
    base, trained = rows
    for r in rows:
        assert r["heldout_all"]["replies"] == 2 and r["train_all"]["replies"] == 3
        assert r["heldout_fork"]["positions"] + r["heldout_lock"]["positions"] == r["heldout_all"]["positions"]
        for cell in (r["heldout_all"], r["train_all"]):
            assert cell["kl"] == pytest.approx(cell["tail"] + cell["within_kl"])
            assert 0 <= cell["tv"] <= 1 and cell["tail"] >= 0 and cell["within_kl"] >= 0
    assert (
        base["heldout_all"]["target_entropy"] == trained["heldout_all"]["target_entropy"]
    )  # the target never changes
    assert trained["heldout_all"]["kl"] != base["heldout_all"]["kl"] and trained["model"].endswith("trained")
    # the weight files alone are hashed: the same weights under another path and config hash the same
    copy = root / "same-weights"
    copy.mkdir()
    shutil.copy(os.path.join(trained["model"], "model.safetensors"), copy)
    assert trained["weights_sha256"] == weights_sha256(copy) != base["weights_sha256"]
    assert (out / "fit.png").is_file() and (out / "target.npz").is_file() and (out / "step-4.npz").is_file()


def test_trained_row_matches_a_full_vocabulary_computation(fitted, tiny_model):
    """The held-out KL and TV of the trained model, recomputed from the models' own forward passes in
    float64 over the whole vocabulary (no chunks, no cache, no support bookkeeping)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from selfdistill.sample import load_samples
    from selfdistill.train import training_examples

    root, _, _, rows = fitted
    records, manifest = load_samples(root / "samples")
    held = [r for r in records if r["prompt_id"] in ("p1", "p4")]
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    examples, _ = training_examples(held, tiny_model, tokenizer, manifest, root / "samples")
    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    trained = AutoModelForCausalLM.from_pretrained(root / "trained", dtype=torch.float32)
    kl, tv = [], []
    with torch.no_grad():
        for e in examples:
            ids, start = torch.tensor([e["input_ids"]]), e["prompt_len"] - 1
            q = torch.softmax(truncate_logits(base(ids).logits[0, start:-1], 1.6, 20, 0.8).double(), -1)
            p = torch.softmax(trained(ids).logits[0, start:-1].double(), -1)
            kl += torch.where(q > 0, q * (q.log() - p.log()), 0.0).sum(-1).tolist()
            tv += (0.5 * (q - p).abs().sum(-1)).tolist()
    assert rows[1]["heldout_all"]["positions"] == len(kl)
    assert rows[1]["heldout_all"]["kl"] == pytest.approx(np.mean(kl), rel=1e-4)
    assert rows[1]["heldout_all"]["tv"] == pytest.approx(np.mean(tv), rel=1e-4)


def test_a_step_reuses_the_cached_target_and_finds_its_checkpoint(fitted):
    root, train_dir, out, _ = fitted
    stamp = os.stat(out / "target.npz").st_mtime_ns
    (train_dir / "checkpoints").mkdir()
    os.symlink(root / "trained", train_dir / "checkpoints" / "checkpoint-2")
    fit(FitConfig(train_dir=str(train_dir), train_samples=3, step=2))
    assert os.stat(out / "target.npz").st_mtime_ns == stamp
    rows = read_jsonl(out / "fit.jsonl")
    assert [r["step"] for r in rows] == [0, 2, 4] and rows[1]["heldout_all"] == rows[2]["heldout_all"]
    with pytest.raises(FitError, match="no checkpoints/checkpoint-3 or snapshots/step-3"):
        fit(FitConfig(train_dir=str(train_dir), train_samples=3, step=3))


def test_another_run_on_the_same_samples_reuses_the_cached_target(fitted, tmp_path, tiny_model, monkeypatch):
    """target_from: a second training run on the same samples (experiment 2's soft-target run) takes the
    first fit's target instead of teacher-forcing the base model again, and gets the same base row; a fit
    that scored other samples is refused."""
    root, _, out, rows = fitted
    holdout = [["p1", 0], ["p4", 0]]
    other = write_train_dir(tmp_path / "other", tiny_model, root / "samples", root / "trained", holdout)
    loaded = []
    monkeypatch.setattr(fit_module, "load_model", lambda path, **kw: loaded.append(path) or load_model(path, **kw))
    fit(FitConfig(train_dir=str(other), train_samples=3, step=0, target_from=str(out)))
    assert loaded == [] and (other / "fit" / "target.npz").read_bytes() == (out / "target.npz").read_bytes()
    assert read_jsonl(other / "fit" / "fit.jsonl")[0]["heldout_all"] == rows[0]["heldout_all"]
    fewer = write_train_dir(tmp_path / "fewer", tiny_model, root / "samples", root / "trained", holdout[:1])
    with pytest.raises(FitError, match="field 'scored' differs"):
        fit(FitConfig(train_dir=str(fewer), train_samples=3, step=0, target_from=str(out)))


def test_a_train_dir_without_held_out_samples_needs_heldout(fitted, tmp_path, tiny_model):
    root, _, _, _ = fitted
    train_dir = write_train_dir(tmp_path / "train", tiny_model, root / "samples", root / "trained", [])
    with pytest.raises(FitError, match="set no samples aside .* give heldout"):
        fit(FitConfig(train_dir=str(train_dir)))
    with pytest.raises(FitError, match="6 of its prompts were trained on"):
        fit(FitConfig(train_dir=str(train_dir), heldout=str(root / "samples")))
