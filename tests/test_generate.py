"""The sampling spec: the reference truncation, vLLM's sampler and the hf backend's processors agree on
fixed logits; the hf backend inherits nothing from generation_config.json; seeds and context limits."""

import json
import re
import shutil
import time
from types import SimpleNamespace

import pytest
import torch

from selfdistill.chat import chat_prompt, keeps_channels
from selfdistill.generate import (
    GenerationProgress,
    Generator,
    HFGenerator,
    Request,
    SamplingSpec,
    _request_id,
    _SeededSampler,
    hf_logits_processors,
    load_generator,
    stream_journaled,
    top_k_before_top_p,
    truncate_logits,
)

SPECS = [
    SamplingSpec(temperature=1.6, top_k=20, top_p=0.8),  # the paper's T_train truncation
    SamplingSpec(temperature=0.7, top_k=20, top_p=0.8),
    SamplingSpec(temperature=1.0, top_k=0, top_p=0.95),
    SamplingSpec(temperature=1.0, top_k=5, top_p=1.0),
    SamplingSpec(temperature=1.3, top_k=50, top_p=0.9, min_p=0.05),
    SamplingSpec(temperature=0.5, top_k=0, top_p=1.0, min_p=0.1),
    SamplingSpec(temperature=1.0),
]


def fixed_logits(rows: int = 8, vocab: int = 500) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(rows, vocab, generator=g) * 3
    logits[0, :10] = torch.linspace(5, 0, 10)  # a clear head
    logits[1] /= 10  # nearly flat
    return logits  # no exact ties: which of equal tokens top-p keeps is up to each sort implementation


def test_reference_by_hand():
    logits = torch.log(torch.tensor([[0.5, 0.2, 0.15, 0.1, 0.05]]))

    def probs(**kw):
        return truncate_logits(logits, **kw).softmax(-1)[0]

    # top-p keeps the token that crosses p: 0.5 < 0.6, 0.5 + 0.2 >= 0.6
    assert torch.allclose(probs(temperature=1.0, top_p=0.6), torch.tensor([5 / 7, 2 / 7, 0, 0, 0]))
    # top-p acts on the renormalized top-k distribution: top-2 is [5/7, 2/7]; 5/7 >= 0.7 already
    assert torch.allclose(probs(temperature=1.0, top_k=2, top_p=0.7), torch.tensor([1.0, 0, 0, 0, 0]))
    # without top-k, p=0.7 needs the second token (0.5 < 0.7)
    assert torch.allclose(probs(temperature=1.0, top_p=0.7), torch.tensor([5 / 7, 2 / 7, 0, 0, 0]))
    # temperature first: T=2 flattens, p_i proportional to sqrt(p_i)
    flat = torch.tensor([0.5, 0.2, 0.15, 0.1, 0.05]).sqrt()
    assert torch.allclose(probs(temperature=2.0), flat / flat.sum())
    # min-p relative to the top token: 0.5 * 0.35 = 0.175 keeps 0.5 and 0.2
    assert torch.allclose(probs(temperature=1.0, min_p=0.35), torch.tensor([5 / 7, 2 / 7, 0, 0, 0]))
    # greedy
    assert torch.equal(probs(temperature=0), torch.tensor([1.0, 0, 0, 0, 0]))
    # top-k keeps every token tied with the k-th (vLLM and transformers do too)
    tied = torch.log(torch.tensor([[0.4, 0.2, 0.2, 0.2]]))
    assert torch.isfinite(truncate_logits(tied, 1.0, top_k=2)).sum() == 4


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_hf_processors_match_reference(spec):
    logits = fixed_logits()
    hf = hf_logits_processors(spec)(torch.zeros(len(logits), 1, dtype=torch.long), logits.clone())
    ref = truncate_logits(logits, spec.temperature, spec.top_k, spec.top_p, spec.min_p)
    assert torch.equal(torch.isinf(hf), torch.isinf(ref))  # the same kept set
    assert torch.allclose(hf.softmax(-1), ref.softmax(-1), atol=1e-6)


