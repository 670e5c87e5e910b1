# The two commands a new user needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test deps system-deps lint bench clean

run: $(BIN)/modelport
	@$(BIN)/modelport up

test: deps lint
	$(BIN)/pytest -q -p no:cacheprovider

lint: $(BIN)/modelport
	$(BIN)/ruff check modelport tests bench
	$(BIN)/mypy

bench: deps
	$(BIN)/python -m bench.overhead
	$(BIN)/python -m bench.tracing
	$(BIN)/python -m bench.scale
	$(BIN)/python -m bench.llamacpp_throughput

deps: $(BIN)/modelport system-deps tests/node/node_modules/.package-lock.json

# The official openai Node SDK, pinned, for tests/test_node_sdk.py.
tests/node/node_modules/.package-lock.json: tests/node/package-lock.json | system-deps
	@npm ci --prefix tests/node --no-audit --no-fund --loglevel=error

# llama.cpp is compiled once per machine into a wheel kept in the user's cache, for any CPU of the machine's
# architecture (AVX2 on x86-64), not with -march=native: its AMX kernels crash on some virtual machines. Only
# the library is built: llama.cpp's server, tools, examples and tests are off when it is built inside
# llama-cpp-python, and LLAVA_BUILD=OFF drops the multimodal library ModelPort does not load. An interpreter
# that already has llama-cpp-python >= 0.3.8 (say, a GPU build) lends it to the virtual environment instead.
LLAMA_VERSION := 0.3.36
LLAMA_WHEELS := $(HOME)/.cache/modelport/wheels
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF $(if $(filter x86_64,$(shell uname -m)),-DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON)
LLAMA_INSTALLED := $(shell $(PYTHON) -c 'import importlib.metadata as m, sys; \
	sys.exit(tuple(map(int, m.version("llama-cpp-python").split(".")[:3])) < (0, 3, 8))' 2>/dev/null && echo yes)

# Python dependencies, in a private virtual environment.
$(BIN)/modelport: pyproject.toml
	@echo "modelport: installing the Python dependencies into $(VENV)/ (once) …"
	@$(PYTHON) -m venv $(if $(LLAMA_INSTALLED),--system-site-packages) $(VENV)
	@$(BIN)/pip install -qq --upgrade pip
	@if [ -z "$(LLAMA_INSTALLED)" ] && ! ls $(LLAMA_WHEELS)/llama_cpp_python-$(LLAMA_VERSION)-*.whl >/dev/null 2>&1; then \
		echo "modelport: building llama.cpp (llama-cpp-python $(LLAMA_VERSION), the library only) once for this machine: a few minutes …"; \
		CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip wheel -qq --no-cache-dir --no-deps -w $(LLAMA_WHEELS) \
			llama-cpp-python==$(LLAMA_VERSION); \
	fi
	@$(BIN)/pip install -qq --find-links $(LLAMA_WHEELS) --only-binary llama-cpp-python -e '.[dev]'
	@touch $@

# The real servers and browser the tests start on free ports (they never use ones already running).
# kubectl renders deploy/kubernetes (`kubectl kustomize`, kustomize v5 from kubectl 1.27 on); Debian's
# kubernetes-client is only the fallback for a machine without one.
SYSTEM_PACKAGES := redis-server postgresql nginx-light chromium openssl docker-compose slapd ldap-utils \
	$(if $(shell command -v npm),,nodejs npm) $(if $(shell command -v kubectl),,kubernetes-client)
system-deps:
	@if ! command -v redis-server >/dev/null || ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
		|| ! command -v npm >/dev/null \
		|| ! command -v nginx >/dev/null || ! command -v chromium >/dev/null || ! command -v docker-compose >/dev/null \
		|| ! command -v ldapadd >/dev/null || ! test -x /usr/sbin/slapd || ! command -v kubectl >/dev/null; then \
		$(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q $(SYSTEM_PACKAGES); \
	fi

clean:
	rm -rf $(VENV) .modelport .mypy_cache .ruff_cache .pytest_cache .hypothesis
