# Convenience targets; the README's commands work without make.
.PHONY: build test fuzz demo check

build:
	go build -o bin/spareline ./cmd/spareline

test:
	scripts/test.sh

fuzz:
	scripts/fuzz.sh 60s

demo:
	go run ./cmd/spareline demo

check:
	go run ./cmd/spareline check --config examples/spareline.yaml