def _vllm_truncated_probs(logits: torch.Tensor, spec: SamplingSpec) -> torch.Tensor:
    """vLLM's own sampler (v1 Sampler.sample: temperature, min-p logits processor, top-k/top-p sampler)
    on fixed logits; processed_logprobs mode returns the distribution it samples from."""
    from vllm import SamplingParams
    from vllm.v1.sample.logits_processor import LogitsProcessors
    from vllm.v1.sample.logits_processor.builtin import MinPLogitsProcessor
    from vllm.v1.sample.logits_processor.interface import BatchUpdate
    from vllm.v1.sample.metadata import SamplingMetadata
    from vllm.v1.sample.sampler import Sampler

    rows = len(logits)
    params = SamplingParams(temperature=spec.temperature, top_k=spec.top_k, top_p=spec.top_p, min_p=spec.min_p)
    min_p = MinPLogitsProcessor(
        SimpleNamespace(scheduler_config=SimpleNamespace(max_num_seqs=rows)), torch.device("cpu"), False
    )
    min_p.update_state(
        BatchUpdate(batch_size=rows, removed=[], added=[(i, params, None, []) for i in range(rows)], moved=[])
    )
    metadata = SamplingMetadata(
        temperature=torch.full((rows,), spec.temperature),
        all_greedy=False,
        all_random=True,
        top_p=torch.full((rows,), spec.top_p) if spec.top_p < 1 else None,
        top_k=torch.full((rows,), spec.top_k, dtype=torch.int32) if spec.top_k > 0 else None,
        generators={},
        max_num_logprobs=-1,
        no_penalties=True,
        prompt_token_ids=None,
        frequency_penalties=torch.zeros(rows),
        presence_penalties=torch.zeros(rows),
        repetition_penalties=torch.ones(rows),
        output_token_ids=[[] for _ in range(rows)],
        allowed_token_ids_mask=None,
        bad_words_token_ids={},
        logitsprocs=LogitsProcessors([min_p]),
    )
    _, logprobs = Sampler(logprobs_mode="processed_logprobs").sample(logits.clone(), metadata)
    return logprobs.exp()


@pytest.mark.parametrize("spec", [s for s in SPECS if s.temperature > 0], ids=str)
def test_vllm_sampler_matches_reference(spec):
    pytest.importorskip("vllm")
    logits = fixed_logits()
    vllm_probs = _vllm_truncated_probs(logits, spec)
    ref_probs = truncate_logits(logits, spec.temperature, spec.top_k, spec.top_p, spec.min_p).softmax(-1)
    assert torch.equal(vllm_probs > 0, ref_probs > 0)
    assert torch.allclose(vllm_probs, ref_probs, atol=1e-6)


def test_top_k_before_top_p_equals_vllm_full_sort():
    pytest.importorskip("vllm")
    from vllm.v1.sample.ops import topk_topp_sampler

    full_sort = getattr(topk_topp_sampler.apply_top_k_top_p, "full_sort", topk_topp_sampler.apply_top_k_top_p)
    fast = top_k_before_top_p(full_sort)
    logits = fixed_logits(rows=6, vocab=3000) / torch.tensor([[0.7], [1.0], [1.6], [1.1], [2.0], [0.3]])
    k = torch.tensor([20, 20, 1, 5, 50, 20], dtype=torch.int32)
    p = torch.tensor([0.8, 0.95, 0.8, 1.0, 0.5, 0.01])  # 1.0: a row without top-p; 0.01: the top token only
    # the last pair: greedy rows (no top-k, no top-p) and a top-p-only row batched with top-k rows
    mixed_k, mixed_p = k.clone(), p.clone()
    mixed_k[[1, 4]], mixed_p[1], mixed_k[5], mixed_p[5] = 3000, 1.0, 3000, 0.9
    for k_, p_ in [(k, p), (k, None), (None, p), (torch.full((6,), 3000, dtype=torch.int32), p), (mixed_k, mixed_p)]:
        expected = full_sort(logits.clone(), k_, p_)
        got = fast(logits.clone(), k_, p_)
        assert torch.equal(torch.isinf(got), torch.isinf(expected))
        assert torch.allclose(got.softmax(-1), expected.softmax(-1), atol=1e-6)
    # a tie at the k-th logit: vLLM keeps every tied token, so the fast path must hand over
    tied = logits.clone()
    tied[0] = -10.0
    tied[0, :25] = torch.tensor([9.0] * 18 + [8.0] * 4 + [7.0] * 3)
    assert torch.equal(torch.isinf(fast(tied.clone(), k, p)), torch.isinf(full_sort(tied.clone(), k, p)))
    assert torch.isfinite(fast(tied.clone(), k, torch.ones(6)))[0].sum() == 22


