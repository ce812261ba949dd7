"""run_isolating: the one rule for "a batch that raises is retried image by image", used by every
annotator's own batching and by the pipeline's actors."""
import numpy as np

from annotators.base import Failed, map_in_batches, run_isolating


def model_failing_on(bad_value: int, calls: list):
    def run(images):
        calls.append(len(images))
        if any(int(img[0, 0, 0]) == bad_value for img in images):
            raise ValueError("cannot annotate")
        return [{"value": int(img[0, 0, 0])} for img in images]
    return run


def images(*values):
    return np.stack([np.full((4, 4, 3), v, np.uint8) for v in values])


def test_only_the_breaking_image_fails():
    calls = []
    results = run_isolating(model_failing_on(7, calls), images(1, 7, 3), "toy forward")
    assert results[0] == {"value": 1} and results[2] == {"value": 3}
    assert isinstance(results[1], Failed) and results[1].message == "toy forward: ValueError: cannot annotate"
    assert calls == [3, 1, 1, 1]  # the batch once, then each image alone


def test_a_wrong_result_count_is_isolated_too():
    results = run_isolating(lambda batch: [{"x": 1}] if len(batch) == 1 else [], images(1, 2))
    assert results == [{"x": 1}, {"x": 1}]
    (only,) = run_isolating(lambda batch: [], images(1))
    assert isinstance(only, Failed) and only.message.startswith("RuntimeError: 0 results for 1 images")


def test_map_in_batches_chunks_and_keeps_order():
    calls = []
    results = map_in_batches(images(1, 2, 7, 4, 5), 2, model_failing_on(7, calls), "toy")
    assert [r if isinstance(r, Failed) else r["value"] for r in results][:2] == [1, 2]
    assert isinstance(results[2], Failed) and [r["value"] for r in results[3:]] == [4, 5]
    assert calls == [2, 2, 1, 1, 1]
