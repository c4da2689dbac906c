# One entry point for people and CI. `make run` starts a demo, `make test` runs every test.
CARGO      ?= cargo
WASM       := wasm32-wasip2
GUEST_OUT  := target/$(WASM)/guest
ARTIFACTS  := tests/artifacts

.PHONY: build guest test-guests host node-host run test bench sim sim-soak fmt lint clean

build: guest test-guests host

## The connector guest component -> plugins/microsoft365.wasm
guest:
	$(CARGO) build -p microsoft365 --target $(WASM) --profile guest
	cp $(GUEST_OUT)/microsoft365.wasm plugins/microsoft365.wasm

## The host's test guest, in two versions (for hot-swap tests) -> tests/artifacts/
test-guests:
	mkdir -p $(ARTIFACTS)
	$(CARGO) build -p test-guest --target $(WASM) --profile guest
	cp $(GUEST_OUT)/test_guest.wasm $(ARTIFACTS)/test-guest-v1.wasm
	$(CARGO) build -p test-guest --target $(WASM) --profile guest --features v2
	cp $(GUEST_OUT)/test_guest.wasm $(ARTIFACTS)/test-guest-v2.wasm

host:
	$(CARGO) build -p apphost

## `make run`: the host on ./apphost.toml (a real tenant; kept out of git) if it exists,
## otherwise a demo against the fakes of Microsoft 365 and the PBX.
run: guest
	@if [ -f apphost.toml ]; then \
		$(CARGO) run -p apphost -- --config apphost.toml; \
	else \
		$(CARGO) run -p e2e --bin demo; \
	fi

## The Node.js host (examples/node-host): npm packages from the registry, guests transpiled by jco.
NODE_HOST := examples/node-host
node-host: guest test-guests
	npm ci --prefix $(NODE_HOST) --no-audit --no-fund
	npm run build --prefix $(NODE_HOST)

test: guest test-guests node-host
	npm ci --prefix tests/browser --no-audit --no-fund
	$(CARGO) test --workspace
	npm test --prefix $(NODE_HOST)

## One table of figures, measured side by side in one run (a few minutes on 2 cores).
bench: guest test-guests
	$(CARGO) run --release -p bench

## One simulation run of the guest in virtual time (tests/simhost); a failing seed replays
## identically: make sim SEED=19 DAYS=7 USERS=90 RICH=1
SEED  ?= 1
DAYS  ?= 7
USERS ?= 100
SEEDS ?= 200
sim: guest
	$(CARGO) run -p simhost --bin sim -- --seed $(SEED) --days $(DAYS) --users $(USERS) $(if $(RICH),--rich) $(if $(UPGRADE),--upgrade) $(if $(PBX_TO_TEAMS),--pbx-to-teams)

## Seeds SEED..SEED+SEEDS-1; prints the failing seeds, exits 1 if any.
sim-soak: guest
	$(CARGO) run --release -p simhost --bin sim -- --seed $(SEED) --seeds $(SEEDS) --days $(DAYS) --users $(USERS)

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

clean:
	$(CARGO) clean
	rm -rf $(ARTIFACTS) plugins/*.wasm
