# nydus-inspect: the two set-up commands are `make demo` and `make test`; both install what they need
# on a fresh Debian machine (as root) and are safe to run again.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# The real nydus vectors live in shared/vectors beside the checkout; a clone made elsewhere (git clone
# /path/to/checkout /tmp/x) finds them beside the checkout it was cloned from. VECTORS=DIR overrides.
ORIGIN := $(shell git config --get remote.origin.url 2>/dev/null)
VECTORS ?= $(or $(firstword $(wildcard $(abspath ../shared/vectors) $(if $(filter /%,$(ORIGIN)),$(abspath $(ORIGIN)/../shared/vectors)))),$(abspath ../shared/vectors))
# Debian packages: erofs-utils is our independent checker, fuse3 + libfuse3-dev + pkg-config build and run pyfuse3,
# tmux drives the TUI in a real terminal, docker-registry (started by the tests on 127.0.0.1) and skopeo hold images, apache2-utils' htpasswd writes the bcrypt logins of its basic-auth tests, zstd/squashfs/squashfuse/b3sum/debootstrap are the benchmark peers.
APT_PKGS := erofs-utils fuse3 libfuse3-dev pkg-config gcc python3-dev zstd tmux skopeo attr docker-registry cryptsetup-bin apache2-utils
BENCH_APT_PKGS := squashfs-tools squashfuse hyperfine b3sum debootstrap time

.PHONY: demo test lint deps bench clean fixtures oracle

# The stamp depends on this Makefile so that a package added to the list is installed on a machine set up before.
$(VENV)/.apt-stamp: Makefile
	@missing=$$(for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages: $$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi
	@mkdir -p $(VENV) && touch $@

$(VENV)/.pip-stamp: pyproject.toml $(VENV)/.apt-stamp
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	@echo "installing nydus-inspect and its Python dependencies into $(VENV)"
	@$(PY) -m pip install -q --disable-pip-version-check -e '.[test,tui,mount]' --config-settings editable_mode=compat > $(VENV)/pip.log 2>&1 \
		|| { cat $(VENV)/pip.log; exit 1; }
	@$(PY) -m compileall -q nydus_inspect tui > /dev/null
	@touch $@

deps: $(VENV)/.pip-stamp

# The real nydus tools (nydus-image, nydusd, nydusify) and the snapshotter's converter, built once per machine
# into a cache outside the checkout, as test oracles; the last line printed is their directory.
oracle:
	@bash oracle/build.sh

fixtures: deps
	$(PY) fixtures/make_fixtures.py

test: deps
	@[ -d "$(VECTORS)/nydus" ] || echo "make test: no nydus vectors at $(VECTORS): the tests that need them will skip (VECTORS=DIR to point at them)" >&2
	$(PY) -m ruff check nydus_inspect tui tests fixtures bench
	NYDUS_VECTORS=$(VECTORS) $(PY) -m pytest -n 2 -q -p no:cacheprovider

lint: deps
	$(PY) -m ruff check nydus_inspect tui tests fixtures bench
	$(PY) -m ruff format --check nydus_inspect tui tests fixtures bench

demo: deps
	@[ -d "$(VECTORS)/nydus" ] || { echo "make demo: the nydus vectors are not at $(VECTORS); run it from a checkout beside shared/, or pass VECTORS=/path/to/shared/vectors" >&2; exit 2; }
	@V=$(VECTORS)/nydus; N=$(VENV)/bin/nydus-inspect; set -e; \
	echo "\$$ nydus-inspect info $$V/toc/2fa78cad…"; $$N info $$V/toc/2fa78cad554b75ac91a4a125ed148d0ddeb25efa4aaa8bd80e5dc292690a4dca; echo; \
	echo "\$$ nydus-inspect toc $$V/blobs/be7d77ee…"; $$N toc $$V/blobs/be7d77eeb719f70884758d1aa800ed0fb09d701aaec469964e9d54325f0d5fef; echo; \
	echo "\$$ nydus-inspect ls -lR $$V/bootstrap/rafs-v6-2.2.boot"; $$N ls -lR $$V/bootstrap/rafs-v6-2.2.boot; echo; \
	echo "\$$ nydus-inspect cat $$V/bootstrap/rafs-v6-2.2.boot /lib.rs --blob-dir $$V/blobs | head -12"; \
	$$N cat $$V/bootstrap/rafs-v6-2.2.boot /lib.rs --blob-dir $$V/blobs | head -12; echo; \
	if $$N pack --help >/dev/null 2>&1; then \
		T=$$(mktemp -d); \
		echo "\$$ nydus-inspect pack $$V/tar/all-entry-type.tar -o $$T/layer.blob"; $$N pack $$V/tar/all-entry-type.tar -o $$T/layer.blob; \
		echo "\$$ nydus-inspect toc $$T/layer.blob"; $$N toc $$T/layer.blob; \
		echo "\$$ nydus-inspect unpack $$T/layer.blob -o $$T/back.tar && nydus-inspect diff $$V/tar/all-entry-type.tar $$T/layer.blob"; \
		$$N unpack $$T/layer.blob -o $$T/back.tar; $$N diff $$V/tar/all-entry-type.tar $$T/layer.blob; \
		rm -rf $$T; \
	fi

bench: deps
	@missing=$$(for p in $(BENCH_APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; fi
	@$(PY) -m pip install -q --disable-pip-version-check ratarmount > $(VENV)/pip-bench.log 2>&1 \
		|| echo "ratarmount did not install (see $(VENV)/pip-bench.log); its figures will be missing"
	bash bench/make_rootfs.sh
	@for b in bench/bench_*.py; do \
		case $$b in *bench_revs.py|*bench_scale.py) continue;; esac; \
		echo "== $$b"; $(PY) $$b || exit 1; \
	done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
