"""Check gated-vs-removed equality and time dense vs pruned models on the best device here.

Usage (CPU or GPU; on a GPU machine this is the Foundation's CUDA check):

    PYTHONPATH=. python bench/device_check.py [--model-dir PATH] [--out results.json]

``--model-dir`` is a folder with the default encoder (config + safetensors, any dtype); without it
the MiniLM-L6 shape is built with random weights. A BERT-base shape (12 x 12, hidden 768) is always
built from a config with random weights: timing does not depend on the values of the weights.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, BertConfig

from pruning.cost import compare_latency, flops_per_example
from pruning.heads import apply_mask, head_grid, remove_heads
from pruning.models import pick_device

log = logging.getLogger("device_check")


def bert_shape(layers: int, heads: int, hidden: int, intermediate: int) -> torch.nn.Module:
    config = BertConfig(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        num_labels=2,
    )
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_config(config, attn_implementation="sdpa")


def gated_vs_removed(model: torch.nn.Module, device: torch.device, count: int) -> float:
    """Max |gated - removed| logits over ``count`` random masks (empty layers included)."""
    n_layers, n_heads = head_grid(model)
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(1000, 5000, (4, 40), generator=generator).to(device)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1:, 25:] = 0
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    worst = 0.0
    with torch.no_grad():
        for index in range(count):
            mask = torch.rand(n_layers, n_heads, generator=generator) < 0.5
            mask[index % n_layers] = index % 2 == 0 and mask[index % n_layers]
            with apply_mask(model, mask):
                gated = model(**inputs).logits
            removed = remove_heads(model, mask)(**inputs).logits
            worst = max(worst, float((gated - removed).abs().max()))
    return worst


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-dir", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--masks", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    device = pick_device()
    report: dict[str, object] = {
        "date": time.strftime("%Y-%m-%d"),
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else platform.processor(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "results": [],
    }
    shapes: dict[str, torch.nn.Module] = {}
    if args.model_dir:
        minilm = AutoModelForSequenceClassification.from_pretrained(
            args.model_dir, num_labels=2, attn_implementation="sdpa"
        ).float()
        shapes["MiniLM-L6 (default weights)"] = minilm
    else:
        shapes["MiniLM-L6 shape (random)"] = bert_shape(6, 12, 384, 1536)
    shapes["BERT-base shape (random)"] = bert_shape(12, 12, 768, 3072)
    results = report["results"]
    assert isinstance(results, list)
    for name, model in shapes.items():
        model.to(device).eval()
        worst = gated_vs_removed(model, device, args.masks)
        log.info("%s: max |gated - removed| = %.3g over %d masks", name, worst, args.masks)
        n_layers, n_heads = head_grid(model)
        mask = torch.ones(n_layers, n_heads, dtype=torch.bool)
        mask[:, n_heads // 2 :] = False
        pruned = remove_heads(model, mask)
        for batch_size in (1, 8, 32):
            for seq_len in (32, 128):
                timing = compare_latency(
                    model,
                    pruned,
                    batch_size=batch_size,
                    seq_len=seq_len,
                    repeats=args.repeats,
                    warmup=5,
                )
                row = {
                    "model": name,
                    "max_abs_gated_minus_removed": worst,
                    "batch_size": batch_size,
                    "seq_len": seq_len,
                    "dense_ms": round(timing["dense"].median_ms, 3),
                    "pruned_50pct_ms": round(timing["pruned"].median_ms, 3),
                    "speedup": round(timing["speedup"], 3),
                    "speedup_spread": [
                        round(timing["speedup_min"], 3),
                        round(timing["speedup_max"], 3),
                    ],
                    "flops_speedup": round(
                        flops_per_example(model, seq_len) / flops_per_example(pruned, seq_len), 3
                    ),
                }
                results.append(row)
                log.info("%s", row)
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.write_text(text)
    sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
