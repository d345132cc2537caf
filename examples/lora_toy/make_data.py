"""Toy task data: ISO dates -> US dates ("2023-04-05" -> "04/05/2023"), seeded and deterministic.

SmolLM2-135M-Instruct answers this prompt zero-shot by repeating the ISO date, so its exact match is ~0;
a LoRA adapter learns the reordering in a few hundred CPU steps. Writes data/train.jsonl and a disjoint
data/test.jsonl (no date appears in both), one {"date", "us"} object per line.

    python make_data.py [--seed 0] [--train 4000] [--test 200] [--out data]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
from pathlib import Path

FIRST = dt.date(1900, 1, 1)
DAYS = (dt.date(2099, 12, 31) - FIRST).days + 1


def prompt(iso: str) -> str:
    """The task prompt; task/date_us.yaml's doc_to_text must render the same text."""
    return f"Date: {iso}\nUS format:"


def item(day: dt.date) -> dict[str, str]:
    return {"date": day.isoformat(), "us": day.strftime("%m/%d/%Y")}


def make_splits(seed: int, n_train: int, n_test: int) -> tuple[list[dict], list[dict]]:
    """(train, test): n_train + n_test distinct days from 1900..2099, so no test date is ever trained on."""
    rng = random.Random(seed)
    offsets = rng.sample(range(DAYS), n_test + n_train)
    days = [FIRST + dt.timedelta(days=o) for o in offsets]
    return [item(d) for d in days[n_test:]], [item(d) for d in days[:n_test]]


def write_jsonl(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train", type=int, default=4000, help="training items")
    ap.add_argument("--test", type=int, default=200, help="test items (disjoint from train)")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "data"), help="output folder")
    args = ap.parse_args()
    train, test = make_splits(args.seed, args.train, args.test)
    out = Path(args.out)
    write_jsonl(train, out / "train.jsonl")
    write_jsonl(test, out / "test.jsonl")
    print(f"wrote {len(train)} train + {len(test)} test items to {out}")


if __name__ == "__main__":
    main()
