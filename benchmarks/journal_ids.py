"""Would a samples directory's journal still resume with this code? For every record of its written
shards, the request this code builds (decoding.Decoder.render, request_seed, SamplingSpec.from_config)
is compared with the record (prompt text, seed) and looked up in the directory's journal.jsonl by its id.
Reads only: it loads the model's tokenizer, no engine, and takes no lock on the directory.

    python benchmarks/journal_ids.py experiments/ssd-qwen0.5b-full/runs/samples-d5198507ee
"""

import json
import sys
from pathlib import Path

from selfdistill.config import SampleConfig
from selfdistill.decoding import Decoder, request_seed
from selfdistill.generate import JOURNAL, Request, SamplingSpec, _request_id
from selfdistill.sample import shard_files

out = Path(sys.argv[1])
cfg = SampleConfig(**json.loads((out / "manifest.json").read_text())["config"])
if not (out / JOURNAL).is_file():
    sys.exit(f"{out / JOURNAL}: missing; the stage finished (its journal deleted) or never decoded")
lines = (out / JOURNAL).read_text().splitlines()
journal = {json.loads(line)["request"] for line in lines if line.endswith("}")}  # a line cut by a kill is no request
records = [json.loads(line) for shard in shard_files(out) for line in shard.read_text().splitlines()]
texts = Decoder(cfg).render({r["prompt_id"]: r["messages"] for r in records})
spec = SamplingSpec.from_config(cfg, temperature=cfg.temperature)
seeds = [request_seed(cfg.seed, r["prompt_id"], r["sample_index"]) for r in records]
ids = {_request_id(Request(texts[r["prompt_id"]], spec, seed)) for r, seed in zip(records, seeds, strict=True)}
print(
    f"{len(records)} records in {len(shard_files(out))} shards: "
    f"prompt text the same {sum(texts[r['prompt_id']] == r['prompt_text'] for r in records)}, "
    f"seed the same {sum(seed == r['seed'] for r, seed in zip(records, seeds, strict=True))}, "
    f"request in the journal {len(ids & journal)} of {len(ids)} (the journal holds {len(journal)} requests)"
)