def _reference_full_sort(logits: torch.Tensor, k: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """vLLM's full sort, row by row, as the reference computes it (no engine needed)."""
    return torch.cat(
        [truncate_logits(row[None], 1.0, int(k_), float(p_)) for row, k_, p_ in zip(logits, k, p, strict=True)]
    )


def test_top_k_before_top_p_sorts_rows_with_a_large_top_k():
    """A row with 1024 <= top-k < V and no top-p, batched with rows that have top-p, is past the fast
    path but still truncated: it must get the full sort, not keep the whole vocabulary."""
    logits = fixed_logits(rows=4, vocab=3000)
    k = torch.tensor([20, 2000, 3000, 3000], dtype=torch.int32)  # fast path, large top-k, no top-k, no top-k
    p = torch.tensor([0.8, 1.0, 1.0, 0.9])
    got = top_k_before_top_p(_reference_full_sort)(logits.clone(), k, p)
    expected = _reference_full_sort(logits, k, p)
    assert torch.isfinite(got[1]).sum() == 2000 and torch.isfinite(got[2]).all()
    assert torch.equal(torch.isinf(got), torch.isinf(expected))
    assert torch.allclose(got.softmax(-1), expected.softmax(-1), atol=1e-6)


def test_seeded_sampler_draws_from_the_distribution():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05, 0.0])
    rows = 4000
    sampler = _SeededSampler([torch.Generator().manual_seed(i) for i in range(rows)])
    one_hot = sampler(None, probs.log().expand(rows, -1).clone())
    choices = one_hot.argmax(-1)
    assert torch.isinf(one_hot).sum() == rows * 4  # exactly one finite entry per row
    freq = torch.bincount(choices, minlength=5).float() / rows
    assert freq[4] == 0  # a zero-probability token is never drawn
    assert torch.allclose(freq, probs, atol=0.03)  # 4 sigma at n=4000
    again = _SeededSampler([torch.Generator().manual_seed(i) for i in range(rows)])(
        None, probs.log().expand(rows, -1).clone()
    )
    assert torch.equal(again, one_hot)  # same seeds, same draws


@pytest.fixture(scope="module")
def hostile_model(tiny_model, tmp_path_factory):
    """tiny-random whose generation_config.json carries sampling defaults that must not leak in."""
    path = tmp_path_factory.mktemp("hostile") / "model"
    shutil.copytree(tiny_model, path)
    config = json.loads((path / "generation_config.json").read_text())
    config.update(
        do_sample=True, temperature=0.1, top_k=3, top_p=0.3, min_p=0.5, repetition_penalty=2.0, no_repeat_ngram_size=2
    )
    (path / "generation_config.json").write_text(json.dumps(config))
    return str(path)


@pytest.fixture(scope="module")
def hf(hostile_model):
    with load_generator(hostile_model, "hf", max_model_len=96) as generator:
        yield generator


def test_hf_inherits_no_sampling_defaults(hf):
    """transformers fills unset generate() parameters from the model's generation_config.json and its
    own defaults (top_k=50); what generate() builds from the hf backend's config changes no logit."""
    logits = fixed_logits(4, hf.model.config.vocab_size)
    input_ids = torch.zeros(4, 4, dtype=torch.long)
    for spec in (SamplingSpec(temperature=1.6, top_k=20, top_p=0.8), SamplingSpec(temperature=0)):
        config, _ = hf.model._prepare_generation_config(hf.generation_config(spec, 16))
        built = hf.model._get_logits_processor(
            config,
            input_ids_seq_length=4,
            encoder_input_ids=input_ids,
            logits_processor=None,
            device="cpu",
            model_kwargs={},
        )
        assert torch.equal(built(input_ids, logits.clone()), logits), [type(p).__name__ for p in built]
        assert config.do_sample == (spec.temperature > 0)


