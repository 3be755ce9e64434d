# Two entry points: `make demo` (the main job) and `make test` (the whole suite).
# Each creates .venv and installs what it needs on first use.
PY ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean-venv

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(VENV)/bin/python || $(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q -r requirements-dev.txt
	$(VENV)/bin/pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False $(VENV)/bin/python app.py $(ARGS)

test: $(STAMP)
	HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False $(VENV)/bin/python -m pytest -q

bench: $(STAMP)
	$(VENV)/bin/python bench/generator.py
	$(VENV)/bin/python bench/precision.py
	$(VENV)/bin/python bench/synthfaces_renderer.py
	$(VENV)/bin/python bench/synthfaces.py
	$(VENV)/bin/python bench/attribute_classifier.py --retrain
	$(VENV)/bin/python bench/inversion.py
	$(VENV)/bin/python bench/adaptation.py --strengths 0.25 0.5 0.75
	$(VENV)/bin/python bench/domain_diagnostics.py
	$(VENV)/bin/python bench/look_checks.py
	$(VENV)/bin/python bench/app.py
	$(VENV)/bin/python bench/gpu.py

clean-venv:
	rm -rf $(VENV)
