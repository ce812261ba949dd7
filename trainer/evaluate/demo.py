"""A tiny POPE-style benchmark about the demo corpus's images, written in POPE's official layout
(`coco_pope_random.json`: question_id, image, text, label), for `make demo`:

    python -m trainer.evaluate.demo --corpus demo/corpus --out demo/pope

One object each image shows ("yes") and one it does not ("no"); images missing from the corpus
(the ultralytics photos are an optional extra) are left out.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

OBJECTS = {  # image: (an object in it, an object not in it)
    "astronaut.jpg": ("person", "giraffe"), "coffee.jpg": ("cup", "dog"), "chelsea.jpg": ("cat", "car"),
    "rocket.jpg": ("rocket", "horse"), "bus.jpg": ("bus", "elephant"), "zidane.jpg": ("person", "airplane"),
    "sign_hello.png": ("sign", "cat"), "sign_open.png": ("sign", "bicycle"), "sign_exit.png": ("sign", "pizza"),
}


def write_demo_pope(corpus: Path, out: Path) -> Path:
    lines, qid = [], 0
    for image, (present, absent) in OBJECTS.items():
        if not (corpus / image).is_file():
            continue
        for obj, label in ((present, "yes"), (absent, "no")):
            qid += 1
            lines.append({"question_id": qid, "image": image, "text": f"Is there a {obj} in the image?",
                          "label": label})
    if not lines:
        raise FileNotFoundError(f"{corpus}: none of the demo images ({', '.join(OBJECTS)})")
    out.mkdir(parents=True, exist_ok=True)
    path = out / "coco_pope_random.json"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.evaluate.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="demo/corpus")
    parser.add_argument("--out", default="demo/pope")
    args = parser.parse_args(argv)
    path = write_demo_pope(Path(args.corpus), Path(args.out))
    print(f"demo benchmark: {sum(1 for _ in path.open())} POPE-style questions in {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