def test_hf_generate_seeds_lengths_and_context(hf):
    prompt = hf.chat_prompt([{"role": "user", "content": "Write a function that adds two numbers."}])
    too_long = hf.chat_prompt([{"role": "user", "content": "word " * 200}])
    spec = SamplingSpec(temperature=1.0, top_k=20, top_p=0.9, n=2, max_tokens=12)
    out = hf.generate([prompt, too_long, prompt], spec, seeds=[7, 7, 8])
    assert [c.finish_reason for c in out[1]] == ["prompt_too_long"] * 2  # skipped, the batch goes on
    assert all(len(c.token_ids) <= 12 and c.finish_reason in ("stop", "length") for c in out[0] + out[2])
    assert out[0][0].prompt_tokens == len(hf.tokenizer(prompt, add_special_tokens=False)["input_ids"])
    alone = hf.generate([prompt], spec, seeds=[7])
    assert [c.token_ids for c in alone[0]] == [c.token_ids for c in out[0]]  # a request's draw ignores its batch
    assert out[0][0].token_ids != out[0][1].token_ids  # completion j uses seed + j: independent samples
    # the context bounds the reply: 96 tokens in all
    room = 96 - out[0][0].prompt_tokens
    long = hf.generate([prompt], SamplingSpec(temperature=1.0, max_tokens=500), seeds=[1])[0][0]
    assert len(long.token_ids) <= room and (long.finish_reason == "stop" or len(long.token_ids) == room)


def test_one_call_mixes_specs_per_prompt(hf):
    """Prompts of several temperatures share a call (the eval joins short blocks): each gets what a call
    with its spec alone would give."""
    prompt = hf.chat_prompt([{"role": "user", "content": "Write a function that adds two numbers."}])
    greedy, sampled = (
        SamplingSpec(temperature=0, max_tokens=12),
        SamplingSpec(temperature=1.0, top_k=20, n=2, max_tokens=12),
    )
    mixed = hf.generate([prompt, prompt], [greedy, sampled], seeds=[7, 7])
    assert [len(c) for c in mixed] == [1, 2]
    assert mixed[0][0].token_ids == hf.generate([prompt], greedy, seeds=[7])[0][0].token_ids
    assert [c.token_ids for c in mixed[1]] == [c.token_ids for c in hf.generate([prompt], sampled, seeds=[7])[0]]
    with pytest.raises(ValueError, match="2 prompts, 1 specs"):
        hf.generate([prompt, prompt], [greedy])


def stream_requests(generator) -> list[Request]:
    """Prompts of several lengths and specs (greedy, sampled, n=2), one too long for the context."""
    prompts = [
        generator.chat_prompt(
            [{"role": "user", "content": f"Write a function that adds {i} numbers." + " Explain." * (i % 4)}]
        )
        for i in range(7)
    ]
    too_long = generator.chat_prompt([{"role": "user", "content": "word " * 200}])
    specs = [SamplingSpec(temperature=1.6, top_k=20, top_p=0.8, max_tokens=2 + 2 * i) for i in range(7)]
    specs[3], specs[5] = SamplingSpec(temperature=0, max_tokens=6), SamplingSpec(temperature=1.0, n=2, max_tokens=5)
    return [Request(p, spec, seed=100 + i) for i, (p, spec) in enumerate(zip(prompts, specs, strict=True))] + [
        Request(too_long, specs[0])
    ]


