"""Model cards and the Hugging Face Hub: what a trained model says about itself, and uploads.

    write_model_card(train_dir, evaluation=None) -> Path   TRAIN_DIR/model/README.md (huggingface_hub.ModelCard)
    push_model(path, repo_id, private=False) -> str        `ssd models push`: a model directory to a model repo
    push_samples(path, repo_id, private=False) -> str      `ssd samples push`: a samples directory to a dataset repo

`ssd train` writes the card into every model it exports: base model, method and paper, the sampling
settings and counts of its samples, the training recipe, the data's hashes. `ssd report RUN_DIR` writes
it again with the results table (each model at its dev-chosen T_eval, pass@k on the test split with 95%
CIs, the paired difference) and the card's model-index. Everything comes from the stage manifests.
"""

from __future__ import annotations

from pathlib import Path

from . import SelfdistillError, __version__
from .config import OBJECTIVES
from .document import markdown_table, percent
from .manifest import load_manifest

PAPER = "https://arxiv.org/abs/2604.01193"
CITATION = """@misc{zhang2026embarrassinglysimpleselfdistillationimproves,
      title={Embarrassingly Simple Self-Distillation Improves Code Generation},
      author={Ruixiang Zhang and Richard He Bai and Huangjie Zheng and Navdeep Jaitly and Ronan Collobert and Yizhe Zhang},
      year={2026}, eprint={2604.01193}, archivePrefix={arXiv}, primaryClass={cs.CL}, url={https://arxiv.org/abs/2604.01193},
}"""  # noqa: E501 (the entry as the paper gives it, line for line)
CARD = "README.md"


class HubError(SelfdistillError, RuntimeError):
    pass


def hub_id_of(model: str) -> str | None:
    """The hub id of a base model: a registry model's upstream, a hub id itself; None for a local directory."""
    from .models import REGISTRY
    from .rows import HUB_ID

    if model in REGISTRY:
        return REGISTRY[model].upstream or None
    return model if HUB_ID.fullmatch(model) and not Path(model).exists() else None


def _sampling(train: dict) -> str:
    samples_dir = Path(train["config"]["samples"])
    try:
        samples = load_manifest(samples_dir)
    except FileNotFoundError:
        return (
            f"The samples were made elsewhere (`{samples_dir.name}`, sha256 "
            f"`{train['inputs']['samples_data'][:16]}`): their sampling settings are unknown."
        )
    c, counts = samples["config"], samples.get("counts", {})
    rows = [
        ["model that sampled", f"`{c['model']}`"],
        ["prompts", f"`{c['prompts']}` ({c['prompt_selection']}; limit {c['limit']})"],
        ["T_train", c["temperature"]],
        ["top-k", c["top_k"] or "off"],
        ["top-p", c["top_p"]],
        ["min-p", c["min_p"]],
        ["N (samples per prompt)", c["n"]],
        ["max tokens", c["max_tokens"]],
        ["prompt format", c["prompt_format"]],
        ["samples kept / drawn", f"{counts.get('kept', '-')} / {counts.get('samples', '-')}"],
        ["truncated at max tokens", counts.get("truncated", "-")],
        ["reply tokens kept", counts.get("reply_tokens_kept", "-")],
    ]
    return markdown_table(["sampling", "value"], rows)


