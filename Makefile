# Fresh-machine entry points (see README): `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned: this pin is a local CPU wheel; any other request downloads GBs
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test,federate]"
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/myositis-qmri demo --out demo_out

test: $(VENV)/.installed
	$(PY) -m pytest -n 2 Testing

.PHONY: install demo test