def assert_stream_ignores_concurrency(generator):
    """Every request comes out once, and its completions do not depend on how many decode at once."""
    requests = stream_requests(generator)
    runs = {}
    for max_in_flight in (1, 4, 64):
        got = list(generator.stream(requests, max_in_flight))
        assert sorted(i for i, _ in got) == list(range(len(requests)))
        assert (
            got[0][0] == len(requests) - 1 and got[0][1][0].finish_reason == "prompt_too_long"
        )  # no engine time needed
        runs[max_in_flight] = {
            i: [(c.token_ids, c.text, c.finish_reason) for c in completions] for i, completions in got
        }
    assert runs[1] == runs[4] == runs[64]
    assert [len(runs[1][i]) for i in range(len(requests))] == [1] * 5 + [2] + [1] * 2
    return runs[64]


def test_hf_stream_is_the_same_at_any_concurrency(hf):
    streamed = assert_stream_ignores_concurrency(hf)
    requests = stream_requests(hf)
    batched = hf.generate([r.prompt for r in requests], [r.spec for r in requests], [r.seed for r in requests])
    assert [[(c.token_ids, c.text, c.finish_reason) for c in completions] for completions in batched] == [
        streamed[i] for i in range(len(requests))
    ]


def test_hf_stream_yields_batches_in_request_order(hf):
    """A closed batch of max_in_flight rows at a time: what finishes first is the start of the job,
    which is what lets a stage write its first shard early."""
    requests = stream_requests(hf)[:6]
    order = [i for i, _ in hf.stream(requests, max_in_flight=2)]
    assert order[:2] in ([0, 1], [1, 0]) and order[2:4] in ([2, 3], [3, 2]) and sorted(order) == list(range(6))
    with pytest.raises(ValueError, match="max_in_flight"):
        next(hf.stream(requests, max_in_flight=-1))


def test_journal_keeps_finished_requests_across_a_kill(hf, tmp_path):
    """A journal with two finished requests and a line cut short by a kill: the rerun takes those two
    as they were, decodes only the rest, and gives what one uninterrupted stream gives."""
    requests = stream_requests(hf)
    units = {"a": requests[:4], "b": requests[4:]}
    whole = {key: completions for key, completions, _ in hf.stream_units(units)}
    journal = tmp_path / "journal.jsonl"
    first = dict(list(hf.stream(requests[4:6]))).items()  # unit b's first two requests, finished before the kill
    journal.write_text(
        "".join(
            json.dumps({"request": _request_id(requests[4 + i]), "completions": [c.__dict__ for c in cs]}) + "\n"
            for i, cs in first
        )
        + '{"request": "cut sh'
    )
    asked = []

    class Counting:
        def __getattr__(self, name):
            return getattr(hf, name)

        stream_units = Generator.stream_units

        def stream(self, requests, max_in_flight=None):
            asked.extend(map(_request_id, requests))
            yield from hf.stream(requests, max_in_flight)

    resumed = {key: completions for key, completions, _ in stream_journaled(Counting(), units, journal)}
    assert resumed == whole and sorted(asked) == sorted(map(_request_id, requests[:4] + requests[6:]))
    lines = journal.read_text().splitlines()  # the cut line is gone; every request is there once
    assert len(lines) == len(requests) and sorted(json.loads(line)["request"] for line in lines) == sorted(
        map(_request_id, requests)
    )


def test_effective_params_are_explicit(hf):
    params = hf.effective_params(SamplingSpec(temperature=1.6, top_k=20, top_p=0.8))
    assert params["backend"] == "hf" and params["stop_token_ids"] == hf.stop_token_ids
    assert params["logits_processors"][:3] == [
        "TemperatureLogitsWarper(temperature=1.6)",
        "TopKLogitsWarper(top_k=20)",
        "TopPLogitsWarper(top_p=0.8)",
    ]
    assert params["generation_config"]["top_k"] == 0 and params["generation_config"]["temperature"] == 1.0


def test_spec_validation():
    with pytest.raises(ValueError, match="top_p"):
        SamplingSpec(top_p=0.0)
    with pytest.raises(ValueError, match="temperature"):
        SamplingSpec(temperature=-1)
    with pytest.raises(ValueError, match="unknown backend"):
        load_generator("tiny-random", "tensorrt")