def _recipe(train: dict) -> str:
    c, plan, lengths = train["config"], train.get("plan", {}), train.get("lengths", {})
    rows = [
        ["method", f"LoRA r={c['lora_r']}, alpha={c['lora_alpha']} (merged)" if c["use_lora"] else "full fine-tune"],
        ["objective", OBJECTIVES[c.get("objective", "hard")]],
        [
            "learning rate",
            f"{c['learning_rate']:g}, cosine to {c['min_learning_rate']:g}, {plan.get('warmup_steps', '-')} warmup "
            "steps",
        ],
        ["optimizer", f"AdamW ({c['adam_beta1']}, {c['adam_beta2']}), weight decay {c['weight_decay']}"],
        ["global batch", c["global_batch_size"]],
        ["optimizer steps", train.get("steps", plan.get("optimizer_steps", "-"))],
        ["precision", plan.get("precision", "-")],
        ["examples", lengths.get("examples", "-")],
        ["dropped as too long", lengths.get("dropped_too_long", "-")],
        ["tokens trained", train.get("tokens_trained", "-")],
        ["final loss", train.get("final_loss", "-")],
        ["samples data sha256", f"`{train['inputs']['samples_data']}`"],
        ["chat template sha256", f"`{train['inputs']['chat_template_sha256']}`"],
        ["training fingerprint", f"`{train['fingerprint_sha256']}`"],
    ]
    return markdown_table(["training", "value"], rows)


def _results(evaluation: dict) -> str:
    """evaluation: {"base": EvalSummary, "ssd": EvalSummary, "compare": compare.json or None}."""
    base, ssd, compare = evaluation["base"], evaluation["ssd"], evaluation.get("compare") or {}

    def score(x) -> str:
        return f"{percent(x.test_score)} [{percent(x.test_ci_lo)}, {percent(x.test_ci_hi)}] at T={x.best_T:g}"

    rows = []
    for k in ssd.ks:
        b, s = base.chosen(k), ssd.chosen(k)
        if not s or not b:
            continue
        metric, diff = f"pass@{k}", "-"
        if compare.get("metric") == metric and "test" in compare:
            c = compare["test"]
            diff = (
                f"{100 * c['mean_diff']:+.1f} [{100 * c['ci_lo']:+.1f}, {100 * c['ci_hi']:+.1f}], p={c['p_value']:.3g}"
            )
        rows.append([metric, score(b), score(s), diff])
    decoding = ssd.decoding  # None: replies graded from a file
    truncation = f"top-k {decoding.top_k}, top-p {decoding.top_p}; " if decoding else ""
    return (
        f"{ssd.benchmark} ({ssd.label}), {len(ssd.test_ids)} held-out test problems; each model's T_eval chosen on "
        f"{len(ssd.dev_ids)} dev problems; {truncation}pass@k in % with 95% bootstrap CIs over problems.\n\n"
        + markdown_table(["metric (test)", "base", "SSD", "SSD - base (paired)"], rows)
    )


def _eval_results(evaluation: dict, model_name: str) -> list:
    from huggingface_hub import EvalResult

    ssd = evaluation["ssd"]
    return [
        EvalResult(
            task_type="text-generation",
            dataset_type=ssd.benchmark,
            dataset_name=ssd.benchmark,
            metric_type=f"pass@{k}",
            metric_value=round(100 * s.test_score, 2),
            metric_config=f"T_eval={s.best_T:g} chosen on dev; test split",
        )
        for k in ssd.ks
        if (s := ssd.chosen(k))
    ]


def write_model_card(train_dir: str | Path, evaluation: dict | None = None) -> Path:
    """Write TRAIN_DIR's model/README.md from its manifest (and its samples'), with the results table
    when `evaluation` is given ({"base", "ssd": eval summaries, "compare": compare.json})."""
    from huggingface_hub import ModelCard, ModelCardData

    train, model_dir = load_manifest(train_dir), Path(train_dir) / "model"
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{train_dir} holds no trained model (model/config.json)")
    c = train["config"]
    base = hub_id_of(c["model"])
    name = f"{(base or c['model']).rstrip('/').split('/')[-1]}-ssd"
    data = ModelCardData(
        base_model=base,
        library_name="transformers",
        pipeline_tag="text-generation",
        tags=["selfdistill", "self-distillation", "ssd", "code", "trl", "sft"],
        model_name=name,
        eval_results=_eval_results(evaluation, name) if evaluation else None,
    )
    sections = [
        f"# {name}\n",
        f"`{c['model']}` fine-tuned by **simple self-distillation** (SSD; Zhang et al., [arXiv 2604.01193]({PAPER})): "
        "the frozen base model answered unlabeled coding prompts once at T_train with truncation, nothing verified, "
        f"and was fine-tuned with {OBJECTIVES[c.get('objective', 'hard')]}. Made with selfdistill {__version__} (git "
        f"{train.get('git_commit') or 'unknown'}); the training directory's manifest.json holds every setting.\n",
        "## Sampling\n",
        _sampling(train) + "\n",
        "## Training\n",
        _recipe(train) + "\n",
        "## Results\n",
        (_results(evaluation) if evaluation else "Not evaluated yet: `ssd report RUN_DIR` adds the results table.")
        + "\n",
        "## Citation\n",
        f"```bibtex\n{CITATION}\n```\n",
    ]
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(sections))
    card.save(model_dir / CARD)
    return model_dir / CARD


