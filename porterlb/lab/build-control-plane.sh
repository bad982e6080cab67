#!/usr/bin/env bash
# Build Kubernetes binaries from the Go module proxy into a version-keyed cache.
#
# Usage: build-control-plane.sh BINARY...   (kube-apiserver etcd kubelet kube-proxy
#        kube-controller-manager kube-scheduler). Rebuilds only what is missing.
#
# Why a wrapper module: k8s.io/kubernetes maps its staging modules to ./staging with
# `replace` lines, which Go ignores in a dependency, so every staging module is replaced
# here by its published v0.<minor>.<patch> tag (kubernetes/kubernetes#79384).
# Prints the directory holding the binaries.
# Go's own output (hundreds of "go: downloading" lines) goes to a log file in the cache; the
# terminal gets one line as each step starts and one as it ends, with the time taken, and the
# log's last lines if a step fails.
set -euo pipefail

K8S_VERSION="${PORTERLB_K8S_VERSION:?set by porterlb.lab.binaries}"
CACHE="${PORTERLB_CACHE:-$HOME/.cache/porterlb}"
OUT="$CACHE/bin/kubernetes-$K8S_VERSION"
SRC="$CACHE/src/kubernetes-$K8S_VERSION"

missing=()
for binary in "$@"; do
  [[ -x "$OUT/$binary" ]] || missing+=("$binary")
done
if ((${#missing[@]} == 0)); then
  echo "$OUT"
  exit 0
fi

export GOFLAGS=-mod=mod
export CGO_ENABLED=0
mkdir -p "$SRC/cmd" "$OUT"
cd "$SRC"
LOG="$CACHE/build-kubernetes-$K8S_VERSION.log"
: >"$LOG"
STEPS=$((2 + ${#missing[@]}))
STEP=0

# step WHAT COMMAND...: run COMMAND with its output in $LOG; progress on stderr.
step() {
  local what=$1 started=$SECONDS
  shift
  STEP=$((STEP + 1))
  echo "control plane $K8S_VERSION [$STEP/$STEPS] $what ..." >&2
  if ! "$@" >>"$LOG" 2>&1; then
    echo "control plane $K8S_VERSION [$STEP/$STEPS] $what FAILED after $((SECONDS - started)) s;" \
      "the end of $LOG:" >&2
    tail -n 25 "$LOG" >&2
    exit 1
  fi
  echo "control plane $K8S_VERSION [$STEP/$STEPS] $what: done in $((SECONDS - started)) s" \
    "($((SECONDS / 60)) min $((SECONDS % 60)) s in all)" >&2
}

echo "building ${missing[*]} $K8S_VERSION from the Go module proxy (kube-apiserver and etcd" \
  "about 5-10 min the first time, the node binaries ~20 more; then cached in $OUT);" \
  "Go's output: $LOG" >&2
download() {
  go mod download -json "k8s.io/kubernetes@$K8S_VERSION" >"$SRC/download.json" ||
    { cat "$SRC/download.json"; return 1; }  # the error is in the JSON
}
step "downloading k8s.io/kubernetes@$K8S_VERSION" download
gomod=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["GoMod"])' "$SRC/download.json")
godirective=$(awk '$1 == "go" { print $2; exit }' "$gomod")
minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
patch=${K8S_VERSION##*.}

cat > go.mod <<GOMOD
module porterlb.invalid/controlplane

go $godirective
GOMOD
go mod edit -require "k8s.io/kubernetes@$K8S_VERSION"
# Every staging module, read from the exact version's go.mod rather than a hard-coded list.
for mod in $(awk '$2 == "v0.0.0" && $1 ~ /^k8s\.io\// { print $1 }' "$gomod" | sort -u); do
  go mod edit -replace "$mod=$mod@v0.$minor.$patch"
done

# The Kubernetes commands' main packages, as upstream's cmd/NAME/NAME.go has them (a main
# package cannot be imported, so the wrapper module carries its own copy of each).
component_main() {  # NAME CALL [IMPORT...]: main() runs app.CALL
  local name=$1 call=$2 imp
  shift 2
  mkdir -p "cmd/$name"
  {
    printf 'package main\n\nimport (\n'
    for imp in "$@" os k8s.io/component-base/cli "k8s.io/kubernetes/cmd/$name/app"; do
      printf '\t"%s"\n' "$imp"
    done
    for imp in time/tzdata k8s.io/component-base/logs/json/register \
      k8s.io/component-base/metrics/prometheus/clientgo k8s.io/component-base/metrics/prometheus/version; do
      printf '\t_ "%s"\n' "$imp"
    done
    printf ')\n\nfunc main() { os.Exit(cli.Run(app.%s)) }\n' "$call"
  } >"cmd/$name/main.go"
}
component_main kube-apiserver 'NewAPIServerCommand()'
component_main kubelet 'NewKubeletCommand(context.Background())' context
component_main kube-proxy 'NewProxyCommand()'
component_main kube-controller-manager 'NewControllerManagerCommand()'
component_main kube-scheduler 'NewSchedulerCommand()'
mkdir -p cmd/etcd
cat > cmd/etcd/main.go <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO

step "resolving and downloading every module (go mod tidy)" go mod tidy
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
for binary in "${missing[@]}"; do
  flags=$ldflags
  [[ $binary == etcd ]] && flags="-s -w"
  step "compiling $binary" go build -trimpath -ldflags "$flags" -o "$OUT/$binary.tmp" "./cmd/$binary"
  mv "$OUT/$binary.tmp" "$OUT/$binary"
done
echo "$OUT"
