# The two commands a new user needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test deps system-deps lint bench clean

run: $(BIN)/modelport
	$(BIN)/modelport up

test: deps lint
	$(BIN)/pytest -q -p no:cacheprovider

lint: $(BIN)/modelport
	$(BIN)/ruff check modelport tests bench
	$(BIN)/mypy

bench: deps
	$(BIN)/python -m bench.overhead
	$(BIN)/python -m bench.llamacpp_throughput

deps: $(BIN)/modelport system-deps

# llama.cpp is compiled once per machine into a wheel kept in the user's cache, for any CPU of the machine's
# architecture (AVX2 on x86-64), not with -march=native: its AMX kernels crash on some virtual machines.
LLAMA_VERSION := 0.3.36
LLAMA_WHEELS := $(HOME)/.cache/modelport/wheels
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF $(if $(filter x86_64,$(shell uname -m)),-DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON)

# Python dependencies, in a private virtual environment.
$(BIN)/modelport: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	ls $(LLAMA_WHEELS)/llama_cpp_python-$(LLAMA_VERSION)-*.whl >/dev/null 2>&1 || CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" \
		$(BIN)/pip wheel -q --no-cache-dir --no-deps -w $(LLAMA_WHEELS) llama-cpp-python==$(LLAMA_VERSION)
	$(BIN)/pip install -q --find-links $(LLAMA_WHEELS) --only-binary llama-cpp-python -e '.[dev]'
	touch $@

# The real servers and browser the tests start on free ports (they never use ones already running).
SYSTEM_PACKAGES := redis-server postgresql nginx-light chromium openssl docker-compose slapd ldap-utils
system-deps:
	@if ! command -v redis-server >/dev/null || ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
		|| ! command -v nginx >/dev/null || ! command -v chromium >/dev/null || ! command -v docker-compose >/dev/null \
		|| ! command -v ldapadd >/dev/null || ! test -x /usr/sbin/slapd; then \
		$(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q $(SYSTEM_PACKAGES); \
	fi

clean:
	rm -rf $(VENV) .modelport .mypy_cache .ruff_cache .pytest_cache .hypothesis