# ---------------------------------------------------------------- uploads


def _api():
    """The client, or why an upload cannot start: offline, or no token."""
    from huggingface_hub import HfApi, constants, get_token

    if constants.HF_HUB_OFFLINE:
        raise HubError("HF_HUB_OFFLINE is set: uploading to the Hub needs a connection (unset it)")
    if not get_token():
        raise HubError("no Hugging Face token: run `hf auth login` or set HF_TOKEN (a token with write access)")
    return HfApi()


def _upload(folder: Path, repo_id: str, repo_type: str, private: bool, allow: list[str] | None = None) -> str:
    from huggingface_hub import constants

    api = _api()
    try:
        api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
        commit = api.upload_folder(
            folder_path=folder,
            repo_id=repo_id,
            repo_type=repo_type,
            allow_patterns=allow,
            ignore_patterns=[".*", "**/.*"],
            commit_message=f"selfdistill {__version__}: {folder.name}",
        )
    except Exception as e:  # network, auth and hub errors alike end the command with one line
        reason = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise HubError(
            f"uploading {folder} to {repo_type} repo {repo_id} at {constants.ENDPOINT} failed: {type(e).__name__}: "
            f"{reason}"
        ) from None
    return commit.commit_url if hasattr(commit, "commit_url") else str(commit)


def push_model(path: str | Path, repo_id: str, private: bool = False) -> str:
    """A model directory (or an `ssd train` directory: its model/) to a model repo, card included."""
    path = Path(path)
    model_dir = path / "model" if (path / "model" / "config.json").is_file() else path
    if not (model_dir / "config.json").is_file():
        raise HubError(f"{path}: no config.json; pass a model directory or an `ssd train` output directory")
    return _upload(model_dir, repo_id, "model", private)


def push_samples(path: str | Path, repo_id: str, private: bool = False) -> str:
    """A finished samples directory to a dataset repo: its shards, manifest and a dataset card whose
    config lets `datasets.load_dataset(repo_id)` read the shards."""
    from huggingface_hub import DatasetCard, DatasetCardData

    from .sample import load_samples

    path = Path(path)
    try:
        records, manifest = load_samples(path)
    except (ValueError, FileNotFoundError) as e:
        raise HubError(str(e)) from None
    c = manifest["config"]
    data = DatasetCardData(
        tags=["selfdistill", "self-distillation", "code"],
        configs=[{"config_name": "default", "data_files": [{"split": "train", "path": "shards/*.jsonl"}]}],
    )
    card = DatasetCard(
        f"---\n{data.to_yaml()}\n---\n\n# Self-distillation samples of "
        f"{c['model']}\n\n{manifest['counts']['samples']} samples ({len(records)} kept: `keep` is true) of "
        f"`{c['model']}` on `{c['prompts']}` at T_train {c['temperature']}, top-k {c['top_k']}, top-p {c['top_p']}, N "
        f"{c['n']}, drawn by selfdistill for simple self-distillation ([arXiv 2604.01193]({PAPER})). manifest.json "
        "holds the full config, chat template and hashes.\n"
    )
    card.save(path / CARD)
    return _upload(
        path, repo_id, "dataset", private, allow=["shards/*.jsonl", "manifest.json", "prompts_report.json", CARD]
    )
