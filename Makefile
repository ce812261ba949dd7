# The two set-up commands (README): `make demo` and `make test`. Both create .venv themselves.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# No network at run time: every library's offline switch, Ray on loopback, no token auth.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export YOLO_OFFLINE := 1
export YOLO_AUTOINSTALL := false
export PADDLE_PDX_DISABLE_MODEL_SOURCE_CHECK := True
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER := 0
export RAY_AUTH_MODE := disabled
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: demo test env lock clean

env: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt pip
	$(BIN)/pip install -q -c constraints.txt -e '.[all]'
	touch $(STAMP)

# Annotate the bundled corpus (embedded local Ray), inspect it, draw the gallery; then train the
# tiny MoAI recipe on those annotations, stage 1 then stage 2, and answer a question with it; then
# evaluate it on a tiny POPE-style benchmark about the demo images (prepare, annotate, run, score;
# the benchmark's images are the demo's, under the same ids, so the annotation job finds them done).
demo: $(STAMP)
	$(BIN)/python -m pipeline demo
	$(BIN)/trainer conversations --annotations demo/out/annotations --out demo/conversations.json
	$(BIN)/trainer train --recipe trainer/recipes/tiny.yaml --stage 1
	$(BIN)/trainer train --recipe trainer/recipes/tiny.yaml --stage 2
	$(BIN)/trainer generate --model runs/tiny/stage2/final --annotations demo/out/annotations \
		--image bus.jpg --question "What objects are in the image?"
	$(BIN)/python -m trainer.evaluate.demo --corpus demo/corpus --out demo/pope
	$(BIN)/trainer evaluate prepare --benchmark pope --data demo/pope --image-root demo/corpus --out demo/eval/pope
	$(BIN)/python -m pipeline run --config tiny --input demo/eval/pope/manifest.csv \
		--output demo/out/annotations --set tiny_workdir=demo/out/tiny-models
	$(BIN)/trainer evaluate run --benchmark pope --questions demo/eval/pope/questions.jsonl \
		--annotations demo/out/annotations --model runs/tiny/stage2/final --out demo/eval/results
	@echo "note: the model is a random tiny one trained for a few steps on the demo images, so these numbers are chance"

test: $(STAMP)
	$(BIN)/python -m pytest -q

# Refresh the lock after changing dependencies in pyproject.toml.
lock: $(STAMP)
	$(BIN)/pip freeze --exclude-editable --all | grep -v '^moai-pipeline' > constraints.txt

clean:
	rm -rf $(VENV) demo/corpus demo/out demo/conversations.json demo/pope demo/eval runs
