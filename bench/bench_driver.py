"""What the driver of `pipeline run` costs as the corpus grows: peak RSS and time to the first batch.

  python bench/bench_driver.py                      # 10^5, 10^6, 10^7 inputs, 0 % and 50 % written
  python bench/bench_driver.py --sizes 100000 1000000 --keep

A synthetic manifest (Parquet, `id,path`: N distinct ids, every path the same small JPEG) and, for
"50 %", a synthetic output holding the first half of the ids (files of 1,000 rows, `image_id` and
`status` columns: all that resume reads). No models: each case is a fresh Python process that does
what `pipeline run` does before its annotators, with the project's own functions (embedded Ray, the
manifest dataset, the written index, the counting pass, blocks of `block_rows`, decode) and stops
at the first decoded batch. It prints, per case:
  plan s         reading which ids are written and the counting pass (duplicates, to do): the resume
  first batch s  from the start of the process to the first decoded batch (Ray start included)
  driver MiB     peak RSS of the driver process only (getrusage); Ray's workers, raylet and object
                 store are other processes and are not counted
  exponent       d log(RSS) / d log(N) against the previous size (0: flat, 1: linear)
Data goes under --folder (default /tmp/moai-bench-driver): a few hundred MB at 10^7; removed unless
--keep (which also reuses it).
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CHUNK = 1_000_000


def ids(start: int, stop: int) -> pa.Array:
    return pa.array(np.char.add("img/", np.char.zfill(np.arange(start, stop).astype(str), 10)))


def make_manifest(folder: Path, count: int) -> Path:
    from PIL import Image
    folder.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 48), (120, 30, 200)).save(folder / "one.jpg")
    manifest = folder / "manifest.parquet"
    if manifest.exists() and pq.ParquetFile(manifest).metadata.num_rows == count:
        return manifest  # kept from an earlier --keep run
    schema = pa.schema([("id", pa.string()), ("path", pa.string())])
    with pq.ParquetWriter(manifest, schema) as writer:
        for start in range(0, count, CHUNK):
            chunk = ids(start, min(count, start + CHUNK))
            writer.write_table(pa.table({"id": chunk, "path": pa.array(["one.jpg"] * len(chunk))}, schema))
    return manifest


def make_output(folder: Path, count: int, rows_per_file: int = 1000) -> Path:
    """The first `count` ids as already written, in files like a run's."""
    folder.mkdir(parents=True, exist_ok=True)
    for start in range(0, count, CHUNK):
        chunk = ids(start, min(count, start + CHUNK))
        for offset in range(0, len(chunk), rows_per_file):
            part = chunk.slice(offset, rows_per_file)
            pq.write_table(pa.table({"image_id": part, "status": pa.array(["ok"] * len(part))}),
                           folder / f"part-bench-{start + offset:012d}.parquet")
    return folder


def one_case(manifest: str, output: str) -> dict:
    """In a fresh process: what `pipeline run` does up to the first decoded batch."""
    start = time.perf_counter()
    from pipeline.config import load_config
    from pipeline.inputs import input_dataset
    from pipeline.plan import block_rows_for, count_inputs, pending, written_index
    from pipeline.run import build_dataset, init_ray
    cfg = load_config("tiny", [f"annotators.{n}.enabled=false" for n in ("panoptic", "owod", "owod_yolo", "sgg", "ocr")]
                      + ["working_size=64", "num_cpus=2", "object_store_memory=2000000000"],
                      input=manifest, output=output)
    ray = init_ray(cfg)
    ray.data.DataContext.get_current().enable_progress_bars = False
    inputs = input_dataset(ray, cfg.input, cfg.image_root)
    plan_start = time.perf_counter()
    index = written_index(ray, cfg.output, skip_errors=False)
    counts = count_inputs(ray, inputs, index)
    plan_s = time.perf_counter() - plan_start
    todo = pending(input_dataset(ray, cfg.input, cfg.image_root, num_cpus=cfg.decode_num_cpus), index,
                   block_rows_for(counts.todo, cfg.decode_batch_size, cfg.block_rows), cfg.decode_num_cpus)
    batch = next(iter(build_dataset(todo, cfg, {}).iter_batches(batch_format="pyarrow", batch_size=None)))
    first_s = time.perf_counter() - start
    assert batch.num_rows and batch.column("status")[0].as_py() == "ok", batch.column("error")[0]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux -> MiB
    ray.shutdown()
    return {"inputs": counts.inputs, "written": counts.written, "plan_s": plan_s, "first_s": first_s,
            "rss_mib": rss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10**5, 10**6, 10**7])
    parser.add_argument("--done", type=float, nargs="+", default=[0.0, 0.5], help="fractions already written")
    parser.add_argument("--folder", default="/tmp/moai-bench-driver")
    parser.add_argument("--keep", action="store_true", help="keep the synthetic data")
    parser.add_argument("--one", nargs=2, metavar=("MANIFEST", "OUTPUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_case(*args.one)))
        return
    root = Path(args.folder)
    results = []
    try:
        for count in args.sizes:
            manifest = make_manifest(root / str(count), count)
            for done in args.done:
                output = root / str(count) / f"out-{int(done * 100)}"
                if len(list(output.glob("*.parquet"))) != -(-int(count * done) // 1000):
                    shutil.rmtree(output, ignore_errors=True)
                    make_output(output, int(count * done))
                line = subprocess.run([sys.executable, __file__, "--one", str(manifest), str(output)],
                                      check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
                results.append({"done": done, **json.loads(line)})
                print(f"  {count:>10,} inputs, {done:.0%} written: {results[-1]}", flush=True)
            if not args.keep:
                shutil.rmtree(root / str(count), ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print("\ndriver = the `pipeline run` process only (peak RSS); Ray workers are separate processes")
    print(f"{'inputs':>12} {'written':>8} {'plan s':>8} {'first batch s':>14} {'driver MiB':>11} {'exponent':>9}")
    for row in results:
        before = [r for r in results if r["done"] == row["done"] and r["inputs"] < row["inputs"]]
        exponent = "" if not before else \
            f"{math.log(row['rss_mib'] / before[-1]['rss_mib']) / math.log(row['inputs'] / before[-1]['inputs']):.2f}"
        print(f"{row['inputs']:>12,} {row['done']:>8.0%} {row['plan_s']:>8.1f} {row['first_s']:>14.1f} "
              f"{row['rss_mib']:>11.0f} {exponent:>9}")


if __name__ == "__main__":
    main()
