"""Train a small LoRA adapter for the date task on CPU (a few minutes on 2 cores).

    python train.py [--base GGUF] [--data data/train.jsonl] [--out work/adapter] [--steps 100] [--batch 16]

The base model is loaded through webllama.converter.sources.load_source, i.e. the same float32 model and fixed
tokenizer that `webllama convert` and `webllama eval --backend native` use, so the adapter is trained
on exactly the weights it will be merged into. Only the answer tokens are scored (the prompt is given),
with the tokens split as the eval sees them: the prompt's tokens, then the generated " MM/DD/YYYY\\n".
Writes a standard PEFT adapter folder and OUT/train_log.json (loss curve, time, settings).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from make_data import prompt  # noqa: E402  (the one definition of the prompt text)

IGNORE = -100  # label of the prompt and padding positions


def encode(tokenizer, row: dict) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids); the answer ends with the newline that stops generation in the eval."""
    ids = tokenizer(prompt(row["date"]), add_special_tokens=False).input_ids
    return ids, tokenizer(f" {row['us']}\n", add_special_tokens=False).input_ids


def collate(pairs: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch; labels are IGNORE except on the answer tokens."""
    width = max(len(p) + len(a) for p, a in pairs)
    ids = torch.full((len(pairs), width), pad_id, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(pairs), width), dtype=torch.long)  # (B, T)
    labels = torch.full((len(pairs), width), IGNORE, dtype=torch.long)  # (B, T)
    for i, (p, a) in enumerate(pairs):
        n = len(p) + len(a)
        ids[i, :n] = torch.tensor(p + a)
        mask[i, :n] = 1
        labels[i, len(p) : n] = torch.tensor(a)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def answer_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Cross-entropy on the answer tokens, with the output projection (49152 x 576, a quarter of the
    model's compute here) applied only at the positions that predict an answer token."""
    inner = model.get_base_model()
    hidden = inner.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    targets = batch["labels"][:, 1:]  # (B, T-1): position t predicts token t+1
    keep = targets != IGNORE
    logits = inner.lm_head(hidden[:, :-1][keep])  # (N, V)
    return torch.nn.functional.cross_entropy(logits.float(), targets[keep])


def lr_at(step: int, steps: int, peak: float, warmup: int) -> float:
    """Linear warmup, then linear decay to zero."""
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * max(0.0, (steps - step) / max(1, steps - warmup))


def load_rows(path: Path) -> list[dict]:
    if not path.is_file():
        raise SystemExit(f"{path} not found: run `python make_data.py` first")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def build(args: argparse.Namespace):
    from peft import LoraConfig, get_peft_model
    from webllama.converter.sources import load_source, smollm2_gguf

    source = load_source(str(args.base or smollm2_gguf()))
    lora = LoraConfig(
        r=args.rank, lora_alpha=2 * args.rank, lora_dropout=0.0, target_modules=args.targets.split(","), task_type="CAUSAL_LM"
    )
    return source, get_peft_model(source.model, lora)


def train(args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    source, model = build(args)
    tok = source.tokenizer
    pairs = [encode(tok, r) for r in load_rows(Path(args.data))]
    order = random.Random(args.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    model.train()
    log, queue, started = [], [], time.time()
    for step in range(args.steps):
        if len(queue) < args.batch:  # a fresh shuffle per epoch
            queue += order.sample(pairs, len(pairs))
        batch, queue = collate(queue[: args.batch], tok.pad_token_id or 0), queue[args.batch :]
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps, args.lr, args.warmup)
        loss = answer_loss(model, batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        log.append(round(loss.item(), 5))
        if step % args.log_every == 0 or step == args.steps - 1:
            print(f"step {step:4d}  loss {loss.item():.4f}  {time.time() - started:6.1f} s", flush=True)
    seconds = time.time() - started
    model.save_pretrained(args.out)
    n_trainable = sum(p.numel() for p in params)
    return {
        "base": source.name,
        "base_sha256": source.sha256,
        "steps": args.steps,
        "batch": args.batch,
        "lr": args.lr,
        "warmup": args.warmup,
        "rank": args.rank,
        "targets": args.targets,
        "seed": args.seed,
        "threads": torch.get_num_threads(),
        "train_items": len(pairs),
        "trainable_params": n_trainable,
        "train_seconds": round(seconds, 1),
        "first_loss": log[0],
        "final_loss": sum(log[-10:]) / len(log[-10:]),
        "loss": log,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default=None, help="source model (default: the SmolLM2-135M-Instruct GGUF)")
    ap.add_argument("--data", default=str(HERE / "data" / "train.jsonl"))
    ap.add_argument("--out", default=str(HERE / "work" / "adapter"), help="PEFT adapter folder to write")
    ap.add_argument("--steps", type=int, default=100, help="optimizer steps (the loss is ~0 after ~30)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--targets", default="q_proj,v_proj", help="comma-separated module names that get LoRA")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's; 1 is faster on a busy machine)")
    ap.add_argument("--log-every", type=int, default=20)
    args = ap.parse_args()
    record = train(args)
    Path(args.out, "train_log.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(
        f"adapter: {args.out}  ({record['trainable_params']} trainable parameters, {record['train_seconds']} s, "
        f"loss {record['first_loss']:.3f} -> {record['final_loss']:.3f})"
    )


if __name__ == "__main__":
    main()
