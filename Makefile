# Every target works on a fresh machine with only python3 and the package index:
# the virtualenv is created and filled on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: test lint typecheck unit demo demo-codec bench bench-typed bench-framing bench-endpoint bench-backup bench-cluster bench-send clean fuzz soak

$(INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

test: lint typecheck unit

lint: $(INSTALLED)
	$(BIN)/ruff check binif tests benchmarks examples fuzz
	$(BIN)/ruff format --check binif tests benchmarks examples fuzz

typecheck: $(INSTALLED)
	$(BIN)/mypy --strict binif fuzz benchmarks examples

unit: $(INSTALLED)
	$(BIN)/python -m pytest -q

# The demos need binif alone (and uvloop, its dependency), not the test extra.
DEMO_INSTALLED := $(VENV)/.demo-installed
$(DEMO_INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $@

demo: $(DEMO_INSTALLED)
	$(BIN)/python examples/replication.py

# Build a packet, hex-dump it, parse it back, decode a real OpenSIPS 2.1 packet.
demo-codec: $(DEMO_INSTALLED)
	$(BIN)/python examples/codec_tour.py

# The codec benchmark also times the construct library (the bench extra).
BENCH_INSTALLED := $(VENV)/.bench-installed
$(BENCH_INSTALLED): $(INSTALLED)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $@

bench: $(BENCH_INSTALLED)
	$(BIN)/python benchmarks/bench_codec.py

# Message.from_packet against reader.unpack of the same layout (target 1.2x for dialog CREATED).
bench-typed: $(INSTALLED)
	$(BIN)/python benchmarks/bench_typed.py

# A backup keeping a dialog table (raw and typed handlers) at fixed rates, and the
# drop path against a bare uvloop protocol (about 3 minutes).
bench-backup: $(INSTALLED)
	$(BIN)/python benchmarks/bench_backup.py

# The codec and dispatch modules compiled with mypyc against the pure-Python ones
# (needs a C compiler and the Python headers; nothing compiled is kept).
try-mypyc: $(INSTALLED)
	$(BIN)/python benchmarks/try_mypyc.py

# In-process receive, loopback loss-free rate and send rate, each against a bare baseline.
bench-endpoint: $(INSTALLED)
	$(BIN)/python benchmarks/bench_endpoint.py

# StreamDecoder against a hand-written framing loop, in three splits of the same stream.
bench-framing: $(INSTALLED)
	$(BIN)/python benchmarks/bench_framing.py

# TCP receive against a hand-written asyncio Protocol, send against transport.write, the flood.
bench-stream: $(INSTALLED)
	$(BIN)/python benchmarks/bench_stream.py

# Dialogs/s to a typed handler through a cluster Node against a bare StreamEndpoint (floor 70%).
bench-cluster: $(INSTALLED)
	$(BIN)/python benchmarks/bench_cluster.py

# Send rates: bare sendto with and without IP_RECVERR, Endpoint.send, replicate to a dead peer.
bench-send: $(INSTALLED)
	$(BIN)/python benchmarks/bench_send.py

# make fuzz FUZZ_SECONDS=600: each target for that long; failures land in tests/fuzz_regressions/.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= codec writer dispatch stream stream_dispatch
fuzz: $(INSTALLED)
	status=0; for target in $(FUZZ_TARGETS); do \
		$(BIN)/python fuzz/run.py $$target -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 || status=1; \
	done; exit $$status

# make soak SOAK_DATAGRAMS=1000000 SOAK_SENDERS=4 SOAK_RATE=20000 (0: as fast as the senders go)
# SOAK_STREAM_PACKETS=1000000: the TCP part, one good peer among hostile clients
SOAK_DATAGRAMS ?= 1000000
SOAK_SENDERS ?= 4
SOAK_RATE ?= 20000
SOAK_STREAM_PACKETS ?= 1000000
soak: $(INSTALLED)
	$(BIN)/python benchmarks/soak.py --datagrams $(SOAK_DATAGRAMS) --senders $(SOAK_SENDERS) \
		--rate $(SOAK_RATE)
	$(BIN)/python benchmarks/soak_stream.py --packets $(SOAK_STREAM_PACKETS)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis build *.egg-info
