"""`trainer conversations`: a demo conversation JSON made from the annotations themselves.

    trainer conversations --annotations demo/out/annotations --out demo/conversations.json
"""
from __future__ import annotations

import json
from pathlib import Path

from schemas.schema import STATUS_OK
from schemas.verbalize import clean_name

from .data import IMAGE_PLACEHOLDER


def describe_conversations(table, question: str = "What objects are in the image?") -> list[dict]:
    """One LLaVA-style conversation per annotated image, answered from its own panoptic segments
    (largest first): a self-contained demo set for a corpus that has no conversations of its own."""
    conversations = []
    for row in table.select(["image_id", "status", "panoptic"]).to_pylist():
        if row["status"] != STATUS_OK:
            continue
        names = []
        for seg in sorted(row["panoptic"] or [], key=lambda s: -s["area"]):
            name = clean_name(seg["label"])
            if name not in names:
                names.append(name)
        conversations.append({"id": row["image_id"], "image": row["image_id"], "conversations": [
            {"from": "human", "value": f"{IMAGE_PLACEHOLDER}\n{question}"},
            {"from": "gpt", "value": ", ".join(names[:5]) + "." if names else "Nothing I can name."}]})
    return conversations


def main(argv: list[str] | None = None) -> int:
    """`trainer conversations --annotations DIR --out FILE`: the demo conversation JSON."""
    import argparse

    from schemas import read_annotations
    parser = argparse.ArgumentParser(prog="trainer conversations", description=describe_conversations.__doc__.split(
        ":")[0].strip())
    parser.add_argument("--annotations", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    conversations = describe_conversations(read_annotations(args.annotations))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(conversations, indent=1) + "\n")
    print(f"{len(conversations)} conversations -> {args.out}")
    return 0
