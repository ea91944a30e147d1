"""MPNet (all-mpnet-base-v2) vs MiniLM (the embedded student's base): train-step speed, side by side.

A few optimizer steps (forward, backward, AdamW) of each on the same length-grouped batches of training
texts, each with its own tokenizer, in turn; the ratio of their seconds per step estimates what fine-tuning
the mpnet teacher adds to a run. ``python -m bench.teacher_speed [--steps N] [--batch-size B]``; needs
``make mpnet`` first. Prints one JSON object (also written to bench/results/teacher_speed.json).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer

from pipelines.config import EMBEDDED_MODEL
from pipelines.data.embedded import resolve_model_name
from pipelines.data.sources import load_rotten_tomatoes
from pipelines.train.trainer import load_classifier

MODELS = {"minilm": EMBEDDED_MODEL, "mpnet": "all-mpnet-base-v2"}
RESULTS = Path(__file__).parent / "results" / "teacher_speed.json"


def seconds_per_step(name: str, texts: list[str], labels: list[int], *, steps: int, batch_size: int,
                     max_length: int) -> float:
    """Median seconds of one train step of ``name`` (after one warm-up step) over ``steps`` batches."""
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_name(name))
    model = load_classifier(name).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5)
    times = []
    for step in range(steps + 1):
        rows = slice(step * batch_size, (step + 1) * batch_size)
        batch = tokenizer(texts[rows], truncation=True, max_length=max_length, padding=True, return_tensors="pt")
        started = time.perf_counter()
        loss = model(**batch, labels=torch.tensor(labels[rows])).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step:  # the first step warms up
            times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2]


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(prog="python -m bench.teacher_speed", description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    args = parser.parse_args(argv)
    frame = load_rotten_tomatoes().sample(n=(args.steps + 1) * args.batch_size, random_state=0)
    texts, labels = frame["text"].tolist(), frame["label"].astype(int).tolist()
    out: dict[str, float] = {"steps": args.steps, "batch_size": args.batch_size, "threads": torch.get_num_threads()}
    for key, name in MODELS.items():
        out[f"{key}_s_per_step"] = round(seconds_per_step(name, texts, labels, steps=args.steps,
                                                          batch_size=args.batch_size, max_length=args.max_length), 3)
    out["ratio"] = round(out["mpnet_s_per_step"] / out["minilm_s_per_step"], 2)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
