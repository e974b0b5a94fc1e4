# Two commands for a newcomer: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
REFERENCE := panoptica connected-components-3d pandas plotly narwhals rich ruamel.yaml typer nnunetv2

.PHONY: demo test test-slow lint bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e ".[dev,onnx,openvino,ray]"
	# the suite's references, without their pins: panoptica for the iou lesion matching (its metadata pins numpy<2.3,
	# but its code runs on the pinned numpy; tests/evaluation/test_matching_iou.py), and nnunetv2 for the planner's
	# topology (tests/planning/test_topology.py imports its numpy-only network_topology; its dependencies would pull a
	# CUDA torchvision through timm)
	$(PY) -m pip install -q --no-deps -c constraints.txt $(REFERENCE)
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m seg.demo

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PY) benchmarks/losses.py
	$(PY) benchmarks/data.py
	$(PY) benchmarks/inference.py
	$(PY) benchmarks/memory_format.py

clean:
	rm -rf $(VENV) runs demo_output
