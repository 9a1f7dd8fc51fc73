# Set-up is part of every target: `make demo` and `make test` work on a fresh machine with Python 3.11.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint venv clean

venv: $(STAMP)

$(STAMP): setup.cfg setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first and pinned: the local CPU wheel, not the registry's CUDA build
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[test]"
	# test oracle only: kipoi-veff cannot install with its dependencies (pyvcf)
	$(PY) -m pip install -q --no-deps "kipoi-veff==0.3.1"
	# best effort: headless Chromium for the report's browser test (skipped with a reason when absent)
	-test -x /usr/bin/chromium || (command -v apt-get >/dev/null && apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1) \
	    || echo "chromium not installed: tests/test_report.py::test_report_in_headless_chromium will be skipped"
	touch $(STAMP)

demo: $(STAMP)
	mkdir -p out
	$(VENV)/bin/kipoi-dfim score-variants model_specs/tal_gata_k562 \
	    --vcf example_vcfs/spi1_bqtls/spi1_bqtls.vcf --fasta example_vcfs/spi1_bqtls/spi1_bqtls_hg19_1kb.fa \
	    -o out/spi1_bqtls.dfim.vcf.gz --tsv out/spi1_bqtls.dfim.tsv --maps out/spi1_bqtls.dfim.h5 \
	    --null-shuffles 10 --seed 0
	$(VENV)/bin/kipoi-dfim report out/spi1_bqtls.dfim.tsv --maps out/spi1_bqtls.dfim.h5 -o out/spi1_bqtls.report.html
	@echo "wrote out/spi1_bqtls.dfim.vcf.gz(.tbi), out/spi1_bqtls.dfim.tsv, out/spi1_bqtls.dfim.h5, out/spi1_bqtls.report.html"

test: $(STAMP)
	$(VENV)/bin/ruff check kipoi_dfim tests benchmarks scripts
	$(PY) -m pytest -q -p no:cacheprovider tests

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) out