# -------------------------------------------------------------------- GPT-OSS: pinned date, reasoning effort, channels


def test_chat_date_is_pinned_and_reasoning_effort_passed(harmony_tokenizer, clock):
    """GPT-OSS's template stamps today's date: sampling, training and evaluating on other days would see
    other prompts. With the date pinned, the prompt is the same on every day."""
    messages = [{"role": "user", "content": "Add two numbers."}]
    clock("2026-01-01")
    monday = chat_prompt(harmony_tokenizer, messages, date="2026-04-01", reasoning_effort="high")
    assert (
        "Current date: 2026-04-01" in monday and "Reasoning: high" in monday and monday.endswith("<|start|>assistant")
    )
    assert "Current date: 2026-01-01" in chat_prompt(
        harmony_tokenizer, messages
    ) and "Reasoning: medium" in chat_prompt(harmony_tokenizer, messages)
    clock("2026-01-02")
    assert chat_prompt(harmony_tokenizer, messages, date="2026-04-01", reasoning_effort="high") == monday
    with pytest.raises(ValueError, match="chat_date '04/01/2026': expected a date YYYY-MM-DD"):
        chat_prompt(harmony_tokenizer, messages, date="04/01/2026")


def test_harmony_replies_keep_their_channels(harmony_tokenizer, tiny_model):
    """A GPT-OSS reply's text keeps the channel markers that grading needs (both backends decode it so,
    without the stop token); other models' replies are text without special tokens, as before."""
    from transformers import AutoTokenizer

    plain = AutoTokenizer.from_pretrained(tiny_model)
    assert keeps_channels(harmony_tokenizer) and not keeps_channels(plain)
    reply = (
        "<|channel|>analysis<|message|>Think.<|end|>"
        "<|start|>assistant<|channel|>final<|message|>```python\nprint(1)\n```"
    )
    stop = harmony_tokenizer.convert_tokens_to_ids("<|return|>")
    ids = harmony_tokenizer(reply, add_special_tokens=False).input_ids + [stop]
    generator = SimpleNamespace(stop_token_ids=[stop], tokenizer=harmony_tokenizer, keeps_channels=True, pad_id=0)
    completion = HFGenerator._completion(generator, ids, 10, SamplingSpec())
    assert completion.text == reply and completion.finish_reason == "stop" and completion.token_ids == ids
    stripped = HFGenerator._completion(
        SimpleNamespace(**{**vars(generator), "keeps_channels": False}), ids, 10, SamplingSpec()
    )
    assert stripped.text == "analysisThink.assistantfinal```python\nprint(1)\n```"  # what grading could not parse


@pytest.fixture(scope="module")
def vllm_generator(tiny_model):
    pytest.importorskip("vllm")
    with load_generator(tiny_model, "vllm", max_model_len=96) as generator:
        yield generator


@pytest.mark.integration
def test_vllm_stream_is_the_same_at_any_concurrency_and_aborts_when_closed(vllm_generator):
    streamed = assert_stream_ignores_concurrency(vllm_generator)
    requests = stream_requests(vllm_generator)
    batched = vllm_generator.generate(
        [r.prompt for r in requests], [r.spec for r in requests], [r.seed for r in requests]
    )
    assert [[(c.token_ids, c.text, c.finish_reason) for c in completions] for completions in batched] == [
        streamed[i] for i in range(len(requests))
    ]
    engine = vllm_generator.llm.llm_engine
    assert vllm_generator.max_num_seqs == engine.vllm_config.scheduler_config.max_num_seqs >= 64
    stream = vllm_generator.stream(requests, max_in_flight=4)
    next(stream), next(stream)
    assert engine.has_unfinished_requests()
    stream.close()  # a stage that fails mid-stream leaves a clean engine for the next one (`ssd run` shares it)
    assert not engine.has_unfinished_requests()
    assert len(list(vllm_generator.stream(requests))) == len(requests)


