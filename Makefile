# Two entry points: `make demo` (install, then run the demo study) and `make test` (install, then the tests).
PYTHON ?= python3
VENV ?= .venv
# torch 2.13.0: a CPU wheel where one is on local disk; elsewhere pip picks the platform's default build.
TORCH_SPEC ?= torch==2.13.0
FF := $(VENV)/bin/fairfront
MYPY_TARGETS := -p fairfront.search -p fairfront.spaces.family -p fairfront.spaces.registry \
	-p fairfront.objectives.measures.registry -p fairfront.objectives.measures.report -p fairfront.jsonsafe
export RAY_AUTH_MODE ?= disabled
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install demo lint test benchmarks clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet "$(TORCH_SPEC)"
	$(VENV)/bin/python -m pip install --quiet -e ".[test]"
	touch $@

demo: install
	@if $(FF) status demo >/dev/null 2>&1; then $(FF) resume demo; else $(FF) run studies/demo.toml; fi

# ruff (lint and import order) over the tree; mypy over search/ and the protocols, through a link that
# gives the repository root its import name (the package-dir mapping hides it from static tools).
lint: install
	@$(VENV)/bin/ruff check --quiet .
	@mkdir -p build/typecheck && ln -sfn ../.. build/typecheck/fairfront
	@MYPYPATH=build/typecheck $(VENV)/bin/mypy --no-error-summary $(MYPY_TARGETS)

test: install lint
	@$(VENV)/bin/python -m pytest -p no:cacheprovider $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests"; exit 1; fi; exit $$rc

benchmarks: install
	@for b in benchmarks/[!_]*.py; do echo "== $$b"; $(VENV)/bin/python $$b || exit 1; done

clean:
	rm -rf $(VENV) *.egg-info