def test_progress_in_a_log_file_prints_lines_between_blocks():
    """Off a terminal there is no live bar: a line every log_every seconds of decoding, even before
    any sample (or block) finishes, without a made-up ETA."""
    import io

    from rich.console import Console

    log = io.StringIO()
    progress = GenerationProgress(Console(file=log, force_terminal=False, width=200), "eval T=0.4", total=40)
    progress.log_every = 0.0
    with progress:
        progress(0, 50)
        progress(3, 50)  # the first replies to finish, the shortest: no ETA from them
        progress(1, 50)
    first, second, third = log.getvalue().splitlines()[:3]  # then the bar, rendered once when it stops
    assert first.startswith("eval T=0.4: 0/40 samples") and first.endswith("ETA after 4 samples")
    assert second.startswith("eval T=0.4: 3/40 samples") and second.endswith("ETA after 4 samples")
    assert third.startswith("eval T=0.4: 4/40 samples") and re.search(r"tokens/s, ETA \d+ s$", third)


def test_a_resumed_stage_estimates_from_what_it_decodes():
    """Restored samples (reported with no new tokens) took no time in this session: they count as done but
    neither give an ETA early nor speed up its rate."""
    import io

    from rich.console import Console

    log = io.StringIO()
    progress = GenerationProgress(Console(file=log, force_terminal=False, width=200), "sampling", total=40)
    progress.log_every = 0.0
    with progress:
        progress(30, 0)  # restored from the journal
        progress(3, 60)
        time.sleep(1.0)
        progress(1, 20)  # 4 decoded in this session: the first ETA, from 4 samples, not 34
    restored, early, first = log.getvalue().splitlines()[:3]
    assert (
        restored.endswith("ETA after 4 samples")
        and early.startswith("sampling: 33/40")
        and early.endswith("ETA after 4 samples")
    )
    seconds = float(re.search(r"ETA (\d+) s$", first).group(1))
    # over 1 s for 4 samples, 6 to go: >= 1.5 s (from all 34 done it would be ~0.2 s, printed as 0)
    assert first.startswith("sampling: 34/40") and seconds >= 1 and progress.restored == 30


# ---------------------------------------------------------------- serving precision (eval.dtype)


def served_dtypes(model) -> set[torch.dtype]:
    return {p.dtype for p in model.parameters() if p.is_floating_point()}


@pytest.mark.parametrize("backend", ["hf", pytest.param("vllm", marks=pytest.mark.integration)])
def test_eval_dtype_float32_serves_a_bf16_checkpoint_in_float32(tiny_model, backend):
    """The precision read from the loaded engine, not from the config: eval.dtype float32 serves tiny-random's
    bf16 checkpoint in float32 (hf: its weights, upcast exactly; vLLM: its model config), auto as the
    hardware prefers. The two settings never share an engine."""
    from transformers import AutoModelForCausalLM

    from selfdistill.config import EvalConfig
    from selfdistill.engine import EngineSettings
    from selfdistill.models import native_bf16

    if backend == "vllm":
        pytest.importorskip("vllm")
    settings = {
        d: EngineSettings.of(EvalConfig(model=tiny_model, backend=backend, max_tokens=16, max_model_len=96, dtype=d))
        for d in ("auto", "float32")
    }
    assert settings["auto"] != settings["float32"]
    auto = torch.bfloat16 if native_bf16() else torch.float32
    for dtype, expected in (("float32", torch.float32), ("auto", auto)):
        with settings[dtype].load(tiny_model) as generator:
            if backend == "hf":
                assert served_dtypes(generator.model) == {expected}
                if dtype == "float32":
                    checkpoint = dict(
                        AutoModelForCausalLM.from_pretrained(tiny_model, dtype="auto").named_parameters()
                    )
                    assert {p.dtype for p in checkpoint.values()} == {torch.bfloat16}
                    for name, p in generator.model.named_parameters():
                        assert torch.equal(p, checkpoint[name].float()), name
            else:
                assert generator.llm.llm_engine.model_config.dtype == expected
            spec = SamplingSpec(0.0, max_tokens=4)
            assert generator.effective_params(spec)["dtype"] == str(expected).removeprefix("torch.")
